"""What each Snakemake job gets: its output paths, its spec, the code it depends on, its GPUs.

The Snakefile stays declarative by asking this module. A job's *spec* is the slice of the
resolved config that affects it; Snakemake uses it as a ``params`` rerun trigger, so editing
one model's hyper-parameters reruns only that model's jobs. A job's code is one input, its
stamp (:func:`code_stamp`), because Snakemake does not track modules a command imports
(snakemake#2192): the digests of the package modules the job's last run loaded, or, for a job
that never ran, of those a static walk of the imports finds (seqcomp.stamps).

What an edit reruns (docs/pipeline.md, "Reruns"): an edit of a package module reruns the jobs
that loaded it, the job shell ``cli.py`` included (every job); a comment, docstring or
reformatting reruns nothing. This module is the DAG's code, loaded by no job: a change here
reaches a job only as a changed spec (``params``), output path or stamp, and Snakemake reruns
exactly those; a change that alters none of them reruns nothing.
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import product
from pathlib import Path
from typing import Any

from seqcomp.config import dataset_windows
from seqcomp.model_entries import model_axes, model_params, train_settings
from seqcomp.config_pretrain import grid_models, pretrain_horizon, targets
from seqcomp.names import JOB_PATH, experiment_name
from seqcomp.stamps import import_closure, imports_of, recorded_modules, write_stamp
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
        "pretrain": f"{r}/pretrain/{{model}}/L{{lookback}}",  # one per (pre-trained model, context)
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
    for dataset, model in product(targets(cfg), grid_models(cfg)):
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
    spec = {
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
    record = cfg["models"][model].get("transfer")
    if record is not None:  # a generated transfer entry (seqcomp.config_pretrain)
        spec["transfer"] = {**{k: v for k, v in record.items() if k != "overlaps"}, "context": int(lookback),
                            "overlap": dataset in record["overlaps"]}
        if record["regime"] == "zero_shot":  # nothing is fitted: train settings cannot change the job
            spec["train"] = {}
    return spec


def pretrain_spec(cfg: dict[str, Any], model: str, lookback: Any) -> dict:
    """One pre-training job: the model at a context on the corpus (seqcomp.train.pretrain)."""
    pre = cfg["pretrain"]
    return {
        "experiment": experiment_name(cfg["name"]),
        "model": model,
        "kind": cfg["models"][model]["kind"],
        "params": model_params(cfg, model),
        "train": fit_settings(cfg, model, pretrain=True),
        "lookback": int(lookback),
        "horizon": pretrain_horizon(cfg),
        "seed": pre["seed"],
        "corpus": list(pre["corpus"]),
        "stride": pre["stride"],
        "max_val_windows": pre["max_val_windows"],
    }


def pretrained_input(cfg: dict[str, Any], model: str, lookback: Any) -> list[str]:
    """A transfer job's pre-trained model.pt (none for other jobs and the from-scratch control)."""
    record = cfg["models"][model].get("transfer")
    if record is None or record["regime"] == "scratch":
        return []
    return [paths(cfg)["pretrain"].format(model=record["pretrained"], lookback=lookback) + "/model.pt"]


def corpus_targets(cfg: dict[str, Any], filename: str) -> list[str]:
    """``filename`` of every corpus dataset's data job (what every pre-training job reads)."""
    pattern = paths(cfg)["data"] + "/" + filename
    return [pattern.format(dataset=d) for d in cfg["pretrain"]["corpus"]] if cfg.get("pretrain") else []


def pretrain_targets(cfg: dict[str, Any], filename: str) -> list[str]:
    """``filename`` of every pre-training job (none without ``pretrain:``)."""
    pre = cfg.get("pretrain")
    if not pre:
        return []
    pattern = paths(cfg)["pretrain"] + "/" + filename
    return [pattern.format(model=m, lookback=c) for m in pre["models"] for c in pre["contexts"]]


def fit_settings(cfg: dict[str, Any], model: str, pretrain: bool = False) -> dict[str, Any] | None:
    """The settings ``model``'s training job fits with (its pre-training job's with ``pretrain``):
    None when it fits nothing by SGD (closed form, no trainable parameters, a zero-shot transfer)."""
    from seqcomp.models import trains_by_sgd

    if not trains_by_sgd(cfg["models"][model]["kind"], model_params(cfg, model)):
        return None
    if pretrain:
        return {**train_settings(cfg, model), **cfg["pretrain"].get("train", {})}
    if cfg["models"][model].get("transfer", {}).get("regime") == "zero_shot":
        return None
    return train_settings(cfg, model)


def train_processes(cfg: dict[str, Any], model: str, pretrain: bool = False) -> int:
    """Processes a training (or pre-training) job runs, hence the CPU cores it asks for (the
    rule's ``threads``): ``train.devices`` for an SGD fit (seqcomp.train.ddp: rank 0 is the job's
    process and starts the others beside it, on the same node), one for a job without one."""
    settings = fit_settings(cfg, model, pretrain)
    return settings["devices"] if settings else 1


def train_gpus(cfg: dict[str, Any], model: str, pretrain: bool = False) -> int:
    """GPUs a training (or pre-training) job asks the scheduler for: one per process
    (``train.devices``) unless it trains on ``cpu`` or fits nothing by SGD (closed form, no
    trainable parameters, zero-shot: the job never uses a GPU, and asking would hold one, or
    wait for one, for nothing).

    ``auto`` asks too: on a cluster it is how a job gets a GPU node to find one on.
    """
    settings = fit_settings(cfg, model, pretrain)
    return settings["devices"] if settings and settings["accelerator"] != "cpu" else 0


