"""Side-by-side tables of the summary: ours against published results, and every compression
pass against its fp32 model. Pure functions of the per-seed results frame (core.with_baseline,
joined with the validation scores).

Ours is always the mean ± std over seeds of the test metric, at two protocols (see headline.py
for why): the base lookback (the smallest run, 96 in the ETTh1 protocol) and the lookback
chosen per horizon on validation MSE. The difference to a published value is taken against
ours under the published protocol: at the same lookback where we ran it, at the
validation-chosen one where the paper searched its lookback; blank where we did not run it.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from seqcomp.summary.headline import choose_lookbacks

GROUP = ["dataset", "model"]
VAL = "val"  # the protocol label of the validation-chosen lookback


def ours_by_protocol(fp32: pl.DataFrame, metric: str) -> pl.DataFrame:
    """Test ``metric`` per (dataset, model, protocol, horizon): mean, std and number of seeds.

    ``protocol`` is ``L<l>`` for each lookback run and ``val`` for the validation-chosen one;
    ``horizon`` is a string, each horizon run and ``avg`` (per seed the mean over every horizon
    of the frame, then over seeds; a seed that lacks a horizon has no ``avg``). ``lookbacks``
    names the lookback(s) behind each value (per horizon, joined with "/", for ``avg``).
    """
    rows = fp32.select(*GROUP, "lookback", "horizon", "seed", pl.col(metric).alias("value"))
    runs = [rows.with_columns(protocol=pl.format("L{}", "lookback"))]
    if "val_mse" in fp32.columns and fp32["val_mse"].null_count() < fp32.height:
        chosen = choose_lookbacks(fp32)
        runs.append(rows.join(chosen, on=[*GROUP, "horizon", "lookback"], how="inner").with_columns(protocol=pl.lit(VAL)))
    both = pl.concat(runs)
    n_horizons = fp32["horizon"].n_unique()
    avg = (
        both.group_by([*GROUP, "protocol", "seed"])
        .agg(pl.len().alias("n"), pl.col("value").mean(),
             pl.col("lookback").sort_by("horizon").cast(pl.Utf8).str.join("/").alias("lookbacks"))
        .filter(pl.col("n") == n_horizons)
        .drop("n")
        .with_columns(horizon=pl.lit("avg"))
    )
    per_horizon = both.with_columns(pl.col("horizon").cast(pl.Utf8), pl.col("lookback").cast(pl.Utf8).alias("lookbacks"))
    return (
        pl.concat([per_horizon.drop("lookback"), avg], how="diagonal_relaxed")
        .group_by([*GROUP, "protocol", "horizon"])
        .agg(pl.col("value").mean().alias("mean"), pl.col("value").std().alias("std"), pl.len().alias("seeds"),
             pl.col("lookbacks").first())
    )


def compare_published(fp32: pl.DataFrame, published: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per published value of a model we ran: the value, ours at the base and the
    validation-chosen lookback, ours under the published protocol and the difference (%)."""
    compared = [row for row in published if row["model"] is not None]
    if fp32.is_empty() or not compared:
        return pl.DataFrame()
    pub = pl.DataFrame(compared, infer_schema_length=None).join(fp32.select(GROUP).unique(), on=GROUP, how="inner")
    if pub.is_empty():
        return pl.DataFrame()
    base = f"L{int(fp32['lookback'].min())}"
    pub = pub.with_columns(
        same=pl.when(pl.col("lookback") == "searched").then(pl.lit(VAL)).otherwise(pl.format("L{}", "lookback"))
    )
    ours = pl.concat([ours_by_protocol(fp32, m).with_columns(metric=pl.lit(m)) for m in ("mse", "mae")])
    keys = [*GROUP, "metric", "horizon"]
    for label, on in (("base", pl.lit(base)), ("val", pl.lit(VAL)), ("same", pl.col("same"))):
        pub = pub.with_columns(protocol=on).join(
            ours.rename({"mean": f"ours_{label}", "std": f"ours_{label}_std", "seeds": f"ours_{label}_seeds",
                         "lookbacks": f"ours_{label}_lookbacks"}),
            on=[*keys, "protocol"], how="left",
        ).drop("protocol")
    return (
        pub.with_columns(diff_pct=(pl.col("ours_same") / pl.col("value") - 1) * 100, base=pl.lit(base))
        .with_columns(pl.col("horizon").str.replace("avg", "9999").cast(pl.Int64).alias("_order"))
        .sort(["dataset", "metric", "model", "_order", "source"], descending=[False, True, False, False, False])
        .drop("_order")
    )


