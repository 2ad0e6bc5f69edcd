"""What each Snakemake job gets: its output paths, its spec, the code it depends on, its GPUs.

The Snakefile stays declarative by asking this module. A job's *spec* is the slice of the
resolved config that affects it; Snakemake uses it as a ``params`` rerun trigger, so editing
one model's hyper-parameters reruns only that model's jobs. Code dependencies are listed as
inputs because Snakemake does not track modules a command imports (snakemake#2192).
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import product
from pathlib import Path
from typing import Any

from seqcomp import PROJECT_ROOT
from seqcomp.config import dataset_windows, model_axes, model_params, train_settings
from seqcomp.names import JOB_PATH, experiment_name

PKG = PROJECT_ROOT / "src" / "seqcomp"
PASSES_DIR = PKG / "compress" / "passes"  # one file per pass: a job depends only on its own (pass_files)
# What building the DAG writes (the checked-config memo, the code stamps): in Snakemake's own
# folder of the working directory, not under results/, so `snakemake -n` writes nothing there
# (a read-only or another user's results folder still plans) and `make clean` removes it.
CACHE_DIR = ".snakemake/seqcomp"


def results_dir(cfg: dict[str, Any]) -> str:
    return f"results/{cfg['name']}"


def paths(cfg: dict[str, Any]) -> dict[str, str]:
    """Output path patterns (Snakemake wildcards in braces), one per stage product."""
    r = results_dir(cfg)
    return {
        "data": f"{r}/data/{{dataset}}",
        # a job's MLflow calls, replayed into the store by the workflow (seqcomp.tracking); no rule reads them
        "journal": f"{r}/tracking/journal",
        "config": f"{r}/tracking/config.yaml",  # the resolved config, logged by every training run
        "train": f"{r}/train/{JOB_PATH}",
        "compress": f"{r}/compress/{JOB_PATH}/{{passname}}",
        "evaluate": f"{r}/evaluate/{JOB_PATH}/{{passname}}/metrics.json",
        "summary": f"{r}/summary",
        "plots": f"{r}/plots",
        "logs": f"{r}/logs",
    }


def grid(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (dataset, model, lookback, horizon, seed, pass) the config asks for.

    The pass wildcard is called ``passname`` because ``pass`` is a Python keyword.
    """
    keys = ("dataset", "model", "lookback", "horizon", "seed", "passname")
    points = []
    for dataset, model in product(cfg["datasets"], cfg["models"]):
        lookbacks, seeds = model_axes(cfg, model)
        for (lookback, horizon), seed, passname in product(dataset_windows(cfg, dataset, lookbacks), seeds, cfg["passes"]):
            points.append(dict(zip(keys, (dataset, model, lookback, horizon, seed, passname))))
    return points


def evaluation_targets(cfg: dict[str, Any]) -> list[str]:
    pattern = paths(cfg)["evaluate"]
    return [pattern.format(**point) for point in grid(cfg)]


def report_targets(cfg: dict[str, Any]) -> list[str]:
    pattern = paths(cfg)["compress"] + "/report.json"
    return [pattern.format(**point) for point in grid(cfg)]


def train_targets(cfg: dict[str, Any], filename: str) -> list[str]:
    """``filename`` (history.csv, run.json) of every training job, once each."""
    pattern = paths(cfg)["train"] + "/" + filename
    return sorted({pattern.format(**point) for point in grid(cfg)})


def data_spec(cfg: dict[str, Any], dataset: str) -> dict[str, Any]:
    return {"dataset": dataset, **cfg["datasets"][dataset]}


def train_spec(cfg: dict[str, Any], dataset: str, model: str, lookback: Any, horizon: Any, seed: Any) -> dict:
    return {
        "experiment": experiment_name(cfg["name"]),
        "dataset": dataset,
        "model": model,
        "kind": cfg["models"][model]["kind"],
        "params": model_params(cfg, model),
        "train": train_settings(cfg, model),
        "lookback": int(lookback),
        "horizon": int(horizon),
        "seed": int(seed),
    }


