"""The one markdown table writer and the one page header of every generated page."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any


def short(x: Any) -> str:
    """A summary table's cell: floats to 4 significant digits, nothing for a missing value."""
    if x is None:
        return ""
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def readable(x: Any) -> str:
    """A micro-benchmark table's cell: a dash for a missing value, thousands separators from 1,000
    up, scientific notation below 0.001, else 4 significant digits."""
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, float):
        return str(x)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3e}" if 0 < abs(x) < 1e-3 else f"{x:.4g}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cell: Callable[[Any], str] = short) -> str:
    """A GitHub-flavoured markdown table, each cell written by ``cell``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def duration(seconds: float) -> str:
    """``1 h 03 min`` or ``3 min 30 s``."""
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else f"{m} min {s:02d} s"


def header(title: str, source: str, by: str, commands: list[str], facts: list[str]) -> str:
    """A generated page's opening: its title, what it was generated from (``source``) and by what
    (``by``), the shell ``commands`` that reproduce it, and its provenance ``facts`` (markdown lines)."""
    return "\n".join([f"# {title}\n", f"Generated from {source} by {by}; do not edit by hand. To reproduce:\n",
                      "```sh", *commands, "```\n", *facts])