def compression_table(table: pl.DataFrame) -> pl.DataFrame:
    """Every compression pass against its fp32 model (from core.aggregate: means over seeds):
    error change, stored size and ratio, real or simulated, latency and speed-up where real."""
    if "pass_kind" not in table.columns or table.is_empty():
        return pl.DataFrame()
    timing = [c for c in table.columns if c.startswith(("latency_", "speedup_"))]
    return (
        table.filter((pl.col("pass_kind") != "fp32") & pl.col("mse").is_not_null())
        .with_columns(pl.when(pl.col("simulated")).then(pl.lit("simulated")).otherwise(pl.lit("real")).alias("kernels"),
                      *[pl.when(pl.col("simulated")).then(None).otherwise(pl.col(c)).alias(c) for c in timing])
        .select("dataset", "model", "lookback", "horizon", "pass", "seeds", "mse", "mse_change_pct", "size_bytes",
                "compression_ratio", "bits_per_weight", "kernels",
                *[c for c in ("pass_wall_s",) if c in table.columns], *timing)
    )


def _mean_std(mean: float | None, std: float | None, seeds: int | None, lookbacks: str | None = None) -> str:
    if mean is None:
        return ""
    spread = f" ± {std:.4f}" if std is not None else f" ({seeds} seed)"
    return f"{mean:.4f}{spread}" + (f" (L {lookbacks})" if lookbacks else "")


def published_markdown(comparison: pl.DataFrame, published: list[dict[str, Any]], title: str) -> str:
    """published.md: per metric the comparison table, then the sources and the reference values."""
    from seqcomp.summary.core import to_markdown

    out = [f"# {title}: ours against published results\n",
           "Ours: test metric on the scaled test split, every window, mean ± std over seeds (a single seed "
           "shows no std). `diff %` compares ours under the published protocol (the same lookback, or the "
           "validation-chosen one where the paper searched it) with the published value; blank where we "
           "did not run that lookback. `avg` is the mean over the horizons, per seed first.\n"]
    if comparison.is_empty():
        out.append("No published value for a model of this config.\n")
    for metric in ("mse", "mae") if not comparison.is_empty() else ():
        rows = comparison.filter(pl.col("metric") == metric)
        if rows.is_empty():
            continue
        base = rows["base"][0]
        shown = pl.DataFrame([{
            "model": r["model"], "H": r["horizon"],
            f"ours {base}": _mean_std(r["ours_base"], r["ours_base_std"], r["ours_base_seeds"]),
            "ours, val-chosen L": _mean_std(r["ours_val"], r["ours_val_std"], r["ours_val_seeds"], r["ours_val_lookbacks"]),
            "published": r["value"], "method": r["method"], "source": r["source"], "L": r["lookback"],
            "drop_last": r["drop_last"],
            "ours at the published L": _mean_std(r["ours_same"], r["ours_same_std"], r["ours_same_seeds"]),
            "diff %": None if r["diff_pct"] is None else round(r["diff_pct"], 1),
        } for r in rows.iter_rows(named=True)])
        out += [f"## Test {metric.upper()}\n", to_markdown(shown)]
    sources = {r["source"]: r for r in published}
    out += ["## Sources\n"] if sources else []
    out += [f"- `{s}`: {r['paper']}, {r['table']}; lookback {r['lookback']}, drop_last {r['drop_last']}"
            + (f". {r['note']}" if r["note"] else "") for s, r in sorted(sources.items())]
    references = [r for r in published if r["model"] is None]
    if references:
        out += ["\n## Published values without a model of ours (for reference)\n",
                to_markdown(pl.DataFrame([{k: r[k] for k in ("dataset", "method", "metric", "horizon", "value", "source")}
                                          for r in references]))]
    return "\n".join(out) + "\n"


def compression_markdown(passes: pl.DataFrame, title: str) -> str:
    """compression.md: every pass against fp32 (means over seeds)."""
    from seqcomp.summary.core import to_markdown

    head = (f"# {title}: compression passes against fp32\n\n"
            "Means over seeds. `mse_change_pct`: test MSE change against the same model in fp32. "
            "`size_bytes`: every stored byte (codes, scales, layers left fp32); `compression_ratio`: fp32 "
            "bytes / stored bytes. `kernels`: `simulated` passes run fp32 kernels (fake-quant), so no "
            "latency or speed-up is claimed for them; `real` ones are timed on the CPU. `pass_wall_s`: seconds the "
            "pass itself took on the model in its compress job (torch's default threads; loading and writing not counted), "
            "blank where its report predates the record.\n\n")
    return head + (to_markdown(passes) if passes.height else "No compression pass in this config.\n")
