"""Lazy name -> class registries, one per kind of plug-in (datasets, models, passes).

Entries are dotted paths so that importing the registry imports nothing heavy, and an
optional dependency of one plug-in (e.g. CUDA kernels) never breaks another.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from pathlib import Path
from typing import Any

from seqcomp.errors import ConfigError


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
                f"{where}: unknown {self.kind} {name!r}; valid {self.plural}: {', '.join(self.names())}"
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

    Range checks live in the dataclass's ``__post_init__``; their ValueError is re-raised as a
    ConfigError that carries the key path ``where``.
    """
    params = dict(params or {})
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields)) or '(none)'}"
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def check(condition: bool, key: str, message: str) -> None:
    """Range check for config dataclasses: raises ValueError naming ``key``."""
    if not condition:
        raise ValueError(f"{key}: {message}")