def train_gpus(cfg: dict[str, Any], model: str) -> int:
    """GPUs a training job asks the scheduler for: one unless the model trains on ``cpu`` or is
    fit without SGD (closed form, no trainable parameters: the fit never uses a GPU, and asking
    would hold one, or wait for one, for nothing).

    ``auto`` asks too: on a cluster it is how a job gets a GPU node to find one on.
    """
    from seqcomp.models import trains_by_sgd

    sgd = trains_by_sgd(cfg["models"][model]["kind"], model_params(cfg, model))
    return int(sgd and train_settings(cfg, model)["accelerator"] != "cpu")


def pass_spec(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    entry = cfg["passes"][name]
    return {"pass": name, "pass_kind": entry["kind"], "pass_params": {k: v for k, v in entry.items() if k != "kind"}}


def compress_spec(cfg: dict[str, Any], dataset: str, model: str, lookback: Any, horizon: Any, seed: Any, name: str) -> dict:
    base = {k: v for k, v in train_spec(cfg, dataset, model, lookback, horizon, seed).items() if k != "train"}
    return {**base, **pass_spec(cfg, name), "calibration": cfg["calibration"]}


def evaluate_spec(cfg: dict[str, Any], dataset: str, model: str, lookback: Any, horizon: Any, seed: Any, name: str) -> dict:
    base = compress_spec(cfg, dataset, model, lookback, horizon, seed, name)
    return {**{k: v for k, v in base.items() if k != "calibration"}, "evaluate": cfg["evaluate"]}


def code_files(stage: str, cfg: dict[str, Any] | None = None, model: str | None = None,
               dataset: str | None = None, passname: str | None = None) -> list[str]:
    """Package files (absolute paths) whose edit must rerun ``stage``.

    A job depends on its stage's code, on its own model's file (training, compression and
    evaluation) or its own dataset kind's file (data preparation), on its own pass's files
    (compression and evaluation: see :func:`pass_files`), and on the files of the data and
    models packages those import; not on other models, passes or dataset kinds, so editing
    one model or pass reruns only its jobs and adding a dataset kind retrains nothing.
    """
    from seqcomp.data import DATASETS
    from seqcomp.models import MODELS

    model_file = dataset_file = None
    if stage in ("train", "compress", "evaluate") and cfg is not None and model is not None:
        model_file = MODELS.source_file(cfg["models"][model]["kind"])
    if stage == "data" and cfg is not None and dataset is not None:
        dataset_file = DATASETS.source_file(cfg["datasets"][dataset]["kind"])
    passes = tuple(pass_files(cfg, passname)) if stage in ("compress", "evaluate") else ()
    return list(_code_files(stage, model_file, dataset_file, passes))


@lru_cache(maxsize=None)
def _code_files(stage: str, model_file: Path | None, dataset_file: Path | None,
                passes: tuple[Path, ...]) -> tuple[str, ...]:
    """:func:`code_files` once per distinct (stage, model file, dataset file, passes) of a DAG:
    a grid's jobs share a few of these, and listing and scanning the package per job made
    building a 2,400-job DAG take tens of seconds."""
    # cli.py is left out on purpose: it only parses arguments and dispatches to these modules.
    shared = ["__init__.py", "config.py", "registry.py", "io.py", "errors.py", "jobs.py", "artifacts.py",
              "names.py", "tracking/__init__.py"]
    stage_files = {
        "data": ["data/__init__.py", "data/core.py", "data/stage.py"],
        "train": ["data/windows.py", "train", "evaluate/metrics.py"],
        "compress": ["data/windows.py", "compress"],
        "evaluate": ["data/windows.py", "compress", "evaluate"],
        "summary": ["summary"],
    }[stage]
    files: list[Path] = [PKG / f for f in shared]
    for entry in stage_files:
        target = PKG / entry
        files += sorted(p for p in target.rglob("*.py") if PASSES_DIR not in p.parents) if target.is_dir() else [target]
    files += passes
    if dataset_file is not None:
        files.append(dataset_file)
    if model_file is not None:
        models = PKG / "models"
        files += [model_file, models / "__init__.py", models / "revin.py"]
    return tuple(sorted(str(p) for p in imported_closure(files)))


def code_stamp(stage: str, cfg: dict[str, Any] | None = None, model: str | None = None,
               dataset: str | None = None, passname: str | None = None, folder: str = f"{CACHE_DIR}/code") -> str:
    """One file standing for :func:`code_files` as a job's input: ``folder/<stage>-<id>.sha256``.

    Its content is the sha256 of those files' contents (and their list); it is rewritten only
    when that changes, with the newest source file's mtime, so a real edit reruns the jobs that
    depend on the file, a ``touch`` or a ``git checkout`` of the same content reruns nothing,
    and undoing an edit (content and mtime) leaves nothing to do. One input instead of ~40 per
    job keeps the console readable and the DAG cheap to build.
    """
    return _code_stamp(stage, tuple(code_files(stage, cfg, model, dataset, passname)), folder)


@lru_cache(maxsize=None)
def _code_stamp(stage: str, files: tuple[str, ...], folder: str) -> str:
    import hashlib
    import os

    from seqcomp.io import atomic_path

    digest = hashlib.sha256()
    for f in files:
        digest.update(f.encode() + b"\0" + Path(f).read_bytes() + b"\0")
    content = f"{digest.hexdigest()}\n" + "".join(f"{f}\n" for f in files)
    stamp = Path(folder) / f"{stage}-{hashlib.sha256(''.join(files).encode()).hexdigest()[:16]}.sha256"
    if not stamp.is_file() or stamp.read_text() != content:
        with atomic_path(stamp) as tmp:
            tmp.write_text(content)
        newest = max(Path(f).stat().st_mtime_ns for f in files)
        os.utime(stamp, ns=(newest, newest))
    return str(stamp)


def pass_files(cfg: dict[str, Any] | None, passname: str | None) -> list[Path]:
    """The files of configured pass ``passname`` and of every pass it runs, found without importing.

    A pass runs another by registry key: a nested entry ``{kind: ...}`` in its config (chain's
    steps) or a fixed key in its code (qat_sim and mixed_precision_sim build ``rtn_weight_sim``),
    and so on down. The rest of ``compress/`` (registry, quant/, stage) is every pass's code and
    is listed by :func:`code_files`. Without a pass, every pass's file.
    """
    from seqcomp.compress import PASSES

    if cfg is None or passname is None:
        return sorted(PASSES_DIR.glob("*.py"))
    kinds, todo = set(), [{"kind": passname, **cfg["passes"][passname]}]
    while todo:
        entry = todo.pop()
        if isinstance(entry, dict):
            if isinstance(entry.get("kind"), str) and entry["kind"] in PASSES and entry["kind"] not in kinds:
                kinds.add(entry["kind"])
                todo += [{"kind": key} for key in _nested_by_code(PASSES.source_file(entry["kind"]))]
            todo += [v for k, v in entry.items() if k != "kind"]
        elif isinstance(entry, list):
            todo += entry
    return [PASSES_DIR / "__init__.py", *sorted(PASSES.source_file(kind) for kind in kinds)]


# A pass building another by a fixed registry key: ``build_pass("rtn_weight_sim", ...)``.
_NESTED_PASS = re.compile(r"\b(?:build_pass|check_nested)\(\s*\"(\w+)\"")


@lru_cache(maxsize=None)
def _nested_by_code(source: Path) -> tuple[str, ...]:
    """Registry keys that the pass in ``source`` builds by a fixed name (once per file per DAG)."""
    return tuple(sorted(set(_NESTED_PASS.findall(source.read_text()))))


# ``seqcomp.data.<name>`` / ``seqcomp.models.<name>`` as imported; a registry entry
# ("seqcomp.models.lstm:LSTMForecaster") is a name, not an import, and is skipped.
_PLUGIN_IMPORT = re.compile(r"seqcomp\.(data|models)\.(\w+)\b(?!:)")


def imported_closure(files: list[Path]) -> set[Path]:
    """``files`` plus every data/models module they import, transitively."""
    found, todo = set(files), list(files)
    while todo:
        for package, name in _PLUGIN_IMPORT.findall(todo.pop().read_text()):
            path = PKG / package / f"{name}.py"
            if path.is_file() and path not in found:
                found.add(path)
                todo.append(path)
    return found
