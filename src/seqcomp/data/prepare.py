"""Split a dataset chronologically, fit the scaler on train rows only, write parquet + JSON.

The parquet holds the *scaled* series (metrics are reported on scaled data, as published
tables do); meta.json holds the scaler statistics (to map forecasts back), the split borders
and the source's identity (file hash or generator parameters) for provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqcomp.data import build_source
from seqcomp.data.split import split_borders
from seqcomp.errors import DataError
from seqcomp.io import atomic_path, write_json


def prepare(entry: dict[str, Any], out_dir: str | Path, base_dir: str | Path = ".", name: str = "dataset") -> dict:
    """Write ``series.parquet`` and ``meta.json`` for one config dataset entry into ``out_dir``."""
    where = f"datasets.{name}"
    source = build_source(entry, Path(base_dir), where)
    frame, load_info = source.load()
    channels = [c for c in frame.columns if c != "date"]
    borders = split_borders(entry.get("split"), frame.height, where=f"{where}.split")
    values = frame.select(channels).to_numpy().astype(np.float64)  # (T, C)
    train = values[: borders[0]]
    mean, std = train.mean(axis=0), train.std(axis=0)
    flat = [c for c, s in zip(channels, std) if s == 0]
    if flat:
        raise DataError(f"{where}: channel(s) {flat} are constant over the train split; drop them ({where}.columns)")
    scaled = ((values - mean) / std).astype(np.float32)
    out = frame.select("date").with_columns([pl.Series(c, scaled[:, i]) for i, c in enumerate(channels)])
    meta = {
        "dataset": name,
        "kind": entry["kind"],
        "source": source.identity(),
        "channels": channels,
        "n_rows": frame.height,
        "borders": list(borders),
        "scaler": {"mean": mean.tolist(), "std": std.tolist(), "fitted_on": "train"},
        **load_info,
    }
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "series.parquet") as tmp:
        out.write_parquet(tmp)
    write_json(out_dir / "meta.json", meta)
    return meta
