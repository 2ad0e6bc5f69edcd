"""A CSV file with a date column and numeric channels (the ETT files, or any like them).

Parsing is strict and explicit: everything is read as text first, then dates and numbers are
parsed column by column, so every problem is reported with the file, the column and the first
offending line, never as a traceback from inside polars. A gzip, bzip2 or xz file is read
as the CSV it holds, whatever its name; the separator is the header's most frequent of
``, ; tab |`` unless set; header names are read by the csv module (polars would rename a
duplicate, hiding it) and stripped of surrounding spaces; blank lines at the end are dropped,
one in the middle is refused; dates are read with one format for the whole column
(``dates.py``) and their steps checked for gaps (``steps.py``, the ``gaps`` key).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import lzma
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from seqcomp.data.dates import parse_dates
from seqcomp.data.steps import TimeAxis, time_axis
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
    gaps: str = "error"  # missing time steps: "error", "fill" (insert rows, forward-filled) or "allow"

    def __post_init__(self) -> None:
        check(bool(self.path), "path", "is required for a csv dataset")
        check(self.missing in ("error", "ffill"), "missing", f"must be 'error' or 'ffill', got {self.missing!r}")
        check(self.gaps in GAPS, "gaps", f"must be one of {', '.join(GAPS)}, got {self.gaps!r}")
        check(self.separator is None or len(self.separator) == 1, "separator",
              f"must be one character, got {self.separator!r}")
        check(self.date_format is None or "%" in self.date_format, "date_format",
              f"must be a strftime format such as '%Y-%m-%d %H:%M:%S', got {self.date_format!r}")


GAPS = ("error", "fill", "allow")
BOM = "\ufeff"  # a UTF-8 byte order mark, which polars drops from the first name
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


def _steps(n: int) -> str:
    return f"{n} step{'s' * (n != 1)}"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _separator(text: str) -> str:
    """The header's most frequent candidate separator (a comma on a tie or with none)."""
    header = text.split("\n", 1)[0]
    return max(SEPARATORS, key=lambda sep: (header.count(sep), sep == ","))


def _without_blank_tail(text: str) -> str:
    """``text`` without the blank (or whitespace-only) lines at its end; ends in one newline."""
    lines = text.split("\n")
    end = len(lines)
    while end > 1 and not lines[end - 1].strip():
        end -= 1
    return text if end == len(lines) - 1 else "\n".join(lines[:end]) + "\n"


def _blank_line(text: str) -> int | None:
    """1-based number of the first blank line (the text has none at its end)."""
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        if not line.strip():
            return number
    return None


_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+(?:[eE][+-]?\d+)?")


