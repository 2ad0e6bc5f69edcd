"""Size sweeps: a config whose passes sweep stored sizes (a method at 2, 3, 4, 5 bits; a codebook
at several sizes) is read as methods and their sizes, and sweep.md says for each model where
each method stands: its size-accuracy points, the Pareto front over every pass, each method at
the 10x point, and whether one pass configuration reaches the target (within +1% test MSE of
fp32 at >= 10x stored-size reduction on most models), with what bounds the models it misses.

A *method* is a pass kind with its settings less the ones that set its size (:data:`SIZE_KEYS`,
at any depth of a nested pass config): ``w3_gptq_dq_sim`` and ``w4_gptq_dq_sim`` are one method
at two sizes. It is derived from the settings the compress report records (``pass_params``),
never from pass names, so a config may name its passes as it likes.

Every choice here (the best pass within +1%, the configuration that reaches the target, the
points at 10x) is made on the *test* MSE, for reporting only; passes that choose (mixed
precision, an allocator) choose on validation inside the pass. Pure functions of the table of
means over seeds (``core.aggregate``) and of report contents; no files.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import polars as pl

from seqcomp.summary.core import pareto_front, to_markdown

# Settings that set a pass's size rather than its method: bit widths (uniform, average, per
# group), codebook and vector sizes, sparsity, pruning pattern, low-rank energy or rank,
# number format, an allocator's accuracy budget.
SIZE_KEYS = frozenset({"bits", "avg_bits", "uniform_bits", "group_bits", "codebook_size", "residual_codebook_size",
                       "dim", "sparsity", "pattern", "energy", "rank", "format", "budget"})
TARGET_RATIO = 10.0  # stored-size reduction (fp32 bytes / stored bytes)
TARGET_PCT = 1.0  # test MSE increase over fp32, in %
TARGET_MODELS = 9  # of the models with weights (12 on ETTh1)
PANEL = ["dataset", "lookback", "horizon"]
MODEL = [*PANEL, "model"]
SELECTION = ("Every choice in this section (the smallest pass within the error bound, the configuration that "
             "reaches the target, the points at 10x, the front) is made on the test MSE, for reporting only; "
             "passes that choose among formats (mixed precision, the allocator) choose on validation themselves.")


def _settings(params: Any) -> Any:
    """``params`` less its size keys, at any depth (a chain's steps, a nested ``base`` pass)."""
    if isinstance(params, dict):
        return {k: _settings(v) for k, v in sorted(params.items()) if k not in SIZE_KEYS}
    if isinstance(params, list):
        return [_settings(v) for v in params]
    return params


def method_label(kind: str, params: dict[str, Any]) -> str:
    """``kind`` with its non-size settings: ``gptq_weight_sim (keep_dtype=float16, scale_dtype=float8_e4m3)``.

    A nested setting (a chain's steps, a nested pass, an allocator's candidates) is shown by its
    kind, if it has one, and a short digest of its non-size content, so two different ones never
    share a label and the label stays short."""
    parts = []
    for key, value in _settings(params).items():
        if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)):
            kind_of = value.get("kind", "") if isinstance(value, dict) else ""
            value = f"{kind_of}#" + hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:6]
        elif isinstance(value, list):  # groups: [recurrent, ssm, linear]
            value = "/".join(map(str, value))
        parts.append(f"{key}={value}")
    return f"{kind} ({', '.join(parts)})" if parts else kind


def group_profile(report: dict[str, Any]) -> str | None:
    """What bounds a pass on a model, measured in its report: each parameter group's share of
    the stored bytes, with the output error of coding that group alone (the pass's sensitivity,
    where measured) and, where present, the pass's own ``bounds`` entry (an allocator's).
    None for a report without per-group sizes (written before they were recorded)."""
    by_group, total = report.get("size_by_group"), report.get("size", {}).get("bytes")
    if not by_group or not total:
        return None
    groups = report.get("group_summary") or {}
    cells = []
    for group, nbytes in sorted(by_group.items(), key=lambda kv: -kv[1]):
        err = (groups.get(group) or {}).get("output_rel_err")
        cells.append(f"{group} {100 * nbytes / total:.0f}%" + (f" (out err {100 * err:.2g}%)" if err is not None else ""))
    text = ", ".join(cells)
    if report.get("bounds") is not None:
        text += "; bounds: " + json.dumps(report["bounds"], sort_keys=True, separators=(",", ":"))
    return text


def report_row(report: dict[str, Any]) -> dict[str, Any]:
    """The summary's columns of one compress report: method, the pass's wall time, its group profile."""
    params = report.get("pass_params")
    return {"pass": report["pass_name"],
            "method": None if params is None else method_label(report.get("pass", ""), params),
            "pass_wall_s": report.get("pass_wall_s"), "group_profile": group_profile(report)}


