"""A job's name, spelled once (seqcomp.names): every spelling of one job agrees, and each is the
byte-identical string earlier results and MLflow stores hold."""

from __future__ import annotations

import yaml

from conftest import ROOT
from seqcomp import jobs
from seqcomp.config import load_config
from seqcomp.names import JOB_FIELDS, experiment_name, job_key, parse_job_path, run_name

CFG = load_config(yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text()))
SPEC = {"dataset": "ett", "model": "lstm", "lookback": 96, "horizon": 24, "seed": 2, "pass": "int8_dynamic"}


def test_the_spellings_stay_as_results_and_stores_hold_them() -> None:
    assert jobs.paths(CFG)["train"] == "results/smoke/train/{dataset}/{model}/L{lookback}-H{horizon}/seed{seed}"
    assert run_name("compress", SPEC) == "compress/ett/lstm/L96-H24/seed2/int8_dynamic"
    assert job_key("compress", SPEC) == "compress/ett/lstm/96/24/2/int8_dynamic"
    assert job_key("train", SPEC) == "train/ett/lstm/96/24/2"  # a pass's spec names its training job
    assert run_name("data", {"dataset": "ett"}) == job_key("data", {"dataset": "ett"}) == "data/ett"
    assert run_name("summary", {"page": "smoke"}) == "summary/smoke"
    assert experiment_name("smoke") == "seqcomp/smoke" == jobs.train_spec(CFG, "tiny", "lstm", 24, 8, 0)["experiment"]


def test_every_job_path_parses_back_to_its_wildcards() -> None:
    for point in jobs.grid(CFG):
        spec = {**point, "pass": point["passname"]}
        wildcards = {k: point[k] for k in JOB_FIELDS}
        for stage in ("train", "compress", "evaluate"):
            path = jobs.paths(CFG)[stage].format(**point)
            assert parse_job_path(path, stage) == wildcards
            assert path.startswith(f"results/smoke/{run_name(stage, spec)}")  # the run is named as its path
