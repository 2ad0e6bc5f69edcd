"""Data stage shell: build a dataset entry's source, run the core (``data/core.py``) and write
``series.parquet`` and ``meta.json``, each atomically (a failed job leaves neither half-written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqcomp.data import build_source, sample_shape
from seqcomp.data.core import prepare_samples, prepare_series
from seqcomp.io import atomic_path, write_json


def run_data(entry: dict[str, Any], out_dir: str | Path, base_dir: str | Path = ".", name: str = "dataset") -> dict:
    """Write ``series.parquet`` and ``meta.json`` for one config dataset entry into ``out_dir``;
    returns the meta.json record."""
    where = f"datasets.{name}"
    source = build_source(entry, Path(base_dir), where)
    if sample_shape(entry, Path(base_dir), where) is not None:
        table, meta = prepare_samples(source, entry, name)
    else:
        table, meta = prepare_series(source, entry, name, where)
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "series.parquet") as tmp:
        table.write_parquet(tmp)
    write_json(out_dir / "meta.json", meta)
    return meta
