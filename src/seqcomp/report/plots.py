"""Figures: each function takes a polars DataFrame and returns a matplotlib Figure (callers save)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: the pipeline and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

MARKERS = "osD^vP*Xh<>"


def _panels(frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    keys = ["dataset", "lookback", "horizon"]
    out = []
    for key, sub in frame.group_by(keys, maintain_order=True):
        out.append((f"{key[0]}  L={key[1]}  H={key[2]}", sub))
    return out


def _grid(n: int, width: float = 6.0, height: float = 4.2) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def pareto_figure(frame: pl.DataFrame) -> plt.Figure:
    """Test MSE against stored size: colour = model, marker = pass; mean over seeds.

    Parameter-free models (size 0) are drawn as dashed horizontal lines.
    """
    means = frame.group_by(["dataset", "lookback", "horizon", "model", "pass"], maintain_order=True).agg(
        pl.col("mse").mean(), pl.col("size_bytes").first(), pl.col("simulated").first()
    )
    models = sorted(means["model"].unique())
    passes = sorted(means["pass"].unique())
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    marker = {p: MARKERS[i % len(MARKERS)] for i, p in enumerate(passes)}
    panels = _panels(means)
    fig, axes = _grid(len(panels))
    for ax, (label, sub) in zip(axes, panels):
        points = sub.filter(pl.col("size_bytes") > 0)
        low, high = points["mse"].min(), points["mse"].max()
        pad = 0.1 * (high - low) if high > low else 0.05 * high
        ax.set_ylim(low - pad, high + pad)
        for row in sub.filter(pl.col("size_bytes") == 0).unique(["model"]).iter_rows(named=True):
            # parameter-free models (naive) have no size: a reference level, noted if off the chart
            if row["mse"] <= high + pad:
                ax.axhline(row["mse"], color=colors[row["model"]], linestyle="--", linewidth=1)
            else:
                ax.annotate(f"{row['model']}: MSE {row['mse']:.3g} (above)", xy=(0.01, 0.97), xycoords="axes fraction",
                            va="top", fontsize=8, color=colors[row["model"]])
        for row in points.iter_rows(named=True):
            ax.scatter(row["size_bytes"] / 1024, row["mse"], color=colors[row["model"]], marker=marker[row["pass"]],
                       s=60, edgecolor="black" if row["simulated"] else "none", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("stored model size (KiB, log scale)")
        ax.set_ylabel("test MSE (scaled data)")
        ax.set_title(label)
        ax.grid(alpha=0.3, which="both")
    handles = [plt.Line2D([], [], color=colors[m], marker="o", linestyle="", label=m) for m in models]
    handles += [plt.Line2D([], [], color="black", markerfacecolor="white", marker=marker[p], linestyle="", label=p)
                for p in passes]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), title="model / pass (black edge = simulated)")
    fig.suptitle("Error vs size per model and compression pass")
    fig.tight_layout()
    return fig


def training_curves_figure(history: pl.DataFrame) -> plt.Figure:
    """Validation MSE per epoch for every model (seed 0 or the lowest seed)."""
    if history.is_empty() or "val/mse" not in history.columns:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.text(0.5, 0.5, "no training history", ha="center", va="center")
        ax.set_axis_off()
        return fig
    first_seed = history.filter(pl.col("seed") == pl.col("seed").min())
    panels = _panels(first_seed)
    fig, axes = _grid(len(panels))
    for ax, (label, sub) in zip(axes, panels):
        for (model,), curve in sub.group_by(["model"], maintain_order=True):
            curve = curve.sort("epoch")
            style = "-o" if curve.height > 1 else "o"
            ax.plot(curve["epoch"] + 1, curve["val/mse"], style, markersize=3, label=model)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("validation MSE (scaled data)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Training curves (closed-form and parameter-free models: one point)")
    fig.tight_layout()
    return fig
