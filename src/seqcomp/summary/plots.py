"""Figures: each function takes a polars DataFrame and returns a matplotlib Figure; callers save.

The summary stage and notebooks/compare.ipynb draw with the same functions. Conventions
shared by every figure: one panel per (dataset, lookback, horizon); a model keeps its colour
in every figure; legends sit outside the axes, to the right, so they never cover data;
simulated (fake-quant) passes are marked, since their timings are no speed-up claim.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # headless: the pipeline and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from seqcomp.summary.core import pareto_front  # noqa: E402

MARKERS = "osD^vP*Xh<>"
PANEL_KEYS = ["dataset", "lookback", "horizon"]


def _colors(names: list[str], cmap: str = "tab10") -> dict[str, tuple]:
    palette = plt.get_cmap("tab20" if len(names) > 10 else cmap)
    return {n: palette(i % palette.N) for i, n in enumerate(sorted(names))}


def _panels(frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """(title, rows) per distinct (dataset, lookback, horizon), in sorted order."""
    groups = frame.sort(PANEL_KEYS, maintain_order=True).group_by(PANEL_KEYS, maintain_order=True)
    return [(f"{dataset}  L={lookback}  H={horizon}", sub) for (dataset, lookback, horizon), sub in groups]


def _grid(n: int, cols: int = 2, width: float = 6.0, height: float = 4.2) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = max(1, min(n, cols))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _legend(fig: plt.Figure, handles: list, title: str | None = None) -> None:
    """One legend for the whole figure, right of the panels (saved with bbox_inches='tight')."""
    fig.tight_layout()
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), title=title, fontsize=9)


def _empty(message: str) -> plt.Figure:
    """A figure that says why there is nothing to draw (the summary's outputs are fixed files)."""
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return fig


def format_bytes(value: float, _pos: object = None) -> str:
    """Tick label in binary units: 512 B, 4 KiB, 1.5 MiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:g} {unit}"
    return f"{value:g} B"


def _bytes_axis(ax: plt.Axes) -> None:
    """Log-scale x axis in bytes, ticks at powers of 2 (or 4 over wide spans), labelled with units."""
    ax.set_xscale("log", base=2)
    low, high = ax.get_xlim()
    ax.xaxis.set_major_locator(LogLocator(base=4 if high / max(low, 1) > 64 else 2))
    ax.xaxis.set_major_formatter(FuncFormatter(format_bytes))
    ax.xaxis.set_minor_formatter(NullFormatter())


def seed_means(frame: pl.DataFrame) -> pl.DataFrame:
    """Mean test MSE over seeds per (dataset, lookback, horizon, model, pass); size etc. taken once."""
    return frame.group_by([*PANEL_KEYS, "model", "pass"], maintain_order=True).agg(
        pl.col("mse").mean(), pl.col("size_bytes").first(), pl.col("simulated").first()
    )


def _reference_levels(ax: plt.Axes, rows: pl.DataFrame, colors: dict, ceiling: float) -> list[str]:
    """Parameter-free models (naive) have no size: a dashed level; those off the chart are returned as notes."""
    notes = []
    for row in rows.unique(["model"], maintain_order=True).iter_rows(named=True):
        if row["mse"] <= ceiling:
            ax.axhline(row["mse"], color=colors[row["model"]], linestyle="--", linewidth=1)
        else:
            notes.append(f"{row['model']} (no weights): MSE {row['mse']:.3g}, above the chart")
    return notes


def pareto_figure(frame: pl.DataFrame) -> plt.Figure:
    """Test MSE against stored size (mean over seeds): colour = model, marker = pass.

    The non-dominated points (smallest error for their size) are joined by a step line.
    """
    means = seed_means(frame)
    if means.is_empty():
        return _empty("no test MSE to plot")
    colors = _colors(frame["model"].unique().to_list())
    passes = sorted(means["pass"].unique())
    marker = {p: MARKERS[i % len(MARKERS)] for i, p in enumerate(passes)}
    panels = _panels(means)
    fig, axes = _grid(len(panels))
    for ax, (title, sub) in zip(axes, panels):
        points = sub.filter(pl.col("size_bytes") > 0).sort("size_bytes")
        if points.is_empty():
            ax.text(0.5, 0.5, "no model with weights", ha="center", transform=ax.transAxes)
            continue
        low, high = points["mse"].min(), points["mse"].max()
        pad = 0.1 * (high - low) if high > low else 0.05 * high
        ax.set_ylim(low - pad, high + pad)
        notes = _reference_levels(ax, sub.filter(pl.col("size_bytes") == 0), colors, high + pad)
        for row in points.iter_rows(named=True):
            ax.scatter(row["size_bytes"], row["mse"], color=colors[row["model"]], marker=marker[row["pass"]], s=60,
                       edgecolor="black" if row["simulated"] else "none", linewidth=0.8, zorder=3)
        front = pareto_front(points["size_bytes"].to_list(), points["mse"].to_list())
        ax.step(points["size_bytes"].gather(front), points["mse"].gather(front), where="post", color="grey",
                linewidth=1.2, zorder=2, label="front")
        ax.set_xlim(points["size_bytes"].min() / 1.5, points["size_bytes"].max() * 1.5)
        _bytes_axis(ax)
        ax.set_xlabel("stored model size (log scale)")
        ax.set_ylabel("test MSE (scaled data)")
        ax.set_title("\n".join([title, *notes]), fontsize=10)
        ax.grid(alpha=0.3, which="major")
    weighted = set(means.filter(pl.col("size_bytes") > 0)["model"])
    handles = [plt.Line2D([], [], color=colors[m], marker="o", linestyle="", label=m) if m in weighted else
               plt.Line2D([], [], color=colors[m], linestyle="--", label=f"{m} (no weights)") for m in colors]
    handles += [plt.Line2D([], [], color="black", markerfacecolor="white", marker=marker[p], linestyle="", label=p)
                for p in passes]
    handles += [plt.Line2D([], [], color="grey", label="Pareto front"),
                plt.Line2D([], [], color="white", marker="o", markeredgecolor="black", linestyle="",
                           label="black edge = simulated")]
    fig.suptitle("Error vs size: models (colour) x compression passes (marker)")
    _legend(fig, handles, "model / pass")
    return fig


def bits_figure(frame: pl.DataFrame) -> plt.Figure:
    """MSE change vs fp32 (%) against stored bits per weight, one panel column per pass family.

    Bits per weight = 32 / compression ratio: every stored byte (codes, scales, layers kept in
    fp32) per fp32 weight, so a "4-bit" pass that leaves half the model in fp32 shows ~18.
    Each model's line starts at its fp32 point (32 bits, 0 %).
    """
    rows = frame.filter(pl.col("bits_per_weight").is_not_null())
    families = sorted(set(rows["pass_kind"]) - {"fp32"})
    if not families:
        return _empty("no compression pass besides fp32: nothing to compare")
    means = rows.group_by([*PANEL_KEYS, "model", "pass", "pass_kind"], maintain_order=True).agg(
        pl.col("mse_change_pct").mean(), pl.col("bits_per_weight").first(), pl.col("simulated").first()
    )
    colors = _colors(frame["model"].unique().to_list())
    panels = _panels(means)
    fig, axes = _grid(len(panels) * len(families), cols=len(families), width=5.0)
    for i, (title, sub) in enumerate(panels):
        for j, family in enumerate(families):
            ax = axes[i * len(families) + j]
            fam = sub.filter(pl.col("pass_kind").is_in(["fp32", family]))
            for (model,), line in fam.sort("bits_per_weight").group_by(["model"], maintain_order=True):
                ax.plot(line["bits_per_weight"], line["mse_change_pct"], "-o", color=colors[model], markersize=4)
            simulated = sub.filter(pl.col("pass_kind") == family)["simulated"].any()
            ax.set_title(f"{title}\n{family}" + (" (simulated)" if simulated else ""), fontsize=10)
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(LogLocator(base=2))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.axhline(0, color="black", linewidth=0.6)
            ax.set_xlabel("stored bits per weight (log scale)")
            ax.set_ylabel("test MSE change vs fp32 (%)")
            ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colors[m], marker="o", label=m) for m in sorted(means["model"].unique())]
    fig.suptitle("Error vs bits per weight, per pass family (each line: one model, from its fp32 point)")
    _legend(fig, handles, "model")
    return fig


def per_step_figure(steps: pl.DataFrame, pass_kind: str = "fp32") -> plt.Figure:
    """Test MSE at each forecast step (lead time) for every model: one panel per horizon.

    ``steps`` has one row per (dataset, lookback, horizon, model, pass, seed, step) with ``mse``;
    only ``pass_kind`` rows are drawn (errors grow with lead time; compression rarely changes the shape).
    """
    rows = steps.filter(pl.col("pass_kind") == pass_kind) if not steps.is_empty() else steps
    if rows.is_empty():
        return _empty(f"no per-step errors for pass kind {pass_kind}")
    means = rows.group_by([*PANEL_KEYS, "model", "step"], maintain_order=True).agg(
        pl.col("mse").mean(), pl.col("size_bytes").first()
    )
    colors = _colors(means["model"].unique().to_list())
    panels = _panels(means)
    fig, axes = _grid(len(panels))
    for ax, (title, sub) in zip(axes, panels):
        for (model,), curve in sub.sort("step").group_by(["model"], maintain_order=True):
            free = curve["size_bytes"][0] == 0
            ax.plot(curve["step"] + 1, curve["mse"], "--" if free else "-", color=colors[model], linewidth=1.3)
        weighted = sub.filter(pl.col("size_bytes") > 0)["mse"]
        notes = []
        if weighted.len() and sub["mse"].max() > 1.5 * weighted.max():
            # a parameter-free baseline far above would flatten the models that matter: clip it
            ax.set_ylim(0, 1.15 * weighted.max())
            notes = ["parameter-free models (dashed) clipped"]
        ax.set_xlabel("forecast step (lead time, time steps)")
        ax.set_ylabel("test MSE at that step (scaled data)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("\n".join([title, *notes]), fontsize=10)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colors[m], label=m) for m in colors]
    if (means["size_bytes"] == 0).any():
        handles.append(plt.Line2D([], [], color="black", linestyle="--", label="no weights (dashed)"))
    fig.suptitle(f"Error by lead time ({pass_kind} models, mean over seeds)")
    _legend(fig, handles, "model")
    return fig


def training_curves_figure(history: pl.DataFrame) -> plt.Figure:
    """Validation MSE per epoch for every model (the lowest seed)."""
    if history.is_empty() or "val/mse" not in history.columns:
        return _empty("no training history")
    first_seed = history.filter(pl.col("seed") == pl.col("seed").min())
    colors = _colors(first_seed["model"].unique().to_list())
    panels = _panels(first_seed)
    fig, axes = _grid(len(panels))
    for ax, (title, sub) in zip(axes, panels):
        for (model,), curve in sub.sort("epoch").group_by(["model"], maintain_order=True):
            ax.plot(curve["epoch"] + 1, curve["val/mse"], "-o" if curve.height > 1 else "o", markersize=3,
                    color=colors[model])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("validation MSE (scaled data)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colors[m], marker="o", label=m) for m in colors]
    fig.suptitle("Training curves (closed-form and parameter-free models: one point)")
    _legend(fig, handles, "model")
    return fig


def forecast_figure(examples: pl.DataFrame, pass_kind: str = "fp32") -> plt.Figure:
    """A few fixed test windows: lookback (grey), truth (black) and each model's forecast.

    ``examples`` has one row per (dataset, lookback, horizon, model, pass, seed, window, step):
    ``truth`` for every step (negative steps are the lookback) and ``forecast`` for steps >= 0.
    """
    rows = examples.filter(pl.col("pass_kind") == pass_kind) if not examples.is_empty() else examples
    if rows.is_empty():
        return _empty(f"no forecast examples for pass kind {pass_kind} (metrics.json without 'examples')")
    rows = rows.filter(pl.col("seed") == pl.col("seed").min())
    colors = _colors(rows["model"].unique().to_list())
    panels = [(f"{title}  window {w}", win) for title, sub in _panels(rows)
              for (w,), win in sub.group_by(["window"], maintain_order=True)]
    n_windows = rows["window"].n_unique()
    fig, axes = _grid(len(panels), cols=min(n_windows, 3), width=5.0, height=3.6)
    for ax, (title, sub) in zip(axes, panels):
        truth = sub.filter(pl.col("model") == sub["model"][0]).sort("step")
        past, future = truth.filter(pl.col("step") < 0), truth.filter(pl.col("step") >= 0)
        ax.plot(past["step"], past["truth"], color="grey", linewidth=1)
        ax.plot(future["step"], future["truth"], color="black", linewidth=1.6)
        for (model,), pred in sub.filter(pl.col("step") >= 0).sort("step").group_by(["model"], maintain_order=True):
            ax.plot(pred["step"], pred["forecast"], color=colors[model], linewidth=1.1)
        ax.axvline(-0.5, color="black", linewidth=0.5, linestyle=":")
        ax.set_xlabel("time step (0 = first forecast step)")
        ax.set_ylabel(f"{sub['channel'][0]} (scaled)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color="grey", label="lookback"), plt.Line2D([], [], color="black", label="truth")]
    handles += [plt.Line2D([], [], color=colors[m], label=m) for m in colors]
    fig.suptitle(f"Forecasts on fixed test windows ({pass_kind} models)")
    _legend(fig, handles, "series")
    return fig


def latency_figure(frame: pl.DataFrame) -> plt.Figure:
    """Median CPU latency per forward call: models on x, one bar per pass, one panel per batch size.

    Simulated passes are hatched: they run fp32 kernels, so their time is no speed-up claim.
    """
    columns = sorted((c for c in frame.columns if c.startswith("latency_b") and c.endswith("_ms")),
                     key=lambda c: int(c.removeprefix("latency_b").removesuffix("_ms")))
    if not columns:
        return _empty("no latency measurements")
    means = frame.group_by([*PANEL_KEYS, "model", "pass"], maintain_order=True).agg(
        pl.col("simulated").first(), *[pl.col(c).median() for c in columns]
    )
    passes = sorted(means["pass"].unique())
    pass_colors = _colors(passes, cmap="Set2")
    panels = [(f"{title}  batch {c.removeprefix('latency_b').removesuffix('_ms')}", sub, c)
              for title, sub in _panels(means) for c in columns]
    fig, axes = _grid(len(panels), cols=len(columns), width=6.5)
    width = 0.8 / len(passes)
    for ax, (title, sub, column) in zip(axes, panels):
        models = sorted(sub["model"].unique())
        for j, p in enumerate(passes):
            bars = sub.filter(pl.col("pass") == p)
            at = {m: i for i, m in enumerate(models)}
            for row in bars.iter_rows(named=True):
                ax.bar(at[row["model"]] + (j - (len(passes) - 1) / 2) * width, row[column], width,
                       color=pass_colors[p], edgecolor="black", linewidth=0.5, hatch="///" if row["simulated"] else None)
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("median latency per call (ms, log scale)")
        ax.set_xlabel("model")
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y", which="both")
    handles = [Patch(facecolor=pass_colors[p], edgecolor="black", label=p) for p in passes]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="///", label="simulated (fp32 kernels)"))
    fig.suptitle("CPU latency per forward call (median over repeats)")
    _legend(fig, handles, "pass")
    return fig


def sensitivity_figure(layers: pl.DataFrame) -> plt.Figure:
    """Per-layer sensitivity a pass measured (``layers[i]["sensitivity"]`` = {bits: value}).

    ``layers`` has one row per (dataset, lookback, horizon, model, pass, seed, layer, bits) with
    ``sensitivity`` and ``metric`` (what the pass measured). One panel per model and pass.
    """
    if layers.is_empty():
        return _empty("no pass in this run reports per-layer sensitivity")
    rows = layers.filter(pl.col("seed") == pl.col("seed").min())
    bits = sorted(rows["bits"].unique())
    bit_colors = {b: plt.get_cmap("viridis")(i / max(len(bits) - 1, 1)) for i, b in enumerate(bits)}
    panels = [(f"{title}  {model} / {p}", sub) for title, by_key in _panels(rows)
              for (model, p), sub in by_key.group_by(["model", "pass"], maintain_order=True)]
    fig, axes = _grid(len(panels), cols=1, width=10.0, height=4.0)
    for ax, (title, sub) in zip(axes, panels):
        names = sub["layer"].unique(maintain_order=True).to_list()
        at = {n: i for i, n in enumerate(names)}
        for b in bits:
            line = sub.filter(pl.col("bits") == b)
            ax.plot([at[n] for n in line["layer"]], line["sensitivity"], "o-", color=bit_colors[b], markersize=4)
        positive = sub["sensitivity"].min() > 0
        if positive and sub["sensitivity"].max() / sub["sensitivity"].min() > 100:
            ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel(sub["metric"][0] + (" (log scale)" if ax.get_yscale() == "log" else ""))
        ax.set_xlabel("layer")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=bit_colors[b], marker="o", label=f"{b} bits") for b in bits]
    fig.suptitle("Per-layer sensitivity to quantization")
    _legend(fig, handles, "weight bits")
    return fig


def size_accuracy_figure(frame: pl.DataFrame) -> plt.Figure:
    """Per model, test MSE change vs fp32 (%) against the stored-size ratio (log scale), one line
    per method (a pass kind and its non-size settings, seqcomp.summary.sweep), means over seeds.

    Dotted lines mark the target: +1% error and 10x reduction. The y axis is clipped at +25% so
    that the points near the target stay readable; a point above is drawn on the clip line.
    """
    from seqcomp.summary.core import aggregate
    from seqcomp.summary.sweep import MODEL, TARGET_PCT, TARGET_RATIO, points, sweeping_methods

    pts = points(aggregate(frame)) if not frame.is_empty() else frame
    methods = sweeping_methods(pts)
    if not methods:
        return _empty("no method run at two or more stored sizes: no size-accuracy curve")
    pts = pts.filter(pl.col("method").is_in(methods))
    colors = _colors(methods)
    panels = [(f"{dataset} L={lookback} H={horizon}: {model}", sub)
              for (dataset, lookback, horizon, model), sub in pts.sort(MODEL).group_by(MODEL, maintain_order=True)]
    fig, axes = _grid(len(panels), cols=4, width=4.2, height=3.4)
    ceiling = 25.0
    for ax, (title, sub) in zip(axes, panels):
        for (method,), line in sub.sort("compression_ratio").group_by(["method"], maintain_order=True):
            ax.plot(line["compression_ratio"], line["mse_change_pct"].clip(upper_bound=ceiling), "-o",
                    color=colors[method], markersize=3, linewidth=1.2)
        ax.axhline(TARGET_PCT, color="black", linestyle=":", linewidth=0.8)
        ax.axvline(TARGET_RATIO, color="black", linestyle=":", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(top=ceiling * 1.05)
        ax.set_xlabel("fp32 bytes / stored bytes (log scale)")
        ax.set_ylabel("test MSE vs fp32 (%)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colors[m], marker="o", markersize=3, label=m) for m in methods]
    handles.append(plt.Line2D([], [], color="black", linestyle=":", label=f"target: +{TARGET_PCT:g}% at {TARGET_RATIO:g}x"))
    fig.suptitle(f"Size-accuracy curves per model (y clipped at +{ceiling:g}%)")
    _legend(fig, handles, "method")
    return fig