def points(table: pl.DataFrame) -> pl.DataFrame:
    """The compression rows with a stored-size ratio and a test MSE (models with weights), each
    with its method (the pass name where its report did not record settings)."""
    if table.is_empty() or "compression_ratio" not in table.columns:
        return pl.DataFrame()
    method = pl.coalesce("method", "pass") if "method" in table.columns else pl.col("pass")
    return (table.filter((pl.col("pass_kind") != "fp32") & pl.col("compression_ratio").is_not_null()
                         & pl.col("mse").is_not_null())
            .with_columns(method.alias("method")))


def sweeping_methods(pts: pl.DataFrame) -> list[str]:
    """The methods run at two or more sizes on some model: a sweep to draw as a curve."""
    if pts.is_empty():
        return []
    sizes = pts.group_by([*MODEL, "method"]).agg(pl.col("size_bytes").n_unique().alias("n"))
    return sorted(set(sizes.filter(pl.col("n") >= 2)["method"]))


def pareto_rows(pts: pl.DataFrame) -> pl.DataFrame:
    """Per model, the passes on the Pareto front of (stored size, test MSE) over every pass, by size."""
    fronts = []
    for _, sub in pts.sort("size_bytes").group_by(MODEL, maintain_order=True):
        fronts.append(sub[pareto_front(sub["size_bytes"].to_list(), sub["mse"].to_list())])
    if not fronts:
        return pl.DataFrame()
    return pl.concat(fronts).sort([*MODEL, "compression_ratio"], descending=[False] * len(MODEL) + [True])


def at_ratio(pts: pl.DataFrame, ratio: float = TARGET_RATIO) -> pl.DataFrame:
    """Per (model, method): its pass with the lowest test MSE among those of stored-size ratio
    >= ``ratio`` (no interpolation: a measured pass); no row where none of its passes gets there."""
    return (pts.filter(pl.col("compression_ratio") >= ratio).sort("mse")
            .group_by([*MODEL, "method"], maintain_order=True).first()
            .sort([*MODEL, "method"]))


def within(pts: pl.DataFrame, pct: float = TARGET_PCT) -> pl.DataFrame:
    """Per model, the smallest stored pass within ``pct`` % test MSE of fp32 (None where none is)."""
    return (pts.filter(pl.col("mse_change_pct") <= pct).sort("size_bytes")
            .group_by(MODEL, maintain_order=True).first().sort(MODEL))


def pass_counts(pts: pl.DataFrame, ratio: float = TARGET_RATIO, pct: float = TARGET_PCT) -> pl.DataFrame:
    """Per pass configuration (pass name), the number of models where it is within ``pct`` % at
    >= ``ratio`` (``models_reached``), most first; ties go to the one within ``pct`` % (at any
    ratio) on more models, then to the larger median ratio, so that where none reaches the
    target the first is still the configuration closest to it."""
    ok = pl.col("mse_change_pct") <= pct
    return (pts.group_by([*PANEL, "pass", "method"])
            .agg((ok & (pl.col("compression_ratio") >= ratio)).sum().alias("models_reached"),
                 ok.sum().alias("models_within"), pl.len().alias("models"),
                 pl.col("compression_ratio").median().alias("median_ratio"))
            .sort([*PANEL, "models_reached", "models_within", "median_ratio", "pass"],
                  descending=[False] * len(PANEL) + [True, True, True, False]))


def target_table(pts: pl.DataFrame, ratio: float = TARGET_RATIO, pct: float = TARGET_PCT) -> pl.DataFrame:
    """Per model: the best pass within ``pct`` % (its ratio), and the pass configuration that
    reaches the target on the most models (:func:`pass_counts`) on that model: its ratio, error,
    whether it reaches the target there, and, where it does not, its group profile (what bounds it)."""
    if pts.is_empty():
        return pl.DataFrame()
    best = pass_counts(pts, ratio, pct).group_by(PANEL, maintain_order=True).first().select(
        *PANEL, pl.col("pass").alias("config"))
    ok = (pl.col("compression_ratio") >= ratio) & (pl.col("mse_change_pct") <= pct)
    config = (pts.join(best, on=PANEL).filter(pl.col("pass") == pl.col("config"))
              .select(*MODEL, "config", pl.col("compression_ratio").alias("config_ratio"),
                      pl.col("mse_change_pct").alias("config_mse_change_pct"), ok.alias("reached"),
                      pl.when(ok).then(None).otherwise(pl.col("group_profile") if "group_profile" in pts.columns
                                                       else pl.lit(None, pl.Utf8)).alias("bounded_by")))
    best_within = within(pts, pct).select(*MODEL, pl.col("pass").alias("best_within"),
                                          pl.col("compression_ratio").alias("best_within_ratio"),
                                          pl.col("mse_change_pct").alias("best_within_mse_change_pct"))
    models = pts.select(MODEL).unique()
    return (models.join(best_within, on=MODEL, how="left").join(config, on=MODEL, how="left")
            .with_columns(pl.col("reached").fill_null(False)).sort(MODEL))


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:+.2f}%"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}x"


