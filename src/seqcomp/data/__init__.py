"""Datasets: sources (one file per kind, one registry), chronological splits, scaling, windows.

Two shapes of source. A *series* source (csv, synthetic, ar, kernel_synth) turns its config into a polars
DataFrame with a ``date`` column and numeric channel columns; the data stage (``core.py``,
``stage.py``) splits it, fits the scaler on train rows only and writes parquet + JSON; windows are cut at training time
(``windows.py``), never materialised on disk. A series source may also offer
``optimal_mse_per_step(std, steps)`` (the error of the best possible forecast, recorded in
meta.json). A *sample* source (``task = "classification"``: selective_copying,
induction_heads; see ``tokens.py``) yields independent fixed-shape samples per split instead;
its lookback and horizon are its own (``sample_shape``), not the config's axes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqcomp.errors import ConfigError
from seqcomp.registry import Registry, make_config

DATASETS = Registry(
    "dataset kind",
    {
        "ar": "seqcomp.data.ar:ARSource",
        "csv": "seqcomp.data.csv:CSVSource",
        "induction_heads": "seqcomp.data.induction_heads:InductionHeads",
        "kernel_synth": "seqcomp.data.kernel_synth:KernelSynthSource",
        "selective_copying": "seqcomp.data.selective_copying:SelectiveCopying",
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
    source = build_source(entry, base_dir, where)
    if not hasattr(source, "n_rows"):
        raise ConfigError(f"{where}: a {entry['kind']} dataset is a set of samples, not a series: it has no rows "
                          "and serves only its own (lookback, horizon); see seqcomp.data.window_counts")
    return source.n_rows()


def sample_shape(entry: dict[str, Any], base_dir: Path, where: str = "dataset") -> tuple[int, int] | None:
    """(lookback, horizon) fixed by a sample dataset; None for a series (any window fits)."""
    source = build_source(entry, base_dir, where)
    if getattr(source, "task", "forecast") != "classification":
        return None
    if "split" in entry:
        raise ConfigError(
            f"{where}.split: a {entry['kind']} dataset has fixed sample counts (n_train, n_val, n_test), no split"
        )
    return source.shape


def check_series(entry: dict[str, Any], base_dir: Path, where: str = "dataset") -> None:
    """Refuse at config time (``validate``, the DAG build) what the data stage would refuse, before any job runs."""
    from seqcomp.data.core import fit_series  # lazy: the core imports polars; the core imports nothing of here

    if sample_shape(entry, base_dir, where) is None:
        fit_series(build_source(entry, base_dir, where), entry, where)


def window_counts(
    entry: dict[str, Any], base_dir: Path, lookback: int, horizon: int, where: str = "dataset"
) -> dict[str, int]:
    """Windows (series) or samples per split that a (lookback, horizon) job would see.

    A sample dataset serves only its own shape: any other pair is a ConfigError.
    """
    from seqcomp.data.split import count_windows, split_borders

    shape = sample_shape(entry, base_dir, where)
    if shape is None:
        borders = split_borders(entry.get("split"), dataset_length(entry, base_dir, where), f"{where}.split")
        return count_windows(borders, lookback, horizon)
    if (lookback, horizon) != shape:
        raise ConfigError(f"{where}: its samples have lookback {shape[0]} and horizon {shape[1]} "
                          f"(length and target tokens), not {lookback} and {horizon}")
    return build_source(entry, base_dir, where).counts()
