"""Load, validate and resolve an experiment config before any job runs.

Two layers: the JSON schema (workflow/schemas/config.schema.yaml) checks structure and fills
defaults; then each plug-in's Config dataclass checks its own keys, and cross-field checks
(every window fits every split) run against the real series length. Every error is a
ConfigError naming the key path, so a typo fails at DAG build time, not an hour later.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from seqcomp.errors import ConfigError, SeqcompError
from seqcomp.io import write_json

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = PROJECT_ROOT / "workflow" / "schemas" / "config.schema.yaml"
# Keys of a model entry that are not the architecture's hyper-parameters: ``kind`` names it,
# ``train`` overrides train settings, ``lookbacks``/``seeds`` override the grid's axes.
# (``revin`` is a model-level option handled by seqcomp.models.)
NON_PARAM_MODEL_KEYS = ("kind", "train", "lookbacks", "seeds")


def _validator_filling_defaults() -> type:
    """A Draft 2020-12 validator that also writes each property's ``default`` into the instance."""
    base = jsonschema.Draft202012Validator
    validate_props = base.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):  # noqa: ANN001 - jsonschema hook
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, props, instance, schema)

    return jsonschema.validators.extend(base, {"properties": properties})


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _schema_error_message(error: jsonschema.ValidationError) -> str:
    best = jsonschema.exceptions.best_match([error])
    if best.validator == "additionalProperties":
        allowed = sorted(best.schema.get("properties", {}))
        return f"{best.message}; allowed keys here: {', '.join(allowed)}"
    if best.validator == "enum":
        return f"{best.instance!r} is not one of {best.validator_value}"
    return best.message


def validate_schema(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check ``cfg`` against the schema and return a copy with defaults filled in."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    cfg = copy.deepcopy(cfg)
    errors = sorted(_validator_filling_defaults()(schema).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {_key_path(e)}: {_schema_error_message(e)}" for e in errors]
        raise ConfigError("config does not match workflow/schemas/config.schema.yaml:\n" + "\n".join(lines))
    return cfg


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
    for name, entry in cfg["datasets"].items():
        for lookback, horizon in dataset_windows(cfg, name, lookbacks, base_dir):
            counts = window_counts(entry, base_dir, lookback, horizon, where=f"datasets.{name}")
            empty = [split for split, n in counts.items() if n < 1]
            if empty:
                raise ConfigError(
                    f"lookbacks/horizons: lookback {lookback} + horizon {horizon} leaves no "
                    f"{'/'.join(empty)} window in dataset {name!r}; "
                    f"shorten the windows or change datasets.{name}.split"
                )


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


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """'line L, column C: problem (context at line L')', 1-based, without yaml's source excerpts."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return str(exc)
    text = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    context = getattr(exc, "context_mark", None)
    if context is not None and exc.context:
        text += f" ({exc.context} at line {context.line + 1})"
    return text


def load_config(
    source: str | Path | dict[str, Any], base_dir: str | Path = ".", memo_dir: str | Path | None = None
) -> dict[str, Any]:
    """Read (if a path), validate and resolve a config; relative data paths resolve from ``base_dir``.

    The plug-in checks import every model module, hence torch (2-4 s), and Snakemake builds
    the DAG on every call, including a no-op one. With ``memo_dir`` the resolved config is
    kept in ``memo_dir/<name>.json`` under a key of everything the checks read
    (:func:`_check_key`), so an unchanged config is not checked twice; any edit of the config,
    the package or a CSV's size/mtime checks it again.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            source = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    cfg = validate_schema(source)
    base = Path(base_dir)
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
    _resolve_plugins(cfg)
    _check_series(cfg, base)
    _check_windows_fit(cfg, base)
    if memo is not None:
        write_json(memo, {"key": key, "config": cfg})
    return cfg


def model_params(cfg: dict[str, Any], model: str) -> dict[str, Any]:
    """A model entry's hyper-parameters (and model-level options such as ``revin`` and ``cycle``)."""
    return {k: v for k, v in cfg["models"][model].items() if k not in NON_PARAM_MODEL_KEYS}


def model_axes(cfg: dict[str, Any], model: str) -> tuple[list[int], list[int]]:
    """(lookbacks, seeds) this model runs at: its own override, else the config's."""
    entry = cfg["models"][model]
    return entry.get("lookbacks", cfg["lookbacks"]), entry.get("seeds", cfg["seeds"])


def train_settings(cfg: dict[str, Any], model: str) -> dict[str, Any]:
    """The global train settings with the model's own overrides applied."""
    return {**cfg["train"], **cfg["models"][model].get("train", {})}


def canonical_json(obj: Any) -> str:
    """Stable JSON (sorted keys): used as Snakemake params so only real changes trigger reruns."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


__all__ = ["ConfigError", "SeqcompError", "load_config", "train_settings", "canonical_json"]
