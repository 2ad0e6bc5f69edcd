"""Sliding (lookback, horizon) windows over a prepared series, cut on the fly; or the samples
of a prepared classification task.

Nothing is materialised: a window is two slices of one (T, C) tensor, so any lookback or
horizon reuses the same prepared parquet. With ``cycle=P`` each lookback row gets one more
column, its phase (the row's step index modulo P: whole inferred steps since the series' first
timestamp, the row number on a series without gaps), for models that forecast with a global
cycle (seqcomp.models.cycle); the target keeps the C channels. Classification samples keep their token ids and are
one-hot encoded per item: x (L, vocab) float, y (H,) int64 class ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from seqcomp.data.split import window_starts
from seqcomp.errors import ConfigError
from seqcomp.io import read_json

if TYPE_CHECKING:
    import polars as pl


@dataclass
class PreparedSeries:
    values: torch.Tensor  # (T, C) scaled float32
    borders: tuple[int, int, int]
    meta: dict
    task = "forecast"

    @classmethod
    def load(cls, data_dir: str | Path) -> "PreparedSeries | PreparedSamples":
        """The prepared dataset in ``data_dir``: a series, or samples when meta.json says
        ``task: classification`` (both answer ``channels``, ``task`` and ``windows``)."""
        data_dir = Path(data_dir)
        import polars as pl  # lazy: GPU benchmark machines have torch but not polars
        meta = read_json(data_dir / "meta.json")
        frame = pl.read_parquet(data_dir / "series.parquet")
        if meta.get("task") == PreparedSamples.task:
            return PreparedSamples.from_frame(frame, meta)
        values = torch.from_numpy(frame.select(meta["channels"]).to_numpy().copy())
        return cls(values=values.float(), borders=tuple(meta["borders"]), meta=meta)

    @property
    def channels(self) -> int:
        return self.values.shape[1]

    def windows(self, split: str, lookback: int, horizon: int, cycle: int | None = None) -> "WindowDataset":
        starts = window_starts(self.borders, split, lookback, horizon)
        if cycle is None:
            return WindowDataset(self.values, starts, lookback, horizon)
        # Exact small integers in float32: the phase column travels with the values.
        phase = (step_index(self.meta, len(self.values)) % cycle).to(self.values.dtype)[:, None]  # (T, 1)
        return WindowDataset(self.values, starts, lookback, horizon, inputs=torch.cat([self.values, phase], dim=1))


def step_index(meta: dict, n_rows: int) -> torch.Tensor:
    """(T,) int64: each row's whole steps since the first timestamp, rebuilt from meta.json's
    ``step_jumps`` ([row, step index] where the index is not the previous row's + 1; none, or
    absent in a meta.json written before them: the row number)."""
    index = torch.arange(n_rows)
    if not meta.get("step_jumps"):
        return index
    rows, steps = torch.tensor(meta["step_jumps"]).T.contiguous()  # (J,), (J,)
    last = torch.searchsorted(rows, index, right=True) - 1  # (T,) the latest jump at or before each row
    offset = torch.where(last >= 0, (steps - rows)[last.clamp_min(0)], 0)  # step index - row after it
    return index + offset


# Periods (in seconds) whose phase 0 has a natural time: the hour at minute 0, the day at midnight,
# the week at Monday midnight.
NATURAL_PERIODS = {
    3600: ("hour", ":%M", ":00"),
    86400: ("day", "%H:%M", "00:00"),
    604800: ("week", "%a %H:%M", "Mon 00:00"),
}


def cycle_origin(meta: dict, period: int) -> tuple[str, str | None]:
    """(what phase 0 is, a warning when that is not the natural start of the cycle's period).

    A cycle's phase counts steps from the series' first timestamp, so ``cycle: 24`` over hourly
    data is the hour of day only if the series starts at midnight; otherwise the phases are the
    same cycle, labelled from another hour. Nothing is wrong with the model: the warning says so.
    """
    start, step = meta.get("start"), meta.get("step")
    if start is None or step is None:
        return "the first row", None
    start = datetime.fromisoformat(start)
    if "months" in step:
        origin = f"{start:%b} (month {start.month})"
        natural = step["months"] * period == 12 and start.month != 1
        return origin, f"phase 0 = {origin}, not January" if natural else None
    seconds = step["seconds"] * period
    if seconds not in NATURAL_PERIODS:
        return f"{start}", None
    name, fmt, zero = NATURAL_PERIODS[seconds]
    origin = start.strftime(fmt)
    if origin == zero:
        return origin, None
    return origin, (f"cycle {period} spans a {name}, but the series starts at {start}: phase 0 = {origin}, "
                    f"not {zero} (the phases are right, labelled from {origin})")


def job_windows(series: "PreparedSeries | PreparedSamples", spec: dict[str, Any], split: str) -> "WindowDataset | SampleDataset":
    """``split``'s windows as a job's model takes them: the spec's lookback and horizon and, for a
    model with ``cycle: P`` (a model-level key of the spec's ``params``), each step's phase as a
    last input column. The job spec decides the data's shape, never the built model."""
    return series.windows(split, spec["lookback"], spec["horizon"], spec["params"].get("cycle"))


class WindowDataset(Dataset):
    """Item i is (x, y): x = inputs[s-L:s] (L, C or C + 1), y = values[s:s+H] (H, C) for the
    i-th start s; ``inputs`` defaults to ``values``."""

    def __init__(self, values: torch.Tensor, starts: range, lookback: int, horizon: int,
                 inputs: torch.Tensor | None = None):
        self.values, self.starts, self.lookback, self.horizon = values, starts, lookback, horizon
        self.inputs = values if inputs is None else inputs

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.starts[i]
        return self.inputs[s - self.lookback : s], self.values[s : s + self.horizon]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All windows stacked: (N, L, C), (N, H, C). For closed-form fits and calibration."""
        idx = torch.as_tensor(list(self.starts))  # (N,)
        x = self.inputs[idx[:, None] + torch.arange(-self.lookback, 0)]  # (N, L, C)
        y = self.values[idx[:, None] + torch.arange(self.horizon)]  # (N, H, C)
        return x, y


@dataclass
class PreparedSamples:
    """Independent fixed-shape samples per split (a generated classification task)."""

    tokens: dict[str, tuple[torch.Tensor, torch.Tensor]]  # split -> inputs (N, L), targets (N, H), int64
    meta: dict
    task = "classification"

    @classmethod
    def from_frame(cls, frame: "pl.DataFrame", meta: dict) -> "PreparedSamples":
        import polars as pl

        tokens = {}
        for split in meta["counts"]:
            rows = frame.filter(pl.col("split") == split)
            tokens[split] = tuple(torch.from_numpy(rows[c].to_numpy().astype("int64")) for c in ("x", "y"))
        return cls(tokens=tokens, meta=meta)

    @property
    def channels(self) -> int:
        return self.meta["n_classes"]

    def windows(self, split: str, lookback: int, horizon: int, cycle: int | None = None) -> "SampleDataset":
        if cycle is not None:
            raise ConfigError(f"dataset {self.meta['dataset']!r}: cycle: a classification task has no time axis to cycle over")
        if (lookback, horizon) != (self.meta["length"], self.meta["targets"]):
            raise ConfigError(
                f"dataset {self.meta['dataset']!r}: its samples have lookback {self.meta['length']} and horizon "
                f"{self.meta['targets']}, not {lookback} and {horizon} (lookbacks/horizons)"
            )
        return SampleDataset(*self.tokens[split], self.channels)


class SampleDataset(Dataset):
    """Item i is (x, y): x the one-hot input (L, vocab) float32, y the target class ids (H,) int64."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, n_classes: int):
        self.inputs, self.targets, self.n_classes = inputs, targets, n_classes

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return F.one_hot(self.inputs[i], self.n_classes).float(), self.targets[i]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All samples stacked: (N, L, vocab) one-hot, (N, H) class ids."""
        return F.one_hot(self.inputs, self.n_classes).float(), self.targets
