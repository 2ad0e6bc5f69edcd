"""A job's name, spelled once: its results path, MLflow run name, tracking job key and the
parsing back of a path, plus the MLflow experiment of a config set.

Every spelling is built from :data:`JOB_PATH` and :data:`STAGE_FIELDS`, so a new wildcard or a
new spelling is one edit here (the Snakefile's patterns, the CLI's run names and locks, the
summary's reading of paths, the replayer's matching of reruns all follow). The strings are part
of the results (paths on disk, runs in existing MLflow stores matched by job key): changing one
changes what reruns and which earlier runs a rerun supersedes. Imports nothing of the package,
so the Snakefile, the CLI and the tracking journal can all use it cheaply.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# A training job's wildcards, in the order every spelling lists them; integers are the ones a
# path writes as digits.
JOB_FIELDS = ("dataset", "model", "lookback", "horizon", "seed")
INT_FIELDS = ("lookback", "horizon", "seed")
# A training job's part of every results path under a stage (Snakemake wildcards in braces).
JOB_PATH = "{dataset}/{model}/L{lookback}-H{horizon}/seed{seed}"
# What names a job of each stage: a pass's jobs add the pass (spec key ``pass``, Snakemake
# wildcard ``passname``, as ``pass`` is a Python keyword).
# A pre-training job is named by its model and context (lookback); a summary job by its config
# set's page (seqcomp.publish.pages.page_name).
STAGE_FIELDS = {"data": ("dataset",), "pretrain": ("model", "lookback"), "train": JOB_FIELDS, "compress": (*JOB_FIELDS, "pass"),
                "evaluate": (*JOB_FIELDS, "pass"), "summary": ("page",)}


def experiment_name(config_name: str) -> str:
    """The MLflow experiment every run of config set ``config_name`` (its ``name`` key) goes to."""
    return f"seqcomp/{config_name}"


def run_name(stage: str, spec: dict[str, Any]) -> str:
    """The job as its results path names it: ``train/ett/lstm/L96-H24/seed0`` (``/<pass>`` after
    compress and evaluate), so runs of a grid tell themselves apart in the MLflow UI and a job's
    lock names it as its path does. A data or summary job's name is its job key."""
    if STAGE_FIELDS[stage][:len(JOB_FIELDS)] != JOB_FIELDS:
        return job_key(stage, spec)
    name = f"{stage}/{JOB_PATH.format(**{k: spec[k] for k in JOB_FIELDS})}"
    return name + (f"/{spec['pass']}" if "pass" in STAGE_FIELDS[stage] else "")


def job_key(stage: str, spec: dict[str, Any]) -> str:
    """``train/ett/lstm/96/24/0`` (``/<pass>`` for compress and evaluate): the ``seqcomp.job`` tag,
    by which reruns supersede and children find their parent (a compress job's parent is
    ``job_key("train", its spec)``)."""
    return "/".join([stage, *(str(spec[k]) for k in STAGE_FIELDS[stage])])


def _path_regex() -> str:
    """:data:`JOB_PATH` as a regular expression with a named group per wildcard."""
    parts = re.split(r"\{(\w+)\}", JOB_PATH)  # literal, field, literal, field, ..., literal
    value = {field: r"\d+" if field in INT_FIELDS else "[^/]+" for field in JOB_FIELDS}
    return "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{value[p]})" for i, p in enumerate(parts))


_JOB_PATH_RE = _path_regex()


def parse_job_path(path: str | Path, stage: str) -> dict[str, Any]:
    """The training wildcards (dataset, model, lookback, horizon, seed; integers as int) of a
    ``.../<stage>/<dataset>/<model>/L<l>-H<h>/seed<s>[/...]`` path."""
    match = re.search(f"{re.escape(stage)}/{_JOB_PATH_RE}(?:/|$)", Path(path).as_posix())
    if match is None:
        raise ValueError(f"{path}: not a {stage}/{JOB_PATH}/... path")
    return {k: (int(v) if k in INT_FIELDS else v) for k, v in match.groupdict().items()}
