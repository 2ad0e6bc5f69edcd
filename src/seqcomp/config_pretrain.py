"""The ``pretrain:`` section: which transfer jobs it asks for, and what must hold before any job.

A pre-trained model ``m`` becomes, on every target dataset and horizon, a set of generated
model entries that run through the ordinary train -> compress -> evaluate -> summary grid
(docs/pretrain.md): ``m_zs`` (zero-shot: the pre-trained weights, no fit), ``m_fs<pct>_<first|last>_<head|whole>``
(few-shot fine-tuning on a fraction of the train windows), ``m_full`` (fine-tuning on all of
them) and the control ``m_scratch<pct>_<first|last>`` (the same architecture from scratch on
the same windows). Each entry carries a ``transfer`` record (regime, fraction, windows, tune,
context, the pre-training horizon and corpus) that goes into every job spec and metrics file.

Refused here, naming the key, before any job: a corpus or pre-trained name that is not
configured, a target that overlaps the corpus (by name or by the file it reads) unless
``allow_overlap``, a corpus series shorter than a context plus the pre-training horizon, a
context the model cannot take (a patch length that does not divide it), a model whose weights
depend on the channel count (pre-training is channel-independent), a channel-mixing decoder
that cannot take a target's channel count, a few-shot fraction leaving fewer windows than one batch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from seqcomp.errors import ConfigError

REGIMES = ("zero_shot", "few_shot", "full", "scratch")


def percent(fraction: float) -> str:
    """0.05 -> '5', 0.1 -> '10', 0.025 -> '2p5': a fraction as a name part (letters, digits, _)."""
    text = f"{fraction * 100:.4f}".rstrip("0").rstrip(".")
    return text.replace(".", "p")


def variant_name(model: str, transfer: dict[str, Any]) -> str:
    regime = transfer["regime"]
    if regime == "zero_shot":
        return f"{model}_zs"
    if regime == "full":
        return f"{model}_full"
    if regime == "few_shot":
        return f"{model}_fs{percent(transfer['fraction'])}_{transfer['windows']}_{transfer['tune']}"
    return f"{model}_scratch{percent(transfer['fraction'])}_{transfer['windows']}"


def pretrain_horizon(cfg: dict[str, Any]) -> int:
    return cfg["pretrain"]["horizon"] or max(cfg["horizons"])


def targets(cfg: dict[str, Any]) -> list[str]:
    """The datasets every model is scored on: all of them without ``pretrain:``; with it, its
    ``targets`` or else every dataset not in the corpus."""
    pre = cfg.get("pretrain")
    if not pre:
        return list(cfg["datasets"])
    return list(pre["targets"]) if pre["targets"] is not None else [d for d in cfg["datasets"] if d not in pre["corpus"]]


def grid_models(cfg: dict[str, Any]) -> list[str]:
    """The models every target runs: all of them, but a pre-trained model only with ``from_scratch``."""
    pre = cfg.get("pretrain")
    if not pre or pre["from_scratch"]:
        return list(cfg["models"])
    return [m for m in cfg["models"] if m not in pre["models"]]


def _transfers(pre: dict[str, Any]) -> list[dict[str, Any]]:
    """The transfer records the section asks for (without model, context and corpus)."""
    t = pre["transfer"]
    out = [{"regime": "zero_shot", "fraction": None, "windows": None, "tune": None}] if t["zero_shot"] else []
    for fraction in t["fractions"]:
        for windows in t["windows"]:
            out += [{"regime": "few_shot", "fraction": fraction, "windows": windows, "tune": tune} for tune in t["tune"]]
            if t["scratch"]:
                out.append({"regime": "scratch", "fraction": fraction, "windows": windows, "tune": None})
    if t["full"]:
        out.append({"regime": "full", "fraction": None, "windows": None, "tune": None})
    return out


def expand_transfer(cfg: dict[str, Any], base_dir: Path) -> None:
    """Check the section's names and overlap, and add its transfer entries to ``cfg["models"]``.

    Runs after the schema check and before the plug-in checks, which then check every
    generated entry like a written one.
    """
    for name, entry in cfg["models"].items():
        if "transfer" in entry:
            raise ConfigError(f"models.{name}.transfer: transfer entries are generated from pretrain: "
                              "(docs/pretrain.md); remove it", ("models", name, "transfer"))
    pre = cfg.get("pretrain")
    if not pre:
        return
    for key, known in (("corpus", cfg["datasets"]), ("models", cfg["models"]), ("targets", cfg["datasets"])):
        for name in pre[key] or []:
            if name not in known:
                where = "datasets" if key != "models" else "models"
                raise ConfigError(f"pretrain.{key}: {name!r} is not under {where}: (have: {', '.join(known)})",
                                  ("pretrain", key))
    if not targets(cfg):
        raise ConfigError("pretrain.corpus: every dataset is in the corpus, none is left to score; add a target "
                          "dataset or name pretrain.targets", ("pretrain", "corpus"))
    overlaps = overlapping_targets(cfg, base_dir)
    if overlaps and not pre["allow_overlap"]:
        target, corpus, why = overlaps[0]
        raise ConfigError(f"pretrain: target dataset {target!r} {why} corpus dataset {corpus!r}: a pre-trained "
                          "model would be scored on what it was trained on; remove it from one of them, or set "
                          "pretrain.allow_overlap: true (every table then says so)", ("pretrain", "corpus"))
    horizon = pretrain_horizon(cfg)
    if max(cfg["horizons"]) > horizon:
        raise ConfigError(f"pretrain.horizon: {horizon} is shorter than the horizon {max(cfg['horizons'])}; a target "
                          "horizon is served by the first steps of the pre-trained forecast", ("pretrain", "horizon"))
    mixing = pre["transfer"]["channel_mixing"]
    for model in pre["models"]:
        base = cfg["models"][model]
        if mixing and not _has_field(base.get("kind", model), "decoder_channel_mixing"):
            raise ConfigError(f"pretrain.transfer.channel_mixing: model {model!r} ({base.get('kind', model)}) has no "
                              "channel-mixing decoder (decoder_channel_mixing)", ("pretrain", "transfer", "channel_mixing"))
        if "head" in pre["transfer"]["tune"] and pre["transfer"]["fractions"] \
                and not hasattr(_model_class(base.get("kind", model)), "transfer_head"):
            raise ConfigError(f"pretrain.transfer.tune: model {model!r} ({base.get('kind', model)}) declares no "
                              "transfer_head, so it cannot be tuned head-only; use tune: [whole]",
                              ("pretrain", "transfer", "tune"))
        for transfer in _transfers(pre):
            # the job's context (its lookback) and whether its target overlaps are added per job (seqcomp.jobs)
            record = {"pretrained": model, **transfer, "pretrain_horizon": horizon, "corpus": list(pre["corpus"]),
                      "overlaps": sorted({t for t, _, _ in overlaps})}
            name = variant_name(model, transfer)
            if name in cfg["models"]:
                raise ConfigError(f"models.{name}: the name of a generated transfer entry of pretrain.models "
                                  f"{model!r}; rename it", ("models", name))
            cfg["models"][name] = variant_entry(base, record, pre)


def variant_entry(base: dict[str, Any], transfer: dict[str, Any], pre: dict[str, Any]) -> dict[str, Any]:
    """The generated model entry: the pre-trained model's architecture at the contexts; fine-tuning
    runs with ``pretrain.transfer.train`` over the model's own settings, the scratch control with
    the model's own (the recipe it is trained with from scratch)."""
    entry = {k: v for k, v in base.items() if k not in ("lookbacks", "train")}
    entry["kind"] = base.get("kind", transfer["pretrained"])
    entry["lookbacks"] = list(pre["contexts"])
    tuned = transfer["regime"] in ("few_shot", "full")
    train = {**base.get("train", {}), **(pre["transfer"].get("train", {}) if tuned else {})}
    if train:
        entry["train"] = train
    if tuned and pre["transfer"]["channel_mixing"]:
        entry["decoder_channel_mixing"] = True
    entry["transfer"] = transfer
    return entry


