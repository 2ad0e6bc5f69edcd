"""Lazy name -> class registries, one per kind of plug-in (datasets, models, passes).

Entries are dotted paths so that importing the registry imports nothing heavy, and an
optional dependency of one plug-in (e.g. CUDA kernels) never breaks another.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import types
import typing
from pathlib import Path
from typing import Any

from seqcomp.errors import ConfigError, cut, shown, type_hint


class Registry:
    """Maps a name to ``"package.module:Attribute"`` and imports it on first use."""

    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind
        self._entries = dict(entries)

    @property
    def plural(self) -> str:
        return self.kind + ("es" if self.kind.endswith("s") else "s")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def _check(self, name: str, where: str) -> str:
        if name not in self._entries:
            raise ConfigError(
                f"{where}: unknown {self.kind} {shown(name)}; valid {self.plural}: {', '.join(self.names())}",
                tuple(where.split(".")),
            )
        return self._entries[name]

    def get(self, name: str, where: str = "config") -> Any:
        module, _, attr = self._check(name, where).partition(":")
        return getattr(importlib.import_module(module), attr)

    def module(self, name: str) -> str:
        """The dotted module of an entry (``seqcomp.models.lstm``), without importing it."""
        return self._check(name, self.kind).partition(":")[0]

    def source_file(self, name: str) -> Path:
        """The file that defines an entry, so Snakemake can rerun its jobs when it is edited.

        Found without importing it: the Snakefile asks this for every job while building the
        DAG, and importing a model would import torch (seconds) on every no-op run.
        """
        module = self.module(name)
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ConfigError(f"{self.kind} {name!r}: module {module} not found")
        return Path(spec.origin)


def make_config(cls: type, params: dict[str, Any] | None, where: str) -> Any:
    """Build a plug-in's config dataclass from a config mapping, naming any unknown key.

    Each value must be of its field's annotated type (``int``, ``float | None``, ``list[int]``,
    ...): a float where an int belongs, a bool for a number or a string for either is refused
    here, naming the key, rather than becoming a TypeError in a job. Range checks live in the
    dataclass's ``__post_init__``; their ValueError is re-raised as a ConfigError that carries
    the key path ``where``.
    """
    params = dict(params or {})
    fields = {f.name for f in dataclasses.fields(cls)}
    keys = tuple(where.split("."))
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {cut(', '.join(unknown))}; valid keys: {', '.join(sorted(fields)) or '(none)'}",
            keys + (str(unknown[0]),),
        )
    hints = typing.get_type_hints(cls)
    for name, value in params.items():
        if (miss := type_miss(value, hints[name])) is not None:
            at, part, wanted = miss
            raise ConfigError(f"{'.'.join((where, name) + at)}: {shown(part)} is not {wanted}; {type_hint(part, wanted)}",
                              keys + (name,) + at)
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        field = str(exc).partition(":")[0]
        raise ConfigError(f"{where}: {cut(str(exc))}", keys + ((field,) if field in fields else ())) from None


_SCALARS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
Miss = tuple[tuple[str, ...], Any, str]  # (key path below the value, the part that misses, what it should be)


def _wanted(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_wanted(a) for a in args)
    if origin is list:
        return f"a list of {_wanted(args[0])}" if args else "a list"
    return "a mapping" if origin is dict else _SCALARS.get(hint, getattr(hint, "__name__", str(hint)))


def _items_fit(pairs: Any, hint: Any) -> Miss | None:
    for key, item in pairs:
        if (miss := type_miss(item, hint)) is not None:
            return (str(key),) + miss[0], miss[1], miss[2]
    return None


def type_miss(value: Any, hint: Any) -> Miss | None:
    """None if ``value`` is of type ``hint``, else where and how it is not. An int is a float
    too (1 for 1.0); a bool is no number; annotations other than these (Any, Literal, classes)
    accept anything."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        misses = [type_miss(value, a) for a in args]
        if any(m is None for m in misses):
            return None
        deepest = max(misses, key=lambda m: len(m[0]))  # a list of a wrong item: name the item
        return deepest if deepest[0] else ((), value, _wanted(hint))
    if hint in _SCALARS:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = {int: isinstance(value, int) and number, float: number and math.isfinite(value)}.get(
            hint, isinstance(value, hint))
        return None if ok else ((), value, _SCALARS[hint])
    if origin is list:
        return ((), value, _wanted(hint)) if not isinstance(value, list) else \
            _items_fit(enumerate(value), args[0]) if args else None
    if origin is dict:
        return ((), value, "a mapping") if not isinstance(value, dict) else \
            _items_fit(value.items(), args[1]) if args else None
    return None


def check(condition: bool, key: str, message: str) -> None:
    """Range check for config dataclasses: raises ValueError naming ``key``."""
    if not condition:
        raise ValueError(f"{key}: {message}")
