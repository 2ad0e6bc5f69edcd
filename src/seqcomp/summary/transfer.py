"""The transfer table (transfer.md): what pre-training buys on each target dataset.

A pre-trained model ``m`` is run on a target through transfer variants (zero-shot, few-shot
fine-tuning on a fraction of the training windows, full fine-tuning, and from scratch on the same
fraction as the control), each an ordinary model of the grid whose metrics.json carries the job
spec's ``transfer`` record. The meaning comes from that record, never from the variant's name.
Beside them stand the two references a forecasting researcher asks for: ``m`` trained from scratch
on all the data at lookback = context, and the Repeat floor (the ``naive`` model at the same
lookback and horizon). The plain statements under each table (does zero-shot beat Repeat on every
horizon, does few-shot beat scratch on the same fraction, how far are we from the published
values) are computed from the same numbers, so the page cannot claim more than the table shows.

Pure functions of metrics.json contents, published rows (``published.load_published``) and the
pre-training jobs' run.json contents; the stage writes the text.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from seqcomp.publish import markdown

REPEAT_KIND = "naive"  # the model kind whose forecast repeats the last value: the floor
METRICS = ("mse", "mae")


@dataclass(frozen=True)
class Column:
    """One column of a transfer table: ``order`` sorts columns, ``label`` heads it."""

    order: tuple
    label: str
    regime: str  # zero_shot | few_shot | full | scratch | scratch_full | repeat
    fraction: float | None = None
    windows: str | None = None
    tune: str | None = None


@dataclass
class Cell:
    """The per-seed values of one (column, horizon): seed -> {metric: value}."""

    seeds: dict[int, dict[str, float]]


def percent(fraction: float | None) -> str:
    """``5%`` for 0.05 (``all`` for no fraction)."""
    return "all" if fraction is None else f"{fraction * 100:g}%"


def column_of(transfer: dict[str, Any]) -> Column:
    """The column of a variant, from its ``transfer`` record (regime, fraction, windows, tune)."""
    regime, fraction, windows, tune = (transfer.get(k) for k in ("regime", "fraction", "windows", "tune"))
    if regime == "zero_shot":
        return Column((0,), "zero-shot", regime)
    if regime == "few_shot":
        return Column((1, fraction or 1.0, windows or "", tune or ""),
                      f"{percent(fraction)} few-shot ({windows}, {tune})", regime, fraction, windows, tune)
    if regime == "full":
        return Column((2,), "full fine-tune", regime)
    if regime == "scratch":
        return Column((3, fraction or 1.0, windows or ""), f"scratch on {percent(fraction)} ({windows})",
                      regime, fraction, windows)
    raise ValueError(f"transfer record with unknown regime {regime!r}: {transfer}")


SCRATCH_FULL = Column((4,), "scratch, full data", "scratch_full")
REPEAT = Column((5,), "Repeat", "repeat")


@dataclass
class Group:
    """The variants of one pre-trained model (at one context length) on one target dataset."""

    dataset: str
    pretrained: str
    context: int
    cells: dict[Column, dict[int, Cell]]  # column -> horizon -> values per seed
    corpora: set[tuple[str, ...]]
    overlap: bool
    kinds: set[str] = field(default_factory=set)  # the architecture's registry kind (published rows may name it)

    @property
    def horizons(self) -> list[int]:
        """The horizons of the pre-trained model's variants (the references only fill these)."""
        return sorted({h for col, by_h in self.cells.items() if col not in (SCRATCH_FULL, REPEAT) for h in by_h})

    @property
    def columns(self) -> list[Column]:
        return sorted(self.cells, key=lambda c: c.order)

    def column(self, regime: str, fraction: float | None = None, windows: str | None = None) -> list[Column]:
        return [c for c in self.columns if c.regime == regime
                and (fraction is None or c.fraction == fraction) and (windows is None or c.windows == windows)]