def _model_class(kind: str) -> type:
    from seqcomp.models import MODELS

    return MODELS.get(kind, "models")


def _has_field(kind: str, field: str) -> bool:
    from dataclasses import fields

    return field in {f.name for f in fields(_model_class(kind).Config)}


def _identity(entry: dict[str, Any], base_dir: Path) -> tuple:
    """What a dataset reads: a file (resolved path) or a generator and its settings."""
    if "path" in entry:
        return ("file", os.path.realpath(base_dir / entry["path"]))
    return ("generated", entry["kind"], tuple(sorted((k, repr(v)) for k, v in entry.items() if k != "split")))


def overlapping_targets(cfg: dict[str, Any], base_dir: Path) -> list[tuple[str, str, str]]:
    """(target, corpus dataset, how) for every target that is a corpus dataset or reads the same data."""
    pre, out = cfg["pretrain"], []
    for target in targets(cfg):
        for corpus in pre["corpus"]:
            if target == corpus:
                out.append((target, corpus, "is also"))
            elif _identity(cfg["datasets"][target], base_dir) == _identity(cfg["datasets"][corpus], base_dir):
                out.append((target, corpus, "reads the same data as"))
    return out


def check_pretrain(cfg: dict[str, Any], base_dir: Path) -> None:
    """The data-dependent checks, after the series checks: corpus lengths, model shapes, few-shot windows."""
    pre = cfg.get("pretrain")
    if not pre:
        return
    horizon = pretrain_horizon(cfg)
    for context in pre["contexts"]:
        for name in pre["corpus"]:
            _check_corpus(cfg, name, context, horizon, base_dir)
    channels = {t: target_channels(cfg, t, base_dir) for t in targets(cfg)}
    for model in pre["models"]:
        for context in pre["contexts"]:
            _check_shapes(cfg, model, context, horizon, channels)
    _check_fractions(cfg, base_dir)


