"""A series' time step: inferred from its timestamps, checked for gaps and off-grid times, and
each row's step index (what a cycle's phase counts).

Rows are counted as time everywhere downstream (split presets in rows, windows of consecutive
rows, a cycle's phase), so the step is checked rather than assumed. The step is the most
common difference between consecutive timestamps; monthly, quarterly and yearly data (28 to
366 days apart) step in calendar months instead: on the same day of the month and time (the
day clamped to a short month's end), or on month ends. A row more than one step after the one
before is a *gap*; a row between grid points is *off-grid*.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

US_PER_DAY = 86_400_000_000
# a most common difference from 28 days up (a month or more) may be a calendar step
CALENDAR_FROM_US = 28 * US_PER_DAY


@dataclass(frozen=True)
class Step:
    """A fixed step (``micros``) or a calendar step of ``months`` on ``day`` (0: month ends) at
    ``time`` (microseconds after midnight)."""

    micros: int = 0
    months: int = 0
    day: int = 0
    time: int = 0

    def text(self) -> str:
        if self.months:
            anchor = "month ends" if self.day == 0 else f"day {self.day}"
            return f"{self.months} month{'s' * (self.months != 1)} ({anchor})"
        return duration_text(self.micros)

    def to_json(self) -> dict[str, Any]:
        """meta.json's ``step``: its text and its length (seconds, or months with their anchor)."""
        if self.months:
            return {"text": self.text(), "months": self.months, "day": self.day or "end"}
        return {"text": self.text(), "seconds": self.micros / 1e6}


def duration_text(micros: int) -> str:
    """``3600000000`` -> ``1h``, ``5400000000`` -> ``1h30min``, ``86400000000`` -> ``1d``."""
    parts, rest = [], micros
    for unit, size in (("d", US_PER_DAY), ("h", 3_600_000_000), ("min", 60_000_000), ("s", 1_000_000), ("us", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


@dataclass
class TimeAxis:
    """The step of a series and where each row sits on its grid."""

    dates: pl.Series
    step: Step | None  # None: fewer than two rows
    index: np.ndarray  # (T,) int64: whole steps since the first timestamp (floor for off-grid rows)
    on_grid: np.ndarray  # (T,) bool

    @property
    def gaps(self) -> np.ndarray:
        """Rows more than one step after an on-grid row before them (both on the grid)."""
        jump = np.diff(self.index) > 1
        return np.flatnonzero(jump & self.on_grid[1:] & self.on_grid[:-1]) + 1

    @property
    def off_grid(self) -> np.ndarray:
        return np.flatnonzero(~self.on_grid)

    def missing_steps(self) -> int:
        return int(sum(self.index[r] - self.index[r - 1] - 1 for r in self.gaps))

    def expected(self, row: int) -> datetime:
        """The time one step after row ``row - 1``."""
        prev = self.dates[row - 1]
        if self.step.months:
            return _grid_time(_month(prev) + self.step.months, self.step, prev.tzinfo)
        return prev + timedelta(microseconds=self.step.micros)

    def jumps(self) -> list[list[int]]:
        """[row, step index] of each row whose index is not the previous row's + 1 (empty when the
        index is the row number): enough to rebuild ``index`` (``seqcomp.data.windows.step_index``)."""
        rows = np.flatnonzero(np.diff(self.index) != 1) + 1
        return [[int(r), int(self.index[r])] for r in rows]

    def filled(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` (``date`` + channels, these dates, every row on the grid) with a row at each
        missing step, its channels copied from the row before (forward fill)."""
        positions = np.arange(int(self.index[-1]) + 1)
        source_row = np.searchsorted(self.index, positions, side="right") - 1  # the last row at or before
        out = frame.drop("date")[source_row.tolist()]
        return out.insert_column(0, self._grid_dates(positions).alias("date"))

    def _grid_dates(self, positions: np.ndarray) -> pl.Series:
        if self.step.months:
            m0 = _month(self.dates[0])
            times = [_grid_time(m0 + int(p) * self.step.months, self.step, None) for p in positions]
            naive = pl.Series("date", times, dtype=pl.Datetime("us"))
        else:
            start = int(self.dates.dt.epoch("us")[0])  # UTC for a zoned column
            naive = pl.from_epoch(pl.Series("date", start + positions * self.step.micros), time_unit="us")
        tz = getattr(self.dates.dtype, "time_zone", None)
        if tz and self.step.months:
            naive = naive.dt.replace_time_zone(tz)  # calendar times are wall-clock times in the zone
        elif tz:
            naive = naive.dt.replace_time_zone("UTC").dt.convert_time_zone(tz)
        return naive.cast(self.dates.dtype)


def _mode(values: np.ndarray) -> int:
    """The most common value (the smallest of a tie)."""
    uniq, counts = np.unique(values, return_counts=True)
    return int(uniq[np.argmax(counts)])


def _month(t: datetime) -> int:
    return t.year * 12 + t.month - 1


def _time(t: datetime) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond


def _grid_time(month: int, step: Step, tz: Any) -> datetime:
    year, mon = divmod(month, 12)
    last = calendar.monthrange(year, mon + 1)[1]
    day = last if step.day == 0 else min(step.day, last)
    return datetime(year, mon + 1, day, tzinfo=tz) + timedelta(microseconds=step.time)


def time_axis(dates: pl.Series) -> TimeAxis:
    """The inferred step of strictly increasing ``dates`` and each row's place on its grid."""
    n = len(dates)
    us = dates.dt.epoch("us").to_numpy().astype(np.int64)  # (T,)
    diffs = np.diff(us)
    if n < 2:
        return TimeAxis(dates, None, np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool))
    step_us = _mode(diffs)
    if (diffs == step_us).all():  # regular: the fast path every clean series takes
        return TimeAxis(dates, Step(micros=step_us), np.arange(n, dtype=np.int64), np.ones(n, dtype=bool))
    if step_us >= CALENDAR_FROM_US:
        axis = _calendar_axis(dates)
        if axis is not None:
            return axis
    offset = (us - us[0]) % step_us
    return TimeAxis(dates, Step(micros=step_us), (us - us[0]) // step_us, offset == _mode(offset))


def _calendar_axis(dates: pl.Series) -> TimeAxis | None:
    """Months as steps, if at least half the rows sit on one monthly grid; else None."""
    times = dates.to_list()
    months = np.array([_month(t) for t in times], dtype=np.int64)
    month_end = np.array([t.day == calendar.monthrange(t.year, t.month)[1] for t in times])
    clock = _mode(np.array([_time(t) for t in times], dtype=np.int64))
    day = 0 if month_end.mean() > 0.5 else _mode(np.array([t.day for t in times]))
    fits = np.array([_grid_time(m, Step(day=day, time=clock), t.tzinfo) == t for m, t in zip(months, times)])
    if fits.mean() < 0.5:
        return None
    on = np.flatnonzero(fits)
    step_months = max(_mode(np.diff(months[on])), 1) if len(on) > 1 else 1
    fits &= (months - months[on[0]]) % step_months == 0
    step = Step(months=step_months, day=day, time=clock)
    return TimeAxis(dates, step, (months - months[0]) // step_months, fits)
