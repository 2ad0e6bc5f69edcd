"""Summary stage: one polars table of every evaluation, written as CSV + markdown, and plots."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from seqcomp.io import atomic_path, read_json
from seqcomp.report.plots import pareto_figure, training_curves_figure

LATENCY = re.compile(r"latency_b\d+_ms")
KEYS = ["dataset", "model", "lookback", "horizon", "pass"]
HISTORY_PATH = re.compile(r"train/(?P<dataset>[^/]+)/(?P<model>[^/]+)/L(?P<lookback>\d+)-H(?P<horizon>\d+)/seed(?P<seed>\d+)/")


def latency_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if LATENCY.fullmatch(c)]


def load_metrics(paths: list[str]) -> pl.DataFrame:
    """One row per metrics.json, with latency medians flattened and the fp32 baseline joined in."""
    rows = []
    for path in paths:
        m = read_json(path)
        row = {k: v for k, v in m.items() if not isinstance(v, (dict, list))}
        row.update({f"latency_{b}_ms": v["median_ms"] for b, v in m["latency"].items()})
        rows.append(row)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    base = frame.filter(pl.col("pass_kind") == "fp32").select(
        "dataset", "model", "lookback", "horizon", "seed",
        pl.col("mse").alias("fp32_mse"),
        *[pl.col(c).alias(f"fp32_{c}") for c in latency_columns(frame)],
    )
    frame = frame.join(base, on=["dataset", "model", "lookback", "horizon", "seed"], how="left")
    frame = frame.with_columns(((pl.col("mse") / pl.col("fp32_mse") - 1) * 100).alias("mse_change_pct"))
    # A simulated (fake-quant) pass runs fp32 kernels: its timing is no speed-up claim.
    speedups = [
        pl.when(~pl.col("simulated"))
        .then(pl.col(f"fp32_{c}") / pl.col(c))
        .alias(c.replace("latency_", "speedup_").replace("_ms", ""))
        for c in latency_columns(frame)
    ]
    return frame.with_columns(speedups).sort(["dataset", "lookback", "horizon", "model", "pass", "seed"])


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
            pl.col("quantized_fraction").first(),
            pl.col("simulated").first(),
            *[pl.col(c).median() for c in frame.columns if LATENCY.fullmatch(c) or c.startswith("speedup_")],
        )
    )


def to_markdown(frame: pl.DataFrame) -> str:
    """A GitHub-flavoured markdown table (floats to 4 significant digits)."""
    def cell(v: object) -> str:
        if v is None:
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines) + "\n"


def load_histories(paths: list[str]) -> pl.DataFrame:
    frames = []
    for path in paths:
        match = HISTORY_PATH.search(Path(path).as_posix())
        if match is None:
            raise ValueError(f"{path}: not a train/<dataset>/<model>/L<l>-H<h>/seed<s>/history.csv path")
        keys = {k: (int(v) if k in ("lookback", "horizon", "seed") else v) for k, v in match.groupdict().items()}
        frames.append(pl.read_csv(path).with_columns(**{k: pl.lit(v) for k, v in keys.items()}))
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def summarize(metrics: list[str], histories: list[str], out_dir: Path, title: str = "seqcomp") -> pl.DataFrame:
    """Write results.csv (every run), results.md (mean over seeds) and plots/ under ``out_dir``."""
    frame = load_metrics(metrics)
    table = aggregate(frame)
    with atomic_path(out_dir / "results.csv") as tmp:
        frame.write_csv(tmp)
    with atomic_path(out_dir / "results.md") as tmp:
        tmp.write_text(f"# {title}: test metrics (mean over seeds)\n\n" + to_markdown(table))
    figures = {"pareto.png": pareto_figure(frame), "training_curves.png": training_curves_figure(load_histories(histories))}
    for name, fig in figures.items():
        with atomic_path(out_dir / "plots" / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return table
