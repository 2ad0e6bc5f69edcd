"""A CSV file with a date column and numeric channels (the ETT files, or any like them).

Parsing is strict and explicit: everything is read as text first, then dates and numbers are
parsed column by column, so every problem is reported with the file, the column and the first
offending line, never as a traceback from inside polars.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from seqcomp.errors import DataError
from seqcomp.registry import check


@dataclass
class CSVConfig:
    path: str = ""
    date_column: str = "date"
    columns: list[str] | None = None  # channels to keep; None = every column but the date
    missing: str = "error"  # "error" or "ffill" (forward fill, then backward fill at the start)

    def __post_init__(self) -> None:
        check(bool(self.path), "path", "is required for a csv dataset")
        check(self.missing in ("error", "ffill"), "missing", f"must be 'error' or 'ffill', got {self.missing!r}")


def _line(row: int) -> int:
    """1-based line number in the file of data row ``row`` (line 1 is the header)."""
    return row + 2


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _ragged_line(data: bytes) -> str | None:
    """Name the first line whose field count differs from the header's (polars does not)."""
    try:
        rows = csv.reader(io.StringIO(data.decode("utf-8")))
        width = len(next(rows))
        for row in rows:
            if row and len(row) != width:
                return f"line {rows.line_num} has {len(row)} fields, the header has {width}"
    except (csv.Error, StopIteration) as exc:
        return f"{exc}" if isinstance(exc, csv.Error) else None
    return None


class CSVSource:
    Config = CSVConfig

    def __init__(self, cfg: CSVConfig, base_dir: Path = Path("."), where: str = "dataset"):
        self.cfg = cfg
        self.where = where
        path = Path(cfg.path)
        self.path = path if path.is_absolute() else Path(base_dir) / path

    def _bytes(self) -> bytes:
        if not self.path.is_file():
            raise DataError(f"{self.path}: file not found ({self.where}.path)")
        data = self.path.read_bytes()
        if not data.strip():
            raise DataError(f"{self.path}: file is empty")
        return data

    def identity(self) -> str:
        return "sha256:" + hashlib.sha256(self._bytes()).hexdigest()

    def n_rows(self) -> int:
        return self.load()[0].height

    def _read_text_table(self) -> pl.DataFrame:
        data = self._bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8 CSV") from None
        try:
            frame = pl.read_csv(io.BytesIO(data), infer_schema=False)
        except (pl.exceptions.PolarsError, ValueError) as exc:
            raise DataError(f"{self.path}: cannot be parsed as CSV: {_ragged_line(data) or _first_line(exc)}") from None
        if frame.height == 0:
            raise DataError(f"{self.path}: has a header but no data rows")
        return frame

    def _parse_dates(self, frame: pl.DataFrame) -> pl.Series:
        name = self.cfg.date_column
        if name not in frame.columns:
            raise DataError(
                f"{self.path}: no date column {name!r} ({self.where}.date_column); columns are {frame.columns}"
            )
        raw = frame[name]
        try:
            parsed = raw.str.strip_chars().str.to_datetime(strict=False)
        except pl.exceptions.PolarsError:
            parsed = pl.Series(name, [None] * len(raw), dtype=pl.Datetime)
        bad = (parsed.is_null()).arg_true()
        if len(bad):
            row = int(bad[0])
            raise DataError(f"{self.path}: column {name!r} line {_line(row)}: cannot parse {raw[row]!r} as a date")
        steps = parsed.diff().dt.total_microseconds()
        not_increasing = (steps <= 0).fill_null(False).arg_true()
        if len(not_increasing):
            row = int(not_increasing[0])
            kind = "duplicate" if steps[row] == 0 else "earlier"
            raise DataError(
                f"{self.path}: column {name!r} line {_line(row)}: timestamp {raw[row]!r} is {kind} than the one "
                "before; rows must be sorted by strictly increasing time"
            )
        return parsed.alias("date")

    def _parse_channel(self, raw: pl.Series) -> tuple[pl.Series, int]:
        text = raw.str.strip_chars()
        values = text.cast(pl.Float64, strict=False)
        # Non-empty text that is not a number is an error in any mode: it is not "missing".
        garbage = (values.is_null() & text.is_not_null() & (text != "")).arg_true()
        if len(garbage):
            row = int(garbage[0])
            raise DataError(f"{self.path}: column {raw.name!r} line {_line(row)}: {raw[row]!r} is not a number")
        missing = values.is_null() | ~values.is_finite().fill_null(False)
        n_missing = int(missing.sum())
        if n_missing and self.cfg.missing == "error":
            row = int(missing.arg_true()[0])
            raise DataError(
                f"{self.path}: column {raw.name!r} line {_line(row)}: missing or non-finite value {raw[row]!r} "
                f"({n_missing} in this column); set {self.where}.missing: ffill to fill them"
            )
        if n_missing:
            values = values.set(missing, None).fill_null(strategy="forward").fill_null(strategy="backward")
            if values.is_null().any():
                raise DataError(f"{self.path}: column {raw.name!r} has no finite value to fill from")
        return values.cast(pl.Float32).alias(raw.name), n_missing

    def load(self) -> tuple[pl.DataFrame, dict]:
        """The parsed table (``date`` + float32 channels) and what was done to it (fill counts)."""
        frame = self._read_text_table()
        dates = self._parse_dates(frame)
        names = self.cfg.columns or [c for c in frame.columns if c != self.cfg.date_column]
        absent = [c for c in names if c not in frame.columns]
        if absent:
            raise DataError(f"{self.path}: column(s) {absent} not found ({self.where}.columns); columns are {frame.columns}")
        if not names:
            raise DataError(f"{self.path}: no channel columns besides the date column {self.cfg.date_column!r}")
        channels, filled = [], {}
        for name in names:
            series, n_filled = self._parse_channel(frame[name])
            channels.append(series)
            if n_filled:
                filled[name] = n_filled
        return pl.DataFrame([dates, *channels]), {"filled_values": filled}