def _scored(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fp32 forecasting evaluations (the transfer table compares models, not passes)."""
    return [r for r in rows if r.get("pass_kind") == "fp32" and r.get("mse") is not None]


def _add(cells: dict[Column, dict[int, Cell]], column: Column, row: dict[str, Any]) -> None:
    by_h = cells.setdefault(column, {})
    by_h.setdefault(row["horizon"], Cell({})).seeds[row["seed"]] = {m: row.get(m) for m in METRICS}


def transfer_groups(rows: list[dict[str, Any]]) -> list[Group]:
    """One group per (target dataset, pre-trained model, context) with a transfer variant among
    ``rows`` (metrics.json contents), with its references added: the pre-trained model's own
    architecture trained on the dataset at lookback = context, and Repeat at that lookback."""
    scored = _scored(rows)
    groups: dict[tuple[str, str, int], Group] = {}
    for r in scored:
        t = r.get("transfer")
        if not t:
            continue
        key = (r["dataset"], t["pretrained"], int(t["context"]))
        g = groups.setdefault(key, Group(*key, {}, set(), False))
        _add(g.cells, column_of(t), r)
        g.corpora.add(tuple(t.get("corpus") or ()))
        g.overlap = g.overlap or bool(t.get("overlap"))
        g.kinds.add(r.get("kind"))
    for (dataset, pretrained, context), g in groups.items():
        horizons = set(g.horizons)
        for r in scored:
            if r.get("transfer") or r["dataset"] != dataset or r["lookback"] != context or r["horizon"] not in horizons:
                continue
            if r["model"] == pretrained:
                _add(g.cells, SCRATCH_FULL, r)
            elif r.get("kind") == REPEAT_KIND:
                _add(g.cells, REPEAT, r)
    return [groups[k] for k in sorted(groups)]


@dataclass(frozen=True)
class Stat:
    """Mean and sample std over seeds (std None for one seed), the number of seeds, and the
    horizons behind an average (None for a single horizon)."""

    mean: float
    std: float | None
    n: int
    horizons: tuple[int, ...] | None = None

    def text(self, all_horizons: tuple[int, ...] | None = None) -> str:
        spread = f" ± {self.std:.4f}" if self.std is not None else ""
        over = (f"; H {'/'.join(map(str, self.horizons))}" if self.horizons is not None
                and self.horizons != all_horizons else "")
        return f"{self.mean:.4f}{spread} (n={self.n}{over})"


def _stat(values: list[float], horizons: tuple[int, ...] | None = None) -> Stat | None:
    if not values:
        return None
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values), horizons)


def horizon_stat(group: Group, column: Column, horizon: int, metric: str) -> Stat | None:
    """Mean ± std over seeds of ``metric`` in one cell."""
    cell = group.cells.get(column, {}).get(horizon)
    values = [v[metric] for v in cell.seeds.values() if v.get(metric) is not None] if cell else []
    return _stat(values)


def average_stat(group: Group, column: Column, metric: str, horizons: list[int] | None = None) -> Stat | None:
    """Per seed the mean over ``horizons`` (default: every horizon the column has), then mean ±
    std over the seeds that have all of them."""
    by_h = group.cells.get(column, {})
    horizons = sorted(by_h) if horizons is None else horizons
    if not horizons or any(h not in by_h for h in horizons):
        return None
    seeds = set.intersection(*(set(s for s, v in by_h[h].seeds.items() if v.get(metric) is not None) for h in horizons))
    per_seed = [statistics.fmean(by_h[h].seeds[s][metric] for h in horizons) for s in sorted(seeds)]
    return _stat(per_seed, tuple(horizons))


def _table(group: Group, metric: str) -> str:
    columns = group.columns
    everything = tuple(group.horizons)
    rows = []
    for h in group.horizons:
        cells = [horizon_stat(group, c, h, metric) for c in columns]
        rows.append([f"{group.pretrained} (L{group.context})", str(h), *[s.text() if s else "" for s in cells]])
    averages = [average_stat(group, c, metric) for c in columns]
    rows.append([f"{group.pretrained} (L{group.context})", "avg", *[s.text(everything) if s else "" for s in averages]])
    return markdown.table(["pre-trained model", "H", *[c.label for c in columns]], rows)


def _mean_over(group: Group, column: Column, horizons: list[int]) -> float | None:
    """The mean over ``horizons`` of the per-horizon MSE means; None where one is missing."""
    stats = [horizon_stat(group, column, h, "mse") for h in horizons]
    return None if any(s is None for s in stats) else statistics.fmean(s.mean for s in stats)


def _delta(ours: float, other: float) -> str:
    return f"{(ours / other - 1) * 100:+.1f}%"


def _hs(horizons: list[int]) -> str:
    return "/".join(map(str, horizons))


def repeat_statement(group: Group) -> str:
    """Does zero-shot beat Repeat (lower test MSE) at every horizon? Which horizons fail."""
    zero = group.column("zero_shot")
    if not zero:
        return "- zero-shot against Repeat: no zero-shot variant was run."
    if REPEAT not in group.cells:
        return f"- zero-shot against Repeat: not checked (no `{REPEAT_KIND}` model was run at L{group.context})."
    fails, missing = [], []
    for h in group.horizons:
        z, rep = horizon_stat(group, zero[0], h, "mse"), horizon_stat(group, REPEAT, h, "mse")
        if z is None or rep is None:
            missing.append(h)
        elif not z.mean < rep.mean:
            fails.append(f"H {h}: {z.mean:.4f} vs {rep.mean:.4f}")
    answer = "no (fails at " + "; ".join(fails) + ")" if fails else "yes"
    gaps = f"; not compared at H {_hs(missing)} (one of the two was not run)" if missing else ""
    return f"- zero-shot beats Repeat on every horizon (test MSE): **{answer}**{gaps}."


def _versus(group: Group, ours: Column, control: Column, what: str) -> str:
    common = [h for h in group.horizons if horizon_stat(group, ours, h, "mse") and horizon_stat(group, control, h, "mse")]
    if not common:
        return f"- {what}: no horizon where both were run."
    a, b = _mean_over(group, ours, common), _mean_over(group, control, common)
    verdict = "pre-training helps" if a < b else "pre-training does not help here"
    return f"- {what}: avg MSE {a:.4f} vs {b:.4f} over H {_hs(common)} (Δ {_delta(a, b)}): {verdict}."


def fine_tune_statements(group: Group) -> list[str]:
    """Each few-shot column against scratch on the same fraction and windows; full fine-tuning
    against scratch on all the data."""
    out = []
    for col in group.column("few_shot"):
        control = group.column("scratch", col.fraction, col.windows)
        what = f"{percent(col.fraction)} few-shot ({col.windows}, {col.tune}) vs scratch on the same {percent(col.fraction)}"
        out.append(_versus(group, col, control[0], what) if control else
                   f"- {what} ({col.windows}): no scratch control on that fraction was run.")
    for col in group.column("full"):
        if SCRATCH_FULL in group.cells:
            out.append(_versus(group, col, SCRATCH_FULL, f"full fine-tune vs {group.pretrained} from scratch on the full data"))
    return out


def published_statements(group: Group, published: list[dict[str, Any]]) -> list[str]:
    """Our variants against the published transfer values of the same model on the same dataset
    (test MSE): per horizon and over the published horizons. A published row's ``model`` names
    our pre-trained model or its kind (``moe_transformer`` matches a model entry named ``moe``)."""
    mine = [r for r in published if r.get("regime") and r["model"] in (group.pretrained, *group.kinds)
            and r["dataset"] == group.dataset and r["metric"] == "mse"]
    entries: dict[tuple, dict[str, Any]] = defaultdict(dict)
    for r in mine:
        entries[(r["source"], r["method"], r["regime"], r["fraction"])][r["horizon"]] = r
    out = []
    order = {"zero_shot": 0, "few_shot": 1, "full": 2}
    for (source, method, regime, fraction), by_h in sorted(entries.items(),
                                                           key=lambda kv: (order[kv[0][2]], *map(str, kv[0]))):
        first = next(iter(by_h.values()))
        name = f"{method} {regime.replace('_', '-')}" + (f" {percent(fraction)}" if fraction else "")
        ours = group.column(regime, fraction) if regime != "full" else group.column("full")
        where = f"`{source}`, published at L {first['lookback']}; ours at L{group.context}"
        if not ours:
            out.append(f"- published {name}: {where}; we ran no {regime.replace('_', '-')} variant"
                       + (f" on {percent(fraction)}" if fraction else "") + ".")
            continue
        horizons = sorted(int(h) for h in by_h if h != "avg")
        for col in ours:
            out.append(f"- {col.label} vs published {name} ({where}): " + _gap(group, col, by_h, horizons) + ".")
    return out


def _gap(group: Group, col: Column, by_h: dict[str, dict[str, Any]], horizons: list[int]) -> str:
    parts = []
    for h in horizons:
        ours = horizon_stat(group, col, h, "mse")
        pub = by_h[str(h)]["value"]
        parts.append(f"H {h} {ours.mean:.4f} vs {pub} ({_delta(ours.mean, pub)})" if ours else f"H {h} not run vs {pub}")
    common = [h for h in horizons if horizon_stat(group, col, h, "mse")]
    if common:  # over the published horizons we ran (all of them, or said which)
        ours_avg = _mean_over(group, col, common)
        pub_avg = statistics.fmean(by_h[str(h)]["value"] for h in common)
        lacking = f" (ours lacks H {_hs([h for h in horizons if h not in common])})" if common != horizons else ""
        parts.insert(0, f"avg MSE over H {_hs(common)} {ours_avg:.4f} vs {pub_avg:.4f} ({_delta(ours_avg, pub_avg)})"
                     + lacking)
    elif not horizons and "avg" in by_h:
        ours_avg = _mean_over(group, col, group.horizons)
        pub = by_h["avg"]["value"]
        parts.append(f"avg MSE {ours_avg:.4f} over our H {_hs(group.horizons)} vs {pub} over the paper's horizons "
                     f"({_delta(ours_avg, pub)})" if ours_avg is not None else "ours lacks a horizon for the average")
    return "; ".join(parts)


def pretrain_record(path: str, run: dict[str, Any]) -> dict[str, Any]:
    """A pre-training job's run.json with its context length (from the record, else the job's
    results/<name>/pretrain/<model>/L<context>/ folder)."""
    context = run.get("context")
    if context is None:
        match = re.search(r"/L(\d+)/[^/]+$", str(path))
        context = int(match.group(1)) if match else None
    return {**run, "context": context}


def pretrain_table(runs: list[dict[str, Any]]) -> str:
    """One row per pre-training job: what it was trained on and what it cost."""
    rows = [[r.get("model"), r.get("context"), ", ".join(r.get("corpus") or []), r.get("corpus_points"),
             r.get("n_params"), r.get("n_train_windows"), r.get("n_val_windows"), r.get("epochs"),
             r.get("fit_wall_s"), r.get("train_samples_per_s"), r.get("best_val_mse")]
            for r in sorted(runs, key=lambda r: (str(r.get("model")), r.get("context") or 0))]
    return markdown.table(["model", "context", "corpus", "corpus points", "params", "train windows", "val windows",
                           "epochs", "fit wall s", "train samples/s", "best val MSE"], rows)


def transfer_markdown(rows: list[dict[str, Any]], published: list[dict[str, Any]],
                      pretrain_runs: list[dict[str, Any]], title: str) -> str:
    """transfer.md: per target dataset the MSE and MAE tables of every pre-trained model's
    variants and references, the statements computed from them, then the pre-training jobs.
    Empty text for a config without transfer variants or pre-training (no page section)."""
    groups = transfer_groups(rows)
    if not groups and not pretrain_runs:
        return ""
    out = [f"# {title}: pre-trained forecasters, zero-shot and fine-tuned on each dataset\n",
           "Test metrics of the fp32 model on the scaled test split, mean ± std over seeds (std only with more "
           "than one seed; n = seeds). Columns: the pre-trained model unchanged (zero-shot); fine-tuned on a "
           "fraction of the training windows (the first or last ones; head only or the whole model); fine-tuned "
           "on all of them; the same architecture trained from scratch on the same fraction (the control); "
           "trained from scratch on the full data at lookback = context; and Repeat (the last value repeated, "
           "the floor). `avg`: per seed the mean over the horizons, then over seeds (a column that lacks some "
           "of the table's horizons names the ones it averages).\n"]
    for dataset in sorted({g.dataset for g in groups}):
        mine = [g for g in groups if g.dataset == dataset]
        out.append(f"## {dataset}\n")
        for g in mine:
            if g.overlap:
                corpus = ", ".join(sorted({d for c in g.corpora for d in c}))
                out.append(f"**The pre-training corpus of {g.pretrained} (L{g.context}) overlaps {dataset}** "
                           f"(corpus: {corpus}; `pretrain.allow_overlap: true`): its numbers here are not transfer "
                           "to unseen data.\n")
        for metric in METRICS:
            out.append(f"### Test {metric.upper()}\n")
            out += [_table(g, metric) for g in mine]
        out.append("### What the numbers say\n")
        for g in mine:
            corpus = "; ".join(", ".join(c) for c in sorted(g.corpora)) or "not recorded"
            out.append(f"{g.pretrained} (L{g.context}), pre-trained on: {corpus}\n")
            out += [repeat_statement(g), *fine_tune_statements(g), *published_statements(g, published), ""]
    if pretrain_runs:
        out += ["## Pre-training jobs\n",
                "One per (model, context): the corpus it saw, its size in points and windows, and what it cost "
                "(`fit wall s`: the fit alone; `train samples/s`: training windows per second).\n",
                pretrain_table(pretrain_runs)]
    sources = {r["source"]: r for r in published if r.get("regime")
               and any(g.pretrained == r["model"] and g.dataset == r["dataset"] for g in groups)}
    if sources:
        out.append("## Published sources\n")
        out += [f"- `{s}`: {r['paper']}, {r['table']}; context {r['lookback']}, drop_last {r['drop_last']}"
                + (f". {r['note']}" if r["note"] else "") for s, r in sorted(sources.items())]
    return "\n".join(out).rstrip("\n") + "\n"
