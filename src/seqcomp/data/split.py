"""Chronological train/val/test borders and window counts (the Informer / Time-Series-Library protocol).

Borders are the end rows (exclusive) of train, val and test. A window's forecast horizon lies
wholly inside one split; its lookback may reach back into the previous split, exactly as
Time-Series-Library cuts val/test (so ETTh1 at L=96, H=96 gives 8449 / 2785 / 2785 windows).
"""

from __future__ import annotations

from typing import Any

from seqcomp.errors import ConfigError

HOURS_PER_MONTH = 30 * 24
PRESETS = {
    # 12 / 4 / 4 months (Zhou et al. 2021, Informer; Time-Series-Library data_loader.py)
    "ett_hour": (12 * HOURS_PER_MONTH, 16 * HOURS_PER_MONTH, 20 * HOURS_PER_MONTH),
    "ett_minute": (12 * HOURS_PER_MONTH * 4, 16 * HOURS_PER_MONTH * 4, 20 * HOURS_PER_MONTH * 4),
}
DEFAULT_RATIOS = (0.7, 0.1, 0.2)
SPLITS = ("train", "val", "test")


def split_borders(split: dict[str, Any] | None, n_rows: int, where: str = "split") -> tuple[int, int, int]:
    """Resolve a split spec (preset, borders or ratios; default ratios 0.7/0.1/0.2) for ``n_rows`` rows."""
    split = split or {"ratios": list(DEFAULT_RATIOS)}
    if "preset" in split:
        borders = PRESETS[split["preset"]]
    elif "borders" in split:
        borders = tuple(int(b) for b in split["borders"])
    else:
        train_r, _, test_r = split["ratios"]
        if sum(split["ratios"]) > 1 + 1e-9:
            raise ConfigError(f"{where}.ratios: {split['ratios']} sum to more than 1")
        n_train, n_test = int(n_rows * train_r), int(n_rows * test_r)
        borders = (n_train, n_rows - n_test, n_rows)
    if not borders[0] < borders[1] < borders[2]:
        raise ConfigError(f"{where}: borders {list(borders)} must be strictly increasing")
    if borders[2] > n_rows:
        raise ConfigError(f"{where}: test ends at row {borders[2]} but the series has only {n_rows} rows")
    return borders


def window_starts(borders: tuple[int, int, int], split: str, lookback: int, horizon: int) -> range:
    """First forecast row of every window of ``split``: its horizon lies inside the split."""
    begin = {"train": lookback, "val": borders[0], "test": borders[1]}[split]
    end = borders[SPLITS.index(split)]
    return range(max(begin, lookback), end - horizon + 1)


def count_windows(borders: tuple[int, int, int], lookback: int, horizon: int) -> dict[str, int]:
    return {s: len(window_starts(borders, s, lookback, horizon)) for s in SPLITS}
