"""Sliding (lookback, horizon) windows over a prepared series, cut on the fly.

Nothing is materialised: a window is two slices of one (T, C) tensor, so any lookback or
horizon reuses the same prepared parquet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from seqcomp.data.split import window_starts
from seqcomp.io import read_json


@dataclass
class PreparedSeries:
    values: torch.Tensor  # (T, C) scaled float32
    borders: tuple[int, int, int]
    meta: dict

    @classmethod
    def load(cls, data_dir: str | Path) -> "PreparedSeries":
        data_dir = Path(data_dir)
        import polars as pl  # lazy: GPU benchmark machines have torch but not polars
        meta = read_json(data_dir / "meta.json")
        frame = pl.read_parquet(data_dir / "series.parquet")
        values = torch.from_numpy(frame.select(meta["channels"]).to_numpy().copy())
        return cls(values=values.float(), borders=tuple(meta["borders"]), meta=meta)

    @property
    def channels(self) -> int:
        return self.values.shape[1]

    def windows(self, split: str, lookback: int, horizon: int) -> "WindowDataset":
        return WindowDataset(self.values, window_starts(self.borders, split, lookback, horizon), lookback, horizon)


class WindowDataset(Dataset):
    """Item i is (x, y): x = values[s-L:s] (L, C), y = values[s:s+H] (H, C) for the i-th start s."""

    def __init__(self, values: torch.Tensor, starts: range, lookback: int, horizon: int):
        self.values, self.starts, self.lookback, self.horizon = values, starts, lookback, horizon

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.starts[i]
        return self.values[s - self.lookback : s], self.values[s : s + self.horizon]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All windows stacked: (N, L, C), (N, H, C). For closed-form fits and calibration."""
        idx = torch.as_tensor(list(self.starts))  # (N,)
        x = self.values[idx[:, None] + torch.arange(-self.lookback, 0)]  # (N, L, C)
        y = self.values[idx[:, None] + torch.arange(self.horizon)]  # (N, H, C)
        return x, y
