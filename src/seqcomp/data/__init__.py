"""Datasets: sources (one file per kind, one registry), chronological splits, scaling, windows.

A source turns its config into a polars DataFrame with a ``date`` column and numeric channel
columns. ``prepare`` splits it, fits the scaler on train rows only and writes parquet + JSON;
windows are cut at training time (``windows.py``), never materialised on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqcomp.registry import Registry, make_config

DATASETS = Registry(
    "dataset kind",
    {
        "csv": "seqcomp.data.csv:CSVSource",
        "synthetic": "seqcomp.data.synthetic:SyntheticSource",
    },
)


def dataset_config(kind: str, params: dict[str, Any], where: str) -> Any:
    return make_config(DATASETS.get(kind, where).Config, params, where)


def build_source(entry: dict[str, Any], base_dir: Path, where: str = "dataset") -> Any:
    """The source object of a config's dataset entry (kind + its own keys; ``split`` is not its business)."""
    params = {k: v for k, v in entry.items() if k not in ("kind", "split")}
    cls = DATASETS.get(entry["kind"], where)
    return cls(make_config(cls.Config, params, where), base_dir=base_dir, where=where)


def dataset_length(entry: dict[str, Any], base_dir: Path, where: str = "dataset") -> int:
    """Number of rows the source yields, cheaply (used to check windows fit at config time)."""
    return build_source(entry, base_dir, where).n_rows()
