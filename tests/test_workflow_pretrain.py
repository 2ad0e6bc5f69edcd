"""End-to-end: pre-training and transfer through the real Snakemake workflow (config/smoke_pretrain.yaml)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from test_workflow import edited, jobs_planned, snakemake

pytestmark = pytest.mark.slow
CONFIG = ROOT / "config" / "smoke_pretrain.yaml"
PACKAGE = ROOT / "src" / "seqcomp"


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("smoke_pretrain")
    shutil.copy(CONFIG, workdir / "smoke.yaml")
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir


def test_every_transfer_job_is_scored_and_tabled(pretrain_run: Path) -> None:
    results = pretrain_run / "results" / "smoke_pretrain"
    regimes = {}
    for path in (results / "evaluate").rglob("metrics.json"):
        metrics = json.loads(path.read_text())
        assert math.isfinite(metrics["mse"]) and metrics["dataset"] == "tiny"
        regimes[metrics["model"]] = metrics.get("transfer", {}).get("regime")
    assert regimes == {"ttm": None, "ttm_zs": "zero_shot", "ttm_fs25_first_head": "few_shot",
                       "ttm_fs25_first_whole": "few_shot", "ttm_full": "full", "ttm_scratch25_first": "scratch"}
    assert (results / "pretrain" / "ttm" / "L32" / "model.pt").is_file()
    table = (results / "summary" / "transfer.md").read_text()
    assert "| ttm (L32) | 8 |" in table and "## Pre-training jobs" in table


def test_one_pretraining_serves_every_target_and_horizon(tmp_path: Path) -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["datasets"]["tiny2"] = {**cfg["datasets"]["tiny"], "seed": 2}
    cfg["horizons"] = [4, 8]
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump(cfg))
    planned = jobs_planned(snakemake(tmp_path, "-n"))
    assert planned["pretrain"] == 1 and planned["train"] == 2 * 2 * 6  # targets x horizons x models


def test_editing_the_corpus_generator_reruns_pretraining_and_what_it_feeds(pretrain_run: Path) -> None:
    with edited(PACKAGE / "data" / "kernel_synth.py"):
        planned = jobs_planned(snakemake(pretrain_run, "-n"))
    # the corpus's data job, its pre-training, and the four transfer jobs that load its checkpoint
    # (the from-scratch control and the plain model do not)
    assert planned == {"data": 1, "pretrain": 1, "train": 4, "compress": 4, "evaluate": 4, "summary": 1, "all": 1}


def test_editing_an_unrelated_model_reruns_nothing(pretrain_run: Path) -> None:
    with edited(PACKAGE / "models" / "lstm.py"):
        result = snakemake(pretrain_run, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-3000:]


def test_editing_the_pretrained_model_reruns_its_pretraining_and_every_job_of_it(pretrain_run: Path) -> None:
    with edited(PACKAGE / "models" / "ttm.py"):
        planned = jobs_planned(snakemake(pretrain_run, "-n"))
    assert planned == {"pretrain": 1, "train": 6, "compress": 6, "evaluate": 6, "summary": 1, "all": 1}
