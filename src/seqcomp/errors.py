"""The one exception type users see: a message that names the file, key or column at fault."""

from __future__ import annotations

import math
import re
import reprlib
from typing import Any

# The most characters of one value an error message shows: a config value may be a long string
# or a huge (alias-expanded) structure, and the message must stay readable and cheap to build.
SHOWN_CHARS = 200


class SeqcompError(Exception):
    """A user-facing error (bad config, bad data, impossible request).

    The CLI prints its message without a traceback; anything else is a bug and keeps its
    traceback.
    """


class ConfigError(SeqcompError):
    """A config value is missing, unknown or out of range; the message names its key path.

    ``key``: that path as a tuple (``("models", "lstm", "hidden")``) where the raiser knows it,
    so that seqcomp.config can add the file and line the key was set at.
    """

    def __init__(self, message: str, key: tuple[str, ...] | None = None):
        super().__init__(message)
        self.key = key


class DataError(SeqcompError):
    """Input data is unusable; the message names the file and the column or row."""


def _bounded_repr() -> reprlib.Repr:
    # reprlib stops at a few items per level and a few levels deep, so even a structure of a
    # billion shared references is shown after reading a handful of them.
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 6, 6
    r.maxstring = r.maxother = r.maxlong = SHOWN_CHARS
    return r


_REPR = _bounded_repr()


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, at most SHOWN_CHARS characters (cut with '...')."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int beyond Python's 4300-digit str limit
        text = f"<an integer of {value.bit_length()} bits>" if isinstance(value, int) else f"<a {type(value).__name__}>"
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def cut(text: str, limit: int = 2 * SHOWN_CHARS) -> str:
    """``text`` (a message built elsewhere, e.g. by a plug-in) cut to ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def type_hint(value: Any, wanted: str) -> str:
    """What to write instead of ``value`` where ``wanted`` ('an integer', 'a number', ...) belongs."""
    if isinstance(value, float) and value.is_integer() and "integer" in wanted:
        return f"write {shown(int(value))}, not {shown(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return "write a finite number"
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+[eE][-+]?\d+", value.strip()) and "number" in wanted:
        return "YAML reads a number in e-notation without a dot as text: write it with one, as in 1.0e-3"
    if isinstance(value, bool):
        return f"write {wanted}, not {str(value).lower()}"
    if isinstance(value, str) and ("number" in wanted or "integer" in wanted):
        try:
            float(value)
            return "write it without quotes"
        except (TypeError, ValueError):
            pass
    if "list" in wanted and not isinstance(value, list):
        return f"write a list, as in [{shown(value)}]"
    return f"write {wanted}"