def pass_spec(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    entry = cfg["passes"][name]
    return {"pass": name, "pass_kind": entry["kind"], "pass_params": {k: v for k, v in entry.items() if k != "kind"}}


def compress_spec(cfg: dict[str, Any], dataset: str, model: str, lookback: Any, horizon: Any, seed: Any, name: str) -> dict:
    base = {k: v for k, v in train_spec(cfg, dataset, model, lookback, horizon, seed).items() if k != "train"}
    return {**base, **pass_spec(cfg, name), "calibration": cfg["calibration"]}


def evaluate_spec(cfg: dict[str, Any], dataset: str, model: str, lookback: Any, horizon: Any, seed: Any, name: str) -> dict:
    base = compress_spec(cfg, dataset, model, lookback, horizon, seed, name)
    return {**{k: v for k, v in base.items() if k != "calibration"}, "evaluate": cfg["evaluate"]}


# The module each stage's command (seqcomp.cli) hands the job to.
STAGE_ENTRY = {
    "data": "seqcomp.data.stage",
    "pretrain": "seqcomp.train.pretrain",
    "train": "seqcomp.train.stage",
    "compress": "seqcomp.compress.stage",
    "evaluate": "seqcomp.evaluate.stage",
    "summary": "seqcomp.summary.stage",
}
# Every job runs through the job shell; it imports its stage inside the command's function, so
# only its module-level imports are every job's (its other commands' imports are not).
JOB_SHELL = ("seqcomp.__main__", "seqcomp.cli")


def code_modules(stage: str, cfg: dict[str, Any] | None = None, model: str | None = None,
                 dataset: str | None = None, passname: str | None = None) -> frozenset[str]:
    """Package modules a job of ``stage`` will load, found without running it: the stamp of a
    job that never ran (one that ran is stamped from its record, see :func:`code_stamp`).

    A static walk of the imports (:func:`seqcomp.stamps.import_closure`) from the job shell, the
    stage's entry module and the registry entries of the job's own kinds: its model (training,
    compression, evaluation), its dataset kind (data) and the passes it runs (see :func:`pass_kinds`);
    not other models, passes or dataset kinds, which the registries name only as strings.
    """
    from seqcomp.compress import PASSES
    from seqcomp.data import DATASETS
    from seqcomp.models import MODELS

    plugins = []
    if stage in ("pretrain", "train", "compress", "evaluate") and cfg is not None and model is not None:
        plugins.append(MODELS.module(cfg["models"][model]["kind"]))
    if stage == "data" and cfg is not None and dataset is not None:
        plugins.append(DATASETS.module(cfg["datasets"][dataset]["kind"]))
    if stage in ("compress", "evaluate"):
        plugins += [PASSES.module(kind) for kind in pass_kinds(cfg, passname)]
    return _code_modules(stage, tuple(sorted(plugins)))


@lru_cache(maxsize=None)
def _code_modules(stage: str, plugins: tuple[str, ...]) -> frozenset[str]:
    """:func:`code_modules` once per distinct (stage, plug-ins) of a DAG: a grid's jobs share a few."""
    shell = set(JOB_SHELL).union(*(imports_of(m, top_level=True) for m in JOB_SHELL))
    return frozenset(import_closure([*shell, STAGE_ENTRY[stage], *plugins], leaves=JOB_SHELL))


def code_stamp(stage: str, cfg: dict[str, Any] | None, job_dir: str, model: str | None = None,
               dataset: str | None = None, passname: str | None = None, folder: str = f"{CACHE_DIR}/code") -> str:
    """The job's code as one input file: ``folder/<job_dir>.sha256``, one per job.

    It holds the digests (:func:`seqcomp.stamps.ast_digest`) of the modules the job's last run
    recorded in ``job_dir``, its output folder, or of :func:`code_modules` if it never ran, and is
    newer than the job's outputs exactly when they differ from the recorded ones
    (:func:`seqcomp.stamps.write_stamp`). One path per job, whatever its modules: Snakemake
    reruns a job whose set of input files changes.
    """
    parts = [part if part != ".." else "__" for part in Path(job_dir).parts if part != Path(job_dir).anchor]
    stamp = Path(folder, *parts[:-1], parts[-1] + ".sha256")
    ran = recorded_modules(job_dir)
    write_stamp(stamp, frozenset(ran) if ran else code_modules(stage, cfg, model, dataset, passname), ran)
    return str(stamp)


def pass_kinds(cfg: dict[str, Any] | None, passname: str | None) -> list[str]:
    """Configured pass ``passname``'s kind and the kinds of every pass it runs, found without importing.

    A pass runs another by registry key: a nested entry ``{kind: ...}`` in its config (chain's
    steps) or a fixed key in its code (qat_sim and mixed_precision_sim build ``rtn_weight_sim``),
    and so on down. Without a pass, every pass.
    """
    from seqcomp.compress import PASSES

    if cfg is None or passname is None:
        return PASSES.names()
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
    return sorted(kinds)


# A pass building another by a fixed registry key: ``build_pass("rtn_weight_sim", ...)``, or
# a default nested entry written in its code, ``{"kind": "vq_sim", ...}`` (allocate_sim's candidates).
_NESTED_PASS = re.compile(r"\b(?:build_pass|check_nested)\(\s*\"(\w+)\"|\"kind\":\s*\"(\w+)\"")


@lru_cache(maxsize=None)
def _nested_by_code(source: Path) -> tuple[str, ...]:
    """Registry keys that the pass in ``source`` builds by a fixed name (once per file per DAG)."""
    return tuple(sorted({a or b for a, b in _NESTED_PASS.findall(source.read_text())}))