def sweep_markdown(table: pl.DataFrame, title: str, ratio: float = TARGET_RATIO, pct: float = TARGET_PCT,
                   need: int = TARGET_MODELS) -> str:
    """sweep.md from the table of means over seeds (with ``method`` and ``group_profile`` where the
    reports recorded them); empty when no method is run at two sizes (the page then leaves it out)."""
    pts = points(table)
    methods = sweeping_methods(pts)
    if not methods:
        return ""
    out = [f"# {title}: size sweeps (accuracy against stored size, per method)\n",
           f"A method is a pass kind with its settings less the size ones ({', '.join(sorted(SIZE_KEYS))}); "
           f"ratio = fp32 bytes / stored bytes (every stored byte); error = test MSE change against fp32. "
           f"{SELECTION} The figure *Size-accuracy curves per model* draws these points.\n",
           "## Methods\n",
           to_markdown(pts.group_by("method").agg(pl.col("pass").unique().sort().str.join(", ").alias("passes"),
                                                   pl.col("method").is_in(methods).first().alias("swept")).sort("method"))]
    targets = target_table(pts, ratio, pct)
    counts = pass_counts(pts, ratio, pct)
    for (dataset, lookback, horizon), sub in targets.group_by(PANEL, maintain_order=True):
        n_models = sub.height
        top = counts.filter((pl.col("dataset") == dataset) & (pl.col("lookback") == lookback)
                            & (pl.col("horizon") == horizon))
        config, reached = top["pass"][0], top["models_reached"][0]
        verdict = "reached" if reached >= need else "not reached"
        best = "the best single pass configuration" if reached else "no pass reaches it on any model; the closest"
        out += [f"## Target: within +{pct:g}% test MSE of fp32 at >= {ratio:g}x on >= {need} models "
                f"({dataset} L{lookback} H{horizon})\n",
                f"**{verdict}**: {best}, `{config}`, is within +{pct:g}% at >= {ratio:g}x "
                f"on {reached} of {n_models} models with weights. Per model: the smallest stored pass within "
                f"+{pct:g}% over every pass (its ratio), and `{config}` there; where it misses, what bounds it, from "
                "its report: each parameter group's share of the stored bytes and the output error of coding that "
                "group alone on the calibration windows (and the pass's own `bounds` where it reports one).\n",
                to_markdown(sub.select(
                    "model", pl.col("best_within").alias(f"smallest within +{pct:g}%"),
                    pl.col("best_within_ratio").map_elements(_ratio, pl.Utf8).alias("its ratio"),
                    pl.col("config_ratio").map_elements(_ratio, pl.Utf8).alias(f"{config}: ratio"),
                    pl.col("config_mse_change_pct").map_elements(_pct, pl.Utf8).alias("error"),
                    pl.col("reached"), pl.col("bounded_by").alias("bounded by (share of stored bytes, out err)"))),
                f"Per pass configuration: the models where it is within +{pct:g}% at >= {ratio:g}x (`models_reached`), "
                f"within +{pct:g}% at any ratio (`models_within`), of the `models` it ran on; its median ratio.\n",
                to_markdown(top.select("pass", "method", "models_reached", "models_within", "models", "median_ratio"))]
    tenx = at_ratio(pts, ratio)
    out += [f"## Each method at {ratio:g}x\n",
            f"Per method and model: the test MSE change of its most accurate pass of ratio >= {ratio:g}x (a measured "
            f"pass, not interpolated; its ratio in brackets); blank where no pass of the method gets to {ratio:g}x. "
            f"`models within +{pct:g}%` counts the models where that pass is within +{pct:g}%.\n"]
    if tenx.is_empty():
        out.append(f"No pass of any method reaches {ratio:g}x.\n")
    for _, sub in tenx.group_by(PANEL, maintain_order=True):
        models = sorted(sub["model"].unique())
        rows = []
        for (method,), m in sub.group_by(["method"], maintain_order=True):
            cell = {r["model"]: f"{_pct(r['mse_change_pct'])} ({_ratio(r['compression_ratio'])})"
                    for r in m.iter_rows(named=True)}
            rows.append({"method": method, **{model: cell.get(model, "") for model in models},
                         f"models within +{pct:g}%": int((m["mse_change_pct"] <= pct).sum())})
        out.append(to_markdown(pl.DataFrame(rows).sort("method")))
    front = pareto_rows(pts)
    out += ["## Pareto front per model\n",
            "The passes no other pass beats in both stored size and test MSE, per model, largest ratio first "
            "(fp32 is the front's end at 1x).\n",
            to_markdown(front.select(*MODEL, "pass", "method", "compression_ratio", "mse_change_pct", "size_bytes"))]
    return "\n".join(out)
