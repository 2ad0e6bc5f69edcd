"""The benchmark's headline table: each model's error averaged over horizons, at the base
lookback and at the lookback chosen on the validation split, mean ± std over seeds, with a
paired test across seeds before one model is said to beat another.

Why these rules (the published long-term-forecasting protocol; ../shared/PITFALLS.md section 1):
- the lookback is a hyper-parameter, so it is chosen per (dataset, model, horizon) by the
  fp32 model's best *validation* MSE (averaged over seeds), never by test error;
- a model's score is its test MSE/MAE averaged over the horizons, computed per seed first,
  so the spread over seeds is the spread of that score;
- "A beats B" needs the same seeds for both: a paired t-test (scipy.stats.ttest_rel) on the
  per-seed scores. With fewer than 2 common seeds no test is possible and the table says so.
"""

from __future__ import annotations

import polars as pl

GROUP = ["dataset", "model"]


def choose_lookbacks(frame: pl.DataFrame) -> pl.DataFrame:
    """(dataset, model, horizon) -> the lookback with the lowest mean validation MSE (fp32)."""
    fp32 = frame.filter(pl.col("pass_kind") == "fp32")
    val = fp32.group_by([*GROUP, "horizon", "lookback"]).agg(pl.col("val_mse").mean())
    return (
        val.sort([*GROUP, "horizon", "val_mse", "lookback"])
        .group_by([*GROUP, "horizon"], maintain_order=True)
        .first()
        .select(*GROUP, "horizon", "lookback")
    )


def per_seed_scores(rows: pl.DataFrame, n_horizons: int) -> pl.DataFrame:
    """Test MSE/MAE averaged over horizons for each (dataset, model, seed); a seed that lacks
    a horizon gets no score rather than an average over fewer horizons."""
    return (
        rows.group_by([*GROUP, "seed"])
        .agg(pl.len().alias("n"), pl.col("mse").mean(), pl.col("mae").mean())
        .filter(pl.col("n") == n_horizons)
        .drop("n")
    )


def _summarise(scores: pl.DataFrame, suffix: str) -> pl.DataFrame:
    return scores.group_by(GROUP).agg(
        pl.len().alias(f"seeds{suffix}"),
        pl.col("mse").mean().alias(f"mse{suffix}"),
        pl.col("mse").std().alias(f"mse_std{suffix}"),
        pl.col("mae").mean().alias(f"mae{suffix}"),
        pl.col("mae").std().alias(f"mae_std{suffix}"),
    )


def headline(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(headline table, paired tests) from the per-seed results frame (fp32 rows are used).

    The paired tests are run at the base lookback and, where validation scores exist, at the
    validation-chosen lookbacks (column ``lookback``).

    The base lookback is the smallest one in the frame (96 in the ETTh1 protocol).
    """
    fp32 = frame.filter(pl.col("pass_kind") == "fp32")
    if fp32.is_empty():  # classification-only runs, or no fp32 pass configured
        return pl.DataFrame(), paired_tests(pl.DataFrame(schema={"dataset": pl.Utf8, "model": pl.Utf8,
                                                                 "seed": pl.Int64, "mse": pl.Float64}))
    n_horizons = fp32["horizon"].n_unique()
    base = int(fp32["lookback"].min())
    at_base = per_seed_scores(fp32.filter(pl.col("lookback") == base), n_horizons)
    table = _summarise(at_base, f"_L{base}")
    tests = [paired_tests(at_base).with_columns(lookback=pl.lit(f"L{base}"))]
    if "val_mse" in fp32.columns and fp32["val_mse"].null_count() < fp32.height:
        chosen = choose_lookbacks(fp32)
        picked = per_seed_scores(fp32.join(chosen, on=[*GROUP, "horizon", "lookback"], how="inner"), n_horizons)
        lookbacks = chosen.group_by(GROUP).agg(
            pl.col("lookback").sort_by("horizon").cast(pl.Utf8).str.join("/").alias("val_chosen_lookbacks")
        )
        table = table.join(_summarise(picked, "_val_chosen"), on=GROUP, how="full",
                           coalesce=True).join(lookbacks, on=GROUP, how="left")
        tests.append(paired_tests(picked).with_columns(lookback=pl.lit("val-chosen")))
    table = table.sort(["dataset", f"mse_L{base}"], nulls_last=True)
    return table, pl.concat(tests).select("dataset", "lookback", pl.exclude("dataset", "lookback"))


def paired_tests(scores: pl.DataFrame) -> pl.DataFrame:
    """Per dataset: the model with the lowest mean score against every other model, paired by seed."""
    from scipy.stats import ttest_rel

    rows = []
    for (dataset,), group in scores.group_by("dataset", maintain_order=True):
        means = group.group_by("model").agg(pl.col("mse").mean()).sort("mse")
        best = means["model"][0]
        mine = {s: m for s, m in group.filter(pl.col("model") == best).select("seed", "mse").iter_rows()}
        for other in means["model"][1:]:
            theirs = {s: m for s, m in group.filter(pl.col("model") == other).select("seed", "mse").iter_rows()}
            seeds = sorted(set(mine) & set(theirs))
            a, b = [mine[s] for s in seeds], [theirs[s] for s in seeds]
            p_value = float(ttest_rel(a, b).pvalue) if len(seeds) >= 2 and a != b else None
            rows.append({
                "dataset": dataset, "best": best, "other": other, "common_seeds": len(seeds),
                "mse_diff": (sum(b) - sum(a)) / len(seeds) if seeds else None, "p_value": p_value,
            })
    schema = {"dataset": pl.Utf8, "best": pl.Utf8, "other": pl.Utf8, "common_seeds": pl.Int64,
              "mse_diff": pl.Float64, "p_value": pl.Float64}
    return pl.DataFrame(rows, schema=schema)
