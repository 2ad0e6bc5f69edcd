"""Summary core: the tables of the summary stage from metrics rows, without files or MLflow.

One polars table of every evaluation joined to its fp32 baseline, its mean over seeds, and
the long frames the figures take. The notebook (notebooks/compare.ipynb) builds the same
metrics frame from MLflow runs (``runs.py``).
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

import polars as pl

from seqcomp.names import JOB_FIELDS
from seqcomp.publish import markdown
from seqcomp.summary.headline import headline

LATENCY = re.compile(r"latency_b\d+_ms")
KEYS = ["dataset", "model", "lookback", "horizon", "pass"]
RUN_KEYS = list(JOB_FIELDS)  # one row per training job (seqcomp.names)
# Task-specific scores carried into the table when present: AR data's optimal error, and the
# classification tasks' accuracies (their rows have no MSE).
TASK_SCORES = ("optimal_mse", "mse_over_optimal", "accuracy", "seq_accuracy", "chance_accuracy")


def latency_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if LATENCY.fullmatch(c)]


def metrics_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per metrics.json content: scalars only, latency medians flattened to latency_b<n>_ms."""
    flat = []
    for m in rows:
        row = {k: v for k, v in m.items() if not isinstance(v, (dict, list))}
        row.update({f"latency_{b}_ms": v["median_ms"] for b, v in m["latency"].items()})
        flat.append(row)
    return pl.DataFrame(flat, infer_schema_length=None)


def with_baseline(frame: pl.DataFrame) -> pl.DataFrame:
    """Join each run's fp32 baseline: MSE change (%), speed-ups, and stored bits per weight."""
    base = frame.filter(pl.col("pass_kind") == "fp32").select(
        *RUN_KEYS, pl.col("mse").alias("fp32_mse"), *[pl.col(c).alias(f"fp32_{c}") for c in latency_columns(frame)],
    )
    frame = frame.join(base, on=RUN_KEYS, how="left")
    # A simulated (fake-quant) pass runs fp32 kernels: its timing is no speed-up claim.
    speedups = [
        pl.when(~pl.col("simulated"))
        .then(pl.col(f"fp32_{c}") / pl.col(c))
        .alias(c.replace("latency_", "speedup_").replace("_ms", ""))
        for c in latency_columns(frame)
    ]
    return frame.with_columns(
        ((pl.col("mse") / pl.col("fp32_mse") - 1) * 100).alias("mse_change_pct"),
        # every stored byte (codes, scales, layers left fp32) per weight; null for parameter-free models
        (32 / pl.col("compression_ratio")).alias("bits_per_weight"),
        *speedups,
    ).sort(["dataset", "lookback", "horizon", "model", "pass", "seed"])




def pareto_front(sizes: list[float], errors: list[float]) -> list[int]:
    """Indices of the non-dominated points (no other point is as small and as accurate), by size.

    A point is dominated when another has size <= and error <= with one of them strictly less.
    """
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], errors[i]))
    front, best = [], math.inf
    for i in order:
        if errors[i] < best:
            front.append(i)
            best = errors[i]
    return front


def step_errors(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Long frame of test MSE per forecast step: one row per (run, pass, step)."""
    keys = [*RUN_KEYS, "pass", "pass_kind", "size_bytes"]
    out = [{**{k: m[k] for k in keys}, "step": i, "mse": v} for m in rows for i, v in enumerate(m.get("mse_per_step", []))]
    return pl.DataFrame(out)


def forecast_examples(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Long frame of the evaluate stage's example windows: truth at every step, forecast at steps >= 0."""
    keys = [*RUN_KEYS, "pass", "pass_kind"]
    out = []
    for m in (m for m in rows if "examples" in m):
        ex = m["examples"]
        for k, window in enumerate(ex["windows"]):
            base = {**{key: m[key] for key in keys}, "channel": ex["channel"], "window": window}
            context = ex["context"][k]
            out += [{**base, "step": i - len(context), "truth": v, "forecast": None} for i, v in enumerate(context)]
            out += [{**base, "step": i, "truth": t, "forecast": f} for i, (t, f) in enumerate(zip(ex["truth"][k], ex["forecast"][k]))]
    return pl.DataFrame(out, infer_schema_length=None)




def aggregate(frame: pl.DataFrame) -> pl.DataFrame:
    """Mean and std over seeds of every (dataset, model, lookback, horizon, pass)."""
    return (
        frame.group_by(KEYS, maintain_order=True)
        .agg(
            pl.len().alias("seeds"),
            pl.col("mse").mean().alias("mse"),
            pl.col("mse").std().alias("mse_std"),
            pl.col("mae").mean().alias("mae"),
            pl.col("mse_change_pct").mean().alias("mse_change_pct"),
            pl.col("size_bytes").first(),
            pl.col("compression_ratio").first(),
            pl.col("bits_per_weight").first(),
            pl.col("quantized_fraction").first(),
            pl.col("simulated").first(),
            pl.col("pass_kind").first(),
            # from the compress reports where recorded (stage.pass_reports): the pass's method and time
            *[pl.col(c).first() for c in ("method", "group_profile") if c in frame.columns],
            *([pl.col("pass_wall_s").mean()] if "pass_wall_s" in frame.columns else []),
            *[pl.col(c).mean() for c in TASK_SCORES if c in frame.columns],
            *[pl.col(c).median() for c in frame.columns if LATENCY.fullmatch(c) or c.startswith("speedup_")],
        )
    )


def to_markdown(frame: pl.DataFrame) -> str:
    """A GitHub-flavoured markdown table (floats to 4 significant digits)."""
    return markdown.table(frame.columns, frame.iter_rows())


def to_html(frame: pl.DataFrame, title: str) -> str:
    """A standalone HTML page holding the table (the Snakemake report shows HTML files inline)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(markdown.short(v))}</td>" for v in row) + "</tr>\n"
                   for row in frame.iter_rows())
    style = ("body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}")
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h3>{html.escape(title)}</h3>\n"
            f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table></body></html>\n")






def headline_markdown(frame: pl.DataFrame, title: str) -> str:
    """headline.md: each model's error over horizons (base and validation-chosen lookback), paired tests."""
    table, tests = headline(frame)
    return (f"# {title}: headline (fp32, test MSE/MAE averaged over horizons; mean and std over seeds)\n\n"
            + (to_markdown(table) if table.height else "no fp32 forecasting results\n")
            + "\n## Best model against each other model: paired t-test across seeds (test MSE averaged over horizons)\n\n"
            + (to_markdown(tests) if tests.height else "no forecasting results\n"))



