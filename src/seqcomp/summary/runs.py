"""MLflow evaluation runs -> the same metrics frame the summary stage builds from metrics.json files.

The evaluate stage logs everything the table needs (errors, sizes, latency, the pass's
``seqcomp.simulated`` tag, the job spec as params), so a notebook can compare runs from the
tracking store alone, including runs of other configs or machines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from seqcomp.summary.core import with_baseline

if TYPE_CHECKING:
    import pandas as pd

PARAMS = {"dataset": pl.Utf8, "model": pl.Utf8, "kind": pl.Utf8, "lookback": pl.Int64, "horizon": pl.Int64,
          "seed": pl.Int64, "pass": pl.Utf8, "pass_kind": pl.Utf8}
# MLflow metric -> (column, dtype): MLflow stores floats; byte counts are integers in metrics.json
METRICS = {"test/mse": ("mse", pl.Float64), "test/mae": ("mae", pl.Float64), "size_bytes": ("size_bytes", pl.Int64),
           "fp32_bytes": ("fp32_bytes", pl.Int64), "compression_ratio": ("compression_ratio", pl.Float64),
           "quantized_fraction": ("quantized_fraction", pl.Float64)}


def runs_frame(runs: "pd.DataFrame") -> pl.DataFrame:
    """Finished, current evaluation runs of ``mlflow.search_runs`` output, one row per run, fp32 baseline joined."""
    frame = pl.from_pandas(runs)
    missing = [f"params.{p}" for p in PARAMS if f"params.{p}" not in frame.columns]
    if "tags.seqcomp.stage" not in frame.columns or missing:
        raise ValueError(f"not seqcomp evaluation runs: missing column(s) {missing or ['tags.seqcomp.stage']}")
    superseded = pl.col("tags.seqcomp.superseded") if "tags.seqcomp.superseded" in frame.columns else pl.lit(None)
    frame = frame.filter(
        (pl.col("tags.seqcomp.stage") == "evaluate") & (pl.col("status") == "FINISHED") & (superseded.fill_null("") != "true")
    )
    latency = {c: "latency_" + c.removeprefix("metrics.latency_ms/") + "_ms"
               for c in frame.columns if c.startswith("metrics.latency_ms/")}
    return with_baseline(frame.select(
        *[pl.col(f"params.{p}").cast(t).alias(p) for p, t in PARAMS.items()],
        *[(pl.col(f"metrics.{m}") if f"metrics.{m}" in frame.columns else pl.lit(None)).cast(t).alias(name)
          for m, (name, t) in METRICS.items()],
        *[pl.col(c).alias(name) for c, name in latency.items()],
        (pl.col("tags.seqcomp.simulated") == "true").alias("simulated"),
        pl.col("run_id"),
    ))