def _check_corpus(cfg: dict[str, Any], name: str, context: int, horizon: int, base_dir: Path) -> None:
    from seqcomp.data import dataset_length, sample_shape
    from seqcomp.data.split import count_windows, split_borders

    entry, where = cfg["datasets"][name], f"datasets.{name}"
    if sample_shape(entry, base_dir, where) is not None:
        raise ConfigError(f"pretrain.corpus: {name!r} is a set of classification samples, not a series",
                          ("pretrain", "corpus"))
    rows = dataset_length(entry, base_dir, where)
    borders = split_borders(entry.get("split"), rows, f"{where}.split")
    counts = count_windows(borders, context, horizon)
    empty = [split for split in ("train", "val") if counts[split] < 1]
    if empty:
        raise ConfigError(
            f"pretrain.corpus: the series of dataset {name!r} are shorter than context {context} + horizon {horizon} "
            f"in its {'/'.join(empty)} split (splits of {borders[0]}, {borders[1] - borders[0]} rows; borders "
            f"{list(borders)}): lengthen them (n_steps, length) or shorten pretrain.contexts / pretrain.horizon",
            ("pretrain", "corpus"))


def target_channels(cfg: dict[str, Any], name: str, base_dir: Path) -> int:
    from seqcomp.data import build_source
    from seqcomp.data.core import fit_series

    entry = cfg["datasets"][name]
    return len(fit_series(build_source(entry, base_dir, f"datasets.{name}"), entry, f"datasets.{name}").channels)


def _check_shapes(cfg: dict[str, Any], model: str, context: int, horizon: int, channels: dict[str, int]) -> None:
    """Build the pre-training model (context, horizon, 1 channel) and every transfer entry for
    each target's shape, and check that the pre-trained weights load into it."""
    from seqcomp.model_entries import model_params
    from seqcomp.models import SeriesShape, build_model
    from seqcomp.train.transfer import adapt_plan

    def built(name: str, shape: SeriesShape, key: tuple) -> Any:
        try:
            return build_model(cfg["models"][name]["kind"], model_params(cfg, name), shape, where=f"models.{name}")
        except ConfigError as exc:
            raise ConfigError(f"pretrain.contexts: context {context}: {exc}", key) from None

    pretrained = built(model, SeriesShape(context, horizon, 1), ("pretrain", "contexts"))
    shapes = {k: tuple(v.shape) for k, v in pretrained.state_dict().items()}
    variants = [n for n, e in cfg["models"].items() if e.get("transfer", {}).get("pretrained") == model
                and e["transfer"]["regime"] != "scratch"]
    seen = set()
    for name in variants:
        for target, count in channels.items():
            for h in cfg["horizons"]:
                key = (repr(model_params(cfg, name)), count, h)
                if key in seen:
                    continue
                seen.add(key)
                net = built(name, SeriesShape(context, h, count), ("pretrain", "targets"))
                try:
                    adapt_plan(shapes, {k: tuple(v.shape) for k, v in net.state_dict().items()}, horizon, h, count)
                except ValueError as exc:
                    raise ConfigError(f"pretrain.models: {model!r} pre-trained on 1 channel cannot be transferred to "
                                      f"dataset {target!r} ({count} channels) at horizon {h} as {name}: {exc}",
                                      ("pretrain", "models")) from None


def _check_fractions(cfg: dict[str, Any], base_dir: Path) -> None:
    """Every fraction must leave at least one batch of windows on every target at every horizon."""
    from seqcomp.model_entries import train_settings
    from seqcomp.data import window_counts
    from seqcomp.train.transfer import few_shot_count

    for name, entry in cfg["models"].items():
        transfer = entry.get("transfer")
        if not transfer or transfer["fraction"] is None:
            continue
        batch = train_settings(cfg, name)["batch_size"]
        for target in targets(cfg):
            for context in entry["lookbacks"]:
                for h in cfg["horizons"]:
                    n = window_counts(cfg["datasets"][target], base_dir, context, h, f"datasets.{target}")["train"]
                    kept = few_shot_count(n, transfer["fraction"])
                    if kept < batch:
                        raise ConfigError(
                            f"pretrain.transfer.fractions: {transfer['fraction']} of the {n} train windows of dataset "
                            f"{target!r} at context {context}, horizon {h} is {kept} windows, fewer than one batch "
                            f"({batch}, the batch_size of {name}); raise the fraction or lower the batch size",
                            ("pretrain", "transfer", "fractions"))