def _decimal_comma_hint(value: str, sep: str) -> str:
    """A hint for ``1,5`` in a ``;``-separated file: the European spreadsheet export, whose decimal
    commas are refused rather than guessed (``1,500`` may be a thousand and a half elsewhere)."""
    if sep != ";" or not _DECIMAL_COMMA.fullmatch(value.strip()):
        return ""
    return f"; decimal commas are not read: write {value.strip().replace(',', '.')} (or convert the file)"


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

    def _read_text_table(self) -> tuple[pl.DataFrame, str]:
        """The table as text columns, and its separator."""
        data = self._text_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8 CSV") from None
        trimmed = _without_blank_tail(text)
        blank = _blank_line(trimmed)
        if blank is not None:
            raise DataError(f"{self.path}: line {blank} is blank; remove it (blank lines are ignored only at the "
                            "end of the file, never between rows)")
        data = data if trimmed is text else trimmed.encode()
        sep = self.cfg.separator or _separator(text)
        names = self._header(trimmed, sep)
        try:
            frame = pl.read_csv(io.BytesIO(data), separator=sep, infer_schema=False)
        except (pl.exceptions.PolarsError, ValueError) as exc:
            problem = _ragged_line(data, sep) or _first_line(exc)
            raise DataError(f"{self.path}: cannot be parsed as CSV (separator {sep!r}): {problem}") from None
        if frame.height == 0:
            raise DataError(f"{self.path}: has a header but no data rows")
        if len(names) == frame.width:  # polars' own names would rename a duplicate and keep spaces
            frame.columns = names
        return frame, sep

    def _header(self, text: str, sep: str) -> list[str]:
        """The header's names as written, stripped of surrounding spaces; each non-empty and unique."""
        try:
            names = [name.strip() for name in next(csv.reader(io.StringIO(text.removeprefix(BOM)), delimiter=sep), [])]
        except csv.Error:
            return []  # polars reports the malformed header, naming the problem
        seen: dict[str, int] = {}
        for column, name in enumerate(names, start=1):
            if not name:
                raise DataError(f"{self.path}: line 1: column {column} of the header has no name; name it or "
                                "drop the column (an index pandas wrote: save with index=False)")
            if name in seen:
                raise DataError(f"{self.path}: line 1: the header names {name!r} twice, in columns {seen[name]} "
                                f"and {column} (names are compared without surrounding spaces); rename one of them")
            seen[name] = column
        return names

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

    def _parse_channel(self, raw: pl.Series, sep: str) -> tuple[pl.Series, int]:
        text = raw.str.strip_chars()
        values = text.cast(pl.Float64, strict=False)
        # Non-empty text that is not a number is an error in any mode: it is not "missing".
        garbage = (values.is_null() & text.is_not_null() & (text != "")).arg_true()
        if len(garbage):
            row = int(garbage[0])
            raise DataError(f"{self.path}: column {raw.name!r} line {_line(row)}: {raw[row]!r} is not a number"
                            + _decimal_comma_hint(raw[row], sep))
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

    def _check_steps(self, axis: TimeAxis, raw: pl.Series) -> None:
        """Refuse off-grid rows (unless ``gaps: allow``) and gaps (with ``gaps: error``)."""
        if self.cfg.gaps == "allow" or axis.step is None:
            return
        key, origin, step = f"{self.where}.gaps", f"{self.path}: column {raw.name!r}", axis.step.text()
        off = axis.off_grid
        if len(off):
            row = int(off[0])
            after = f" (expected {axis.expected(row)} after line {_line(row - 1)})" if row else ""
            them = "them" if len(off) > 1 else "it"
            raise DataError(
                f"{origin} line {_line(row)}: {raw[row]!r} is off the {step} grid of the series' steps{after}; "
                f"{len(off)} row{'s' * (len(off) != 1)} off the grid: correct or drop {them}, or set {key}: allow "
                f"to keep {them} (windows and cycle phases then follow the timestamps as they are)"
            )
        gaps = axis.gaps
        if len(gaps) and self.cfg.gaps == "error":
            row = int(gaps[0])
            missing = int(axis.index[row] - axis.index[row - 1] - 1)
            raise DataError(
                f"{origin} line {_line(row)}: a gap in the {step} steps: expected {axis.expected(row)} after "
                f"{raw[row - 1]!r} (line {_line(row - 1)}), found {raw[row]!r} ({_steps(missing)} "
                f"missing); {len(gaps)} gap{'s' * (len(gaps) != 1)}, {_steps(axis.missing_steps())} missing in all. "
                f"Set {key}: fill to insert the missing rows (forward-filled), or {key}: allow to keep the series "
                "as it is (windows may then span gaps)"
            )

    def load(self) -> tuple[pl.DataFrame, dict]:
        """The parsed table (``date`` + float32 channels) and what was done to it (values filled,
        rows inserted at gaps)."""
        frame, sep = self._read_text_table()
        dates = self._parse_dates(frame)
        axis = time_axis(dates)
        self._check_steps(axis, frame[self.cfg.date_column])
        names = self.cfg.columns or [c for c in frame.columns if c != self.cfg.date_column]
        absent = [c for c in names if c not in frame.columns]
        if absent:
            raise DataError(f"{self.path}: column(s) {absent} not found ({self.where}.columns); columns are {frame.columns}")
        if not names:
            raise DataError(f"{self.path}: no channel columns besides the date column {self.cfg.date_column!r}")
        channels, filled = [], {}
        for name in names:
            series, n_filled = self._parse_channel(frame[name], sep)
            channels.append(series)
            if n_filled:
                filled[name] = n_filled
        table = pl.DataFrame([dates, *channels])
        if self.cfg.gaps == "fill" and len(axis.gaps):
            table = axis.filled(table)
        return table, {"filled_values": filled, "inserted_rows": table.height - frame.height}
