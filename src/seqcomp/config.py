"""Load, validate and resolve an experiment config before any job runs.

Two layers: the JSON schema (workflow/schemas/config.schema.yaml) checks structure and fills
defaults; then each plug-in's Config dataclass checks its own keys, and cross-field checks
(every window fits every split) run against the real series length. Every error is a
ConfigError naming the key path, and the file and line that set it when the config came from
files (seqcomp.config_files reads them, bounding aliases and refusing repeated keys), so a
typo fails at DAG build time, not an hour later.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from seqcomp import PROJECT_ROOT
from seqcomp.config_files import Locations, check_size, read_config_files
from seqcomp.config_pretrain import check_pretrain, expand_transfer, targets
from seqcomp.model_entries import model_axes, model_params, train_settings
from seqcomp.config_schema import SCHEMA_PATH, located, validate_schema
from seqcomp.errors import ConfigError, SeqcompError
from seqcomp.io import write_json


def _resolve_plugins(cfg: dict[str, Any]) -> None:
    """Give every model and pass an explicit kind and check its keys with its Config dataclass."""
    from seqcomp.compress import pass_config
    from seqcomp.data import dataset_config
    from seqcomp.models import model_config

    for name, entry in cfg["datasets"].items():
        params = {k: v for k, v in entry.items() if k not in ("kind", "split")}
        dataset_config(entry["kind"], params, where=f"datasets.{name}")
    for name, entry in cfg["models"].items():
        entry.setdefault("kind", name)
        model_config(entry["kind"], model_params(cfg, name), where=f"models.{name}")
    for name, entry in cfg["passes"].items():
        entry.setdefault("kind", name)
        params = {k: v for k, v in entry.items() if k != "kind"}
        pass_config(entry["kind"], params, where=f"passes.{name}")


def dataset_windows(cfg: dict[str, Any], dataset: str, lookbacks: list[int], base_dir: Path = Path(".")) -> list[tuple[int, int]]:
    """(lookback, horizon) pairs a dataset runs at: a sample dataset's own fixed shape
    (generated classification tasks), else every lookback with every configured horizon."""
    from itertools import product

    from seqcomp.data import sample_shape

    shape = sample_shape(cfg["datasets"][dataset], base_dir, f"datasets.{dataset}")
    return [shape] if shape is not None else list(product(lookbacks, cfg["horizons"]))


def _check_series(cfg: dict[str, Any], base_dir: Path) -> None:
    """Load every series dataset as its data job would (parse, split, fit the scaler), so a bad
    value or a constant channel fails ``validate`` and the DAG build, not a job."""
    from seqcomp.data import check_series

    for name, entry in cfg["datasets"].items():
        check_series(entry, base_dir, f"datasets.{name}")


def _check_windows_fit(cfg: dict[str, Any], base_dir: Path) -> None:
    """Every (lookback, horizon) must leave at least one window in every split of every dataset."""
    from seqcomp.data import window_counts

    lookbacks = sorted({lb for model in cfg["models"] for lb in model_axes(cfg, model)[0]})
    for name in targets(cfg):  # a pre-training corpus has its own check (seqcomp.config_pretrain)
        entry = cfg["datasets"][name]
        for lookback, horizon in dataset_windows(cfg, name, lookbacks, base_dir):
            counts = window_counts(entry, base_dir, lookback, horizon, where=f"datasets.{name}")
            empty = [split for split, n in counts.items() if n < 1]
            if empty:
                raise ConfigError(
                    f"lookbacks/horizons: lookback {lookback} + horizon {horizon} leaves no "
                    f"{'/'.join(empty)} window in dataset {name!r}; "
                    f"shorten the windows or change datasets.{name}.split",
                    ("lookbacks",),
                )


def _check_train(cfg: dict[str, Any]) -> None:
    """Each model's train settings (global ones with its overrides): the global batch must split
    evenly over ``devices`` processes. Named where the model overrides either key, else globally."""
    from seqcomp.train.ddp import local_batch_size

    keys = {"batch_size", "devices"}
    for name, entry in cfg["models"].items():
        own = entry.get("train", {}).keys() & keys
        where = f"models.{name}.train" if own else "train"
        if "transfer" in entry and entry["transfer"]["regime"] in ("few_shot", "full"):  # a generated entry
            where = "pretrain.transfer.train" if cfg["pretrain"]["transfer"].get("train", {}).keys() & keys else where
        local_batch_size(train_settings(cfg, name), where=where)
    pre = cfg.get("pretrain")
    for name in pre["models"] if pre else []:
        own = pre.get("train", {}).keys() & keys
        local_batch_size({**train_settings(cfg, name), **pre.get("train", {})},
                         where="pretrain.train" if own else f"models.{name}.train")


def _check_key(cfg: dict[str, Any], base_dir: Path) -> str:
    """What the plug-in and window checks depend on: the config, the package's code and schema,
    and the size and mtime of every CSV the config names."""
    digest = hashlib.sha256(canonical_json(cfg).encode())
    digest.update(str(base_dir.resolve()).encode())
    for path in sorted((PROJECT_ROOT / "src" / "seqcomp").rglob("*.py")) + [SCHEMA_PATH]:
        digest.update(path.read_bytes())
    for entry in cfg["datasets"].values():
        if "path" in entry:
            csv = base_dir / entry["path"]
            stat = csv.stat() if csv.is_file() else None
            digest.update(f"{csv.resolve()}:{stat and (stat.st_size, stat.st_mtime_ns)}".encode())
    return digest.hexdigest()


def load_config(
    source: str | Path | list[str | Path] | dict[str, Any],
    base_dir: str | Path = ".",
    memo_dir: str | Path | None = None,
    files: list[str | Path] | None = None,
) -> dict[str, Any]:
    """Read (if a path or a --configfile list), validate and resolve a config; relative data
    paths resolve from ``base_dir``.

    ``files``: with a config Snakemake already read and merged, the files it read, checked
    here (aliases, repeated keys: seqcomp.config_files) and used to name the file and line of a
    refused key. The plug-in checks import every model module, hence torch (2-4 s), and
    Snakemake builds the DAG on every call, including a no-op one. With ``memo_dir`` the
    resolved config is kept in ``memo_dir/<name>.json`` under a key of everything the checks
    read (:func:`_check_key`), so an unchanged config is not checked twice; any edit of the
    config, the package or a CSV's size/mtime checks it again.
    """
    locations: Locations = {}
    if isinstance(source, (str, Path, list)):
        source, locations = read_config_files(source if isinstance(source, list) else [source])
    elif files:
        locations = read_config_files(list(files))[1]
    try:
        check_size(source)
        return _checked(source, Path(base_dir), memo_dir, locations)
    except ConfigError as exc:
        if exc.key is None or not located(exc.key, locations):
            raise
        raise ConfigError(located(exc.key, locations) + str(exc), exc.key) from None


def _checked(source: dict[str, Any], base: Path, memo_dir: str | Path | None, locations: Locations) -> dict[str, Any]:
    cfg = validate_schema(source, locations)
    if cfg["published"]:  # cheap (one small YAML file), so checked on every load, memo or not
        from seqcomp.summary.published import load_published

        load_published(base / cfg["published"])
    memo = Path(memo_dir) / f"{cfg['name']}.json" if memo_dir is not None else None
    if memo is not None:
        key = _check_key(cfg, base)
        if memo.is_file():
            try:
                kept = json.loads(memo.read_text())
            except json.JSONDecodeError:
                kept = {}
            if kept.get("key") == key:
                return kept["config"]
    expand_transfer(cfg, base)
    _check_train(cfg)
    _resolve_plugins(cfg)
    _check_series(cfg, base)
    _check_windows_fit(cfg, base)
    check_pretrain(cfg, base)
    if memo is not None:
        write_json(memo, {"key": key, "config": cfg})
    return cfg


def canonical_json(obj: Any) -> str:
    """Stable JSON (sorted keys): used as Snakemake params so only real changes trigger reruns."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


__all__ = ["ConfigError", "SeqcompError", "SCHEMA_PATH", "load_config", "train_settings", "canonical_json"]
