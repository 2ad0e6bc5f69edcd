"""Chronological train/val/test borders and window counts (the Informer / Time-Series-Library protocol).

Borders are the end rows (exclusive) of train, val and test. A window's forecast horizon lies
wholly inside one split; its lookback may reach back into the previous split, exactly as
Time-Series-Library cuts val/test (so ETTh1 at L=96, H=96 gives 8449 / 2785 / 2785 windows).
Borders count rows, so a preset's months hold the right time only at its own step: each preset
names the step it assumes (``PRESET_STEPS``), and a series of another step is refused.
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
# The step each preset's rows stand for (seconds, as written): its borders count 30-day months in rows.
PRESET_STEPS = {"ett_hour": (3600, "1h"), "ett_minute": (900, "15min")}
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
        if sum(split["ratios"]) > 1 + 1e-9:
            raise ConfigError(f"{where}.ratios: {split['ratios']} sum to more than 1")
        borders = _ratio_borders(split["ratios"], n_rows)
        if not _increasing(borders):
            sizes = "/".join(str(b - a) for a, b in zip((0, *borders), borders))
            raise ConfigError(
                f"{where}: the series has {n_rows} row{'s' * (n_rows != 1)}: ratios {split['ratios']} give "
                f"train/val/test {sizes} rows; each needs at least one row, so the series needs at least "
                f"{_fewest_rows(split['ratios'])} rows (more for a window of lookback + horizon)"
            )
    if not _increasing(borders):
        raise ConfigError(f"{where}: borders {list(borders)} must be strictly increasing")
    if borders[2] > n_rows:
        raise ConfigError(f"{where}: test ends at row {borders[2]} but the series has only {n_rows} rows")
    return borders


def check_preset_step(split: dict[str, Any] | None, step: Any, jumps: int, where: str = "dataset") -> None:
    """Refuse a preset on a series whose inferred step (a ``seqcomp.data.steps.Step``; None for
    fewer than two rows) is not the one the preset counts its rows in, or whose rows skip steps
    (``jumps``, kept by ``gaps: allow``): its borders would fall at other times. ``where``: the
    dataset's config key."""
    if not split or "preset" not in split or step is None:
        return
    seconds, text = PRESET_STEPS[split["preset"]]
    if step.months or step.micros != seconds * 1_000_000:
        raise ConfigError(
            f"{where}.split.preset: {split['preset']} counts its 12/4/4 months of 30 days in rows of {text}, but the "
            f"series steps by {step.text()}; split it with borders or ratios instead"
        )
    if jumps:
        raise ConfigError(
            f"{where}.split.preset: {split['preset']} counts its 12/4/4 months of 30 days in rows of {text}, one "
            f"row per step, but the series skips steps at {jumps} place{'s' * (jumps != 1)} (gaps: allow); set "
            f"{where}.gaps: fill to insert the missing rows, or split it with borders or ratios"
        )


def _ratio_borders(ratios: list[float], n_rows: int) -> tuple[int, int, int]:
    """Train and test rounded down, val takes the rest (Time-Series-Library)."""
    n_train, n_test = int(n_rows * ratios[0]), int(n_rows * ratios[2])
    return n_train, n_rows - n_test, n_rows


def _increasing(borders: tuple[int, int, int]) -> bool:
    return 0 < borders[0] < borders[1] < borders[2]


def _fewest_rows(ratios: list[float]) -> int:
    """The fewest rows for which ``ratios`` give every split at least one row."""
    n = 3
    while not _increasing(_ratio_borders(ratios, n)):
        n += 1
    return n


def window_starts(borders: tuple[int, int, int], split: str, lookback: int, horizon: int) -> range:
    """First forecast row of every window of ``split``: its horizon lies inside the split."""
    begin = {"train": lookback, "val": borders[0], "test": borders[1]}[split]
    end = borders[SPLITS.index(split)]
    return range(max(begin, lookback), end - horizon + 1)


def count_windows(borders: tuple[int, int, int], lookback: int, horizon: int) -> dict[str, int]:
    return {s: len(window_starts(borders, s, lookback, horizon)) for s in SPLITS}
