"""What each Snakemake job gets: its output paths, its spec, and the code it depends on.

The Snakefile stays declarative by asking this module. A job's *spec* is the slice of the
resolved config that affects it; Snakemake uses it as a ``params`` rerun trigger, so editing
one model's hyper-parameters reruns only that model's jobs. Code dependencies are listed as
inputs because Snakemake does not track modules a command imports (snakemake#2192).
"""

from __future__ import annotations

import re
from itertools import product
from pathlib import Path
from typing import Any

from seqcomp.config import PROJECT_ROOT, train_settings

PKG = PROJECT_ROOT / "src" / "seqcomp"
WILDCARDS = "{dataset}/{model}/L{lookback}-H{horizon}/seed{seed}"


def results_dir(cfg: dict[str, Any]) -> str:
    return f"results/{cfg['name']}"


def paths(cfg: dict[str, Any]) -> dict[str, str]:
    """Output path patterns (Snakemake wildcards in braces), one per stage product."""
    r = results_dir(cfg)
    return {
        "data": f"{r}/data/{{dataset}}",
        "tracking": f"{r}/tracking/experiment.json",
        "train": f"{r}/train/{WILDCARDS}",
        "compress": f"{r}/compress/{WILDCARDS}/{{passname}}",
        "evaluate": f"{r}/evaluate/{WILDCARDS}/{{passname}}/metrics.json",
        "summary": f"{r}/summary",
        "logs": f"{r}/logs",
    }


def grid(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (dataset, model, lookback, horizon, seed, pass) the config asks for.

    The pass wildcard is called ``passname`` because ``pass`` is a Python keyword.
    """
    keys = ("dataset", "model", "lookback", "horizon", "seed", "passname")
    axes = (cfg["datasets"], cfg["models"], cfg["lookbacks"], cfg["horizons"], cfg["seeds"], cfg["passes"])
    return [dict(zip(keys, combo)) for combo in product(*axes)]


def evaluation_targets(cfg: dict[str, Any]) -> list[str]:
    pattern = paths(cfg)["evaluate"]
    return [pattern.format(**point) for point in grid(cfg)]


def history_targets(cfg: dict[str, Any]) -> list[str]:
    pattern = paths(cfg)["train"] + "/history.csv"
    seen = {pattern.format(**point) for point in grid(cfg)}
    return sorted(seen)


def data_spec(cfg: dict[str, Any], dataset: str) -> dict[str, Any]:
    return {"dataset": dataset, **cfg["datasets"][dataset]}


def model_params(cfg: dict[str, Any], model: str) -> dict[str, Any]:
    return {k: v for k, v in cfg["models"][model].items() if k not in ("kind", "train")}


def train_spec(cfg: dict[str, Any], dataset: str, model: str, lookback: Any, horizon: Any, seed: Any) -> dict:
    return {
        "experiment": f"seqcomp/{cfg['name']}",
        "dataset": dataset,
        "model": model,
        "kind": cfg["models"][model]["kind"],
        "params": model_params(cfg, model),
        "train": train_settings(cfg, model),
        "lookback": int(lookback),
        "horizon": int(horizon),
        "seed": int(seed),
    }


def pass_spec(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    entry = cfg["passes"][name]
    return {"pass": name, "pass_kind": entry["kind"], "pass_params": {k: v for k, v in entry.items() if k != "kind"}}


def compress_spec(cfg: dict[str, Any], dataset: str, model: str, lookback: Any, horizon: Any, seed: Any, name: str) -> dict:
    base = {k: v for k, v in train_spec(cfg, dataset, model, lookback, horizon, seed).items() if k != "train"}
    return {**base, **pass_spec(cfg, name), "calibration": cfg["calibration"]}


def evaluate_spec(cfg: dict[str, Any], dataset: str, model: str, lookback: Any, horizon: Any, seed: Any, name: str) -> dict:
    base = compress_spec(cfg, dataset, model, lookback, horizon, seed, name)
    return {**{k: v for k, v in base.items() if k != "calibration"}, "evaluate": cfg["evaluate"]}


def code_files(stage: str, cfg: dict[str, Any] | None = None, model: str | None = None) -> list[str]:
    """Package files (absolute paths) whose edit must rerun ``stage``.

    Training depends on the data and training code, the shared model code and the model's own
    file; it does not depend on other models' files, so editing one model reruns only its jobs.
    """
    from seqcomp.models import MODELS

    # cli.py is left out on purpose: it only parses arguments and dispatches to these modules.
    shared = ["__init__.py", "config.py", "registry.py", "io.py", "errors.py", "jobs.py", "artifacts.py",
              "tracking/__init__.py"]
    stage_dirs = {
        "data": ["data"],
        "train": ["data", "train", "evaluate/metrics.py"],
        "compress": ["compress"],
        "evaluate": ["compress", "evaluate"],
        "summarize": ["report"],
    }[stage]
    files: list[Path] = [PKG / f for f in shared]
    for entry in stage_dirs:
        target = PKG / entry
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    if stage in ("train", "compress", "evaluate") and cfg is not None and model is not None:
        files += model_files(MODELS.source_file(cfg["models"][model]["kind"]))
    return sorted({str(p) for p in files})


def model_files(own: Path) -> list[Path]:
    """A model's file, the models package's shared files it imports, ``__init__`` and RevIN."""
    model_dir = PKG / "models"
    found, todo = {own, model_dir / "__init__.py", model_dir / "revin.py"}, [own]
    while todo:
        for name in re.findall(r"seqcomp\.models\.(\w+)", todo.pop().read_text()):
            path = model_dir / f"{name}.py"
            if path.is_file() and path not in found:
                found.add(path)
                todo.append(path)
    return sorted(found)
