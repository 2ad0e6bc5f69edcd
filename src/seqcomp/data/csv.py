"""A CSV file with a date column and numeric channels (the ETT files, or any like them).

Parsing is strict and explicit: everything is read as text first, then dates and numbers are
parsed column by column, so every problem is reported with the file, the column and the first
offending line, never as a traceback from inside polars. A gzip, bzip2 or xz file is read
as the CSV it holds, whatever its name; the separator is the header's most frequent of
``, ; tab |`` unless set; dates are read with one format for the whole column (``dates.py``).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import lzma
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from seqcomp.data.dates import parse_dates
from seqcomp.errors import DataError
from seqcomp.registry import check


@dataclass
class CSVConfig:
    path: str = ""
    date_column: str = "date"
    columns: list[str] | None = None  # channels to keep; None = every column but the date
    missing: str = "error"  # "error" or "ffill" (forward fill, then backward fill at the start)
    date_format: str | None = None  # strftime format of the date column; None = inferred from every row
    separator: str | None = None  # field separator; None = the header's most frequent of , ; tab |

    def __post_init__(self) -> None:
        check(bool(self.path), "path", "is required for a csv dataset")
        check(self.missing in ("error", "ffill"), "missing", f"must be 'error' or 'ffill', got {self.missing!r}")
        check(self.separator is None or len(self.separator) == 1, "separator",
              f"must be one character, got {self.separator!r}")
        check(self.date_format is None or "%" in self.date_format, "date_format",
              f"must be a strftime format such as '%Y-%m-%d %H:%M:%S', got {self.date_format!r}")


# The series is stored as float32: a larger finite value would become inf there.
FLOAT32_MAX = float(np.finfo(np.float32).max)
SEPARATORS = (",", ";", "\t", "|")
# Leading bytes of compressed files: read the ones the standard library decompresses.
COMPRESSED = (
    (b"\x1f\x8b", "gzip", gzip.decompress),
    (b"BZh", "bzip2", bz2.decompress),
    (b"\xfd7zXZ\x00", "xz", lzma.decompress),
    (b"PK\x03\x04", "zip", None),
    (b"\x28\xb5\x2f\xfd", "zstd", None),
)


def _line(row: int) -> int:
    """1-based line number in the file of data row ``row`` (line 1 is the header)."""
    return row + 2


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _separator(text: str) -> str:
    """The header's most frequent candidate separator (a comma on a tie or with none)."""
    header = text.split("\n", 1)[0]
    return max(SEPARATORS, key=lambda sep: (header.count(sep), sep == ","))


def _ragged_line(data: bytes, separator: str) -> str | None:
    """Name the first line whose field count differs from the header's (polars does not)."""
    try:
        rows = csv.reader(io.StringIO(data.decode("utf-8")), delimiter=separator)
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
        """The file's bytes as stored (what its identity hashes)."""
        if self.path.is_dir():
            raise DataError(f"{self.path}: is a directory, not a CSV file ({self.where}.path)")
        if not self.path.exists():
            raise DataError(f"{self.path}: file not found ({self.where}.path)")
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise DataError(f"{self.path}: cannot be read: {exc.strerror} ({self.where}.path)") from None
        if not data.strip():
            raise DataError(f"{self.path}: file is empty")
        return data

    def _text_bytes(self) -> bytes:
        """The CSV text's bytes: the file's, or what a compressed file holds."""
        data = self._bytes()
        for magic, kind, decompress in COMPRESSED:
            if not data.startswith(magic):
                continue
            if decompress is None:
                raise DataError(f"{self.path}: is {kind}-compressed, not CSV text; decompress it "
                                f"(gzip, bzip2 and xz files are read as they are)")
            try:
                data = decompress(data)
            except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:
                raise DataError(f"{self.path}: is {kind}-compressed but cannot be decompressed ({exc})") from None
            if not data.strip():
                raise DataError(f"{self.path}: file is empty once decompressed ({kind})")
            break
        return data

    def identity(self) -> str:
        return "sha256:" + hashlib.sha256(self._bytes()).hexdigest()

    def n_rows(self) -> int:
        return self.load()[0].height

    def _read_text_table(self) -> pl.DataFrame:
        data = self._text_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8 CSV") from None
        sep = self.cfg.separator or _separator(text)
        try:
            frame = pl.read_csv(io.BytesIO(data), separator=sep, infer_schema=False)
        except (pl.exceptions.PolarsError, ValueError) as exc:
            problem = _ragged_line(data, sep) or _first_line(exc)
            raise DataError(f"{self.path}: cannot be parsed as CSV (separator {sep!r}): {problem}") from None
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
        parsed = parse_dates(raw, self.cfg.date_format, f"{self.path}: column {name!r}", f"{self.where}.date_format")
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
        # Finite in float64 is not finite in float32 (1e39 -> inf): refuse, in any mode, as the wrong value it is.
        huge = (values.is_finite() & (values.abs() > FLOAT32_MAX)).fill_null(False).arg_true()
        if len(huge):
            row = int(huge[0])
            raise DataError(
                f"{self.path}: column {raw.name!r} line {_line(row)}: {raw[row]!r} is beyond the float32 range "
                f"(magnitude at most {FLOAT32_MAX:.4g}) the series is stored in; rescale the column"
            )
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
