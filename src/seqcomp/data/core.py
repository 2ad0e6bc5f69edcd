"""The data stage's core: a dataset entry's source in; the prepared table and its meta.json
record out, no files (``data/stage.py`` writes them).

A series is split chronologically and scaled with its train rows' statistics: the table holds
the *scaled* series (metrics are reported on scaled data, as published tables do); the record
holds the scaler statistics (to map forecasts back), the split borders, the source's identity
(file hash or generator parameters) for provenance, and the time axis: the series' start, its
inferred step and where the step index (what a cycle's phase counts,
``seqcomp.data.windows.step_index``) departs from the row number, as ``gaps: allow`` lets it.
A sample dataset (classification task) is one row per sample instead, with no scaler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from seqcomp.data.split import check_preset_step, split_borders
from seqcomp.data.steps import time_axis
from seqcomp.errors import DataError


@dataclass
class FittedSeries:
    """A loaded series, its split borders and the scaler fitted on its train rows."""

    frame: pl.DataFrame  # date + channels
    load_info: dict[str, Any]  # what loading did (fill counts)
    borders: tuple[int, int, int]
    scaled: np.ndarray  # (T, C) float32, (value - mean) / std
    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)
    time: dict[str, Any]  # start, step, step_jumps (meta.json's)

    @property
    def channels(self) -> list[str]:
        return [c for c in self.frame.columns if c != "date"]


def fit_series(source: Any, entry: dict[str, Any], where: str) -> FittedSeries:
    """Load a series source, split it and scale it with train rows' statistics.

    A channel flat over train has no scale; a value so far from train that it overflows float32
    once scaled would be inf in every job that reads it: both are errors here, before any job.
    """
    frame, load_info = source.load()
    channels = [c for c in frame.columns if c != "date"]
    axis = time_axis(frame["date"])
    time = {"start": str(frame["date"][0]), "step": axis.step and axis.step.to_json(), "step_jumps": axis.jumps()}
    check_preset_step(entry.get("split"), axis.step, len(time["step_jumps"]), where)
    borders = split_borders(entry.get("split"), frame.height, where=f"{where}.split")
    values = frame.select(channels).to_numpy().astype(np.float64)  # (T, C)
    train = values[: borders[0]]
    mean, std = train.mean(axis=0), train.std(axis=0)
    flat = [c for c, s in zip(channels, std) if s == 0]
    if flat:
        raise DataError(f"{where}: channel(s) {flat} are constant over the train split; drop them ({where}.columns)")
    with np.errstate(over="ignore"):
        scaled = ((values - mean) / std).astype(np.float32)
    rows, cols = np.nonzero(~np.isfinite(scaled))
    if len(rows):
        row, col = int(rows[0]), int(cols[0])
        raise DataError(
            f"{where}: channel {channels[col]!r} at {frame['date'][row]}: {values[row, col]:.6g} is "
            f"{(values[row, col] - mean[col]) / std[col]:.3g} train standard deviations from the train mean, "
            "beyond float32 once scaled"
        )
    return FittedSeries(frame, load_info, borders, scaled, mean, std, time)


def prepare_series(source: Any, entry: dict[str, Any], name: str, where: str) -> tuple[pl.DataFrame, dict]:
    """(the scaled table: date + channels, its meta.json record) of a series source."""
    fitted = fit_series(source, entry, where)
    frame, channels, borders, mean, std = fitted.frame, fitted.channels, fitted.borders, fitted.mean, fitted.std
    out = frame.select("date").with_columns([pl.Series(c, fitted.scaled[:, i]) for i, c in enumerate(channels)])
    meta = {
        "dataset": name,
        "kind": entry["kind"],
        "source": source.identity(),
        "channels": channels,
        "n_rows": frame.height,
        "borders": list(borders),
        "scaler": {"mean": mean.tolist(), "std": std.tolist(), "fitted_on": "train"},
        "inserted_rows": 0,  # a csv dataset's gaps: fill says how many (load_info)
        **fitted.load_info,
        **fitted.time,
    }
    if hasattr(source, "optimal_mse_per_step"):  # up to the longest horizon a test window can have
        meta["optimal_mse_per_step"] = source.optimal_mse_per_step(std, borders[2] - borders[1])
    return out, meta


def prepare_samples(source: Any, entry: dict[str, Any], name: str) -> tuple[pl.DataFrame, dict]:
    """(one row per sample: split, input tokens, target tokens; its meta.json record) of a sample
    source; no scaler."""
    length, targets = source.shape
    frames = [
        pl.DataFrame({
            "split": [split] * len(x),
            "x": pl.Series(x.astype(np.int32), dtype=pl.Array(pl.Int32, length)),
            "y": pl.Series(y.astype(np.int32), dtype=pl.Array(pl.Int32, targets)),
        })
        for split, (x, y) in source.samples().items()
    ]
    meta = {
        "dataset": name,
        "kind": entry["kind"],
        "task": source.task,
        "source": source.identity(),
        "n_classes": source.cfg.vocab,
        "length": length,
        "targets": targets,
        "counts": source.counts(),
        "chance_accuracy": source.chance,
    }
    return pl.concat(frames), meta
