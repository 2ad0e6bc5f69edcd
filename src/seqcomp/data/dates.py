"""Read a column of timestamps with one format for the whole column, never a guess per row.

polars infers a format from the first values, so ``07/01/2016 00:00`` written month-first is
read day-first until the first day above 12, and the file fails far from the cause (or, if no
day is above 12, not at all). Here a format is either given (``date_format``) or inferred from
every row: each candidate format whose shape fits the first value is tried on the whole
column, a column that two formats both read into different times is refused as ambiguous, and
a column no candidate reads fails at the line where the best candidate stops.
"""

from __future__ import annotations

import re

import polars as pl

from seqcomp.errors import DataError

_YEAR_FIRST = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d")
_DAY_OR_MONTH_FIRST = tuple(
    f"{a}{sep}{b}{sep}{year}" for sep in "/-." for year in ("%Y", "%y") for a, b in (("%d", "%m"), ("%m", "%d"))
)
_TIMES = ("", " %H:%M", " %H:%M:%S", " %H:%M:%S%.f", "T%H:%M", "T%H:%M:%S", "T%H:%M:%S%.f")
CANDIDATE_FORMATS = tuple(d + t for d in _YEAR_FIRST + _DAY_OR_MONTH_FIRST for t in _TIMES)
# What each directive may match: stricter than chrono (which reads "16" with %Y as the year 16).
_FIELDS = {"%Y": r"\d{4}", "%y": r"\d{2}", "%m": r"\d{1,2}", "%d": r"\d{1,2}", "%H": r"\d{1,2}",
           "%M": r"\d{2}", "%S": r"\d{2}", "%.f": r"\.\d{1,9}"}


def _shape(fmt: str) -> str:
    """The regular expression of the text ``fmt`` writes, e.g. ``%d/%m/%Y`` -> ``\\d{1,2}/\\d{1,2}/\\d{4}``."""
    return "".join(_FIELDS.get(part, re.escape(part)) for part in re.split(r"(%\.f|%[A-Za-z])", fmt) if part)


def _read(text: pl.Series, fmt: str) -> pl.Series:
    """``text`` parsed with ``fmt``; null where a value does not have the format's exact shape."""
    parsed = text.str.to_datetime(format=fmt, strict=False)
    return parsed.set(~text.str.contains(f"^{_shape(fmt)}$").fill_null(False), None)


def _order(fmt: str) -> str:
    return "day-first" if fmt.index("%d") < fmt.index("%m") else "month-first"


def _fail(origin: str, text: pl.Series, row: int, detail: str) -> DataError:
    return DataError(f"{origin} line {row + 2}: cannot parse {text[row]!r} as a date{detail}")


def parse_dates(raw: pl.Series, fmt: str | None, origin: str, key: str) -> pl.Series:
    """Timestamps of ``raw`` (text) read with ``fmt``, or with the one format inferred from every row.

    ``origin`` names the file and column in messages, ``key`` the config key that sets the format.
    """
    text = raw.str.strip_chars()
    if fmt is not None:
        parsed = text.str.to_datetime(format=fmt, strict=False)
        bad = parsed.is_null().arg_true()
        if len(bad):
            raise _fail(origin, text, int(bad[0]), f" in the format {fmt!r} ({key})")
        return parsed
    first = text[0] or ""
    fits, best, best_row = [], [], 0  # formats reading every row; else those reading the most leading rows
    for candidate in (f for f in CANDIDATE_FORMATS if re.fullmatch(_shape(f), first)):
        parsed = _read(text, candidate)
        bad = parsed.is_null().arg_true()
        if not len(bad):
            fits.append((candidate, parsed))
        elif int(bad[0]) > best_row or not best:
            best, best_row = [candidate], int(bad[0])
        elif int(bad[0]) == best_row:
            best.append(candidate)
    if fits:
        return _one_reading(fits, text, origin, key)
    if re.match(r"\d{4}\D", first):  # year first (unambiguous): polars' own formats, e.g. with a UTC offset
        parsed = text.str.to_datetime(strict=False)
        if not parsed.is_null().any():
            return parsed
    named = " or ".join(repr(f) for f in best)
    detail = (f" in the format {named}, which reads the lines before it, and no one format reads every row"
              if best else " in any format tried")
    raise _fail(origin, text, best_row, f"{detail}; set {key} (a strftime format, e.g. '%Y-%m-%d %H:%M:%S')")


def _one_reading(fits: list[tuple[str, pl.Series]], text: pl.Series, origin: str, key: str) -> pl.Series:
    """The parsed column if every fitting format reads it into the same times; else refuse."""
    (fmt, parsed), *others = fits
    for other, times in others:
        differ = (parsed != times).arg_true()
        if len(differ):
            examples = " and ".join(repr(text[int(i)]) for i in differ[:2])
            raise DataError(
                f"{origin}: ambiguous dates: both {fmt!r} ({_order(fmt)}) and {other!r} ({_order(other)}) "
                f"read every row, e.g. {examples}; set {key} to the format meant"
            )
    return parsed
