"""Job specs and code dependencies: what makes Snakemake rerun exactly the right jobs."""

from __future__ import annotations

import copy

import yaml

from conftest import ROOT
from seqcomp import jobs
from seqcomp.config import load_config

CFG = load_config(yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text()))


def test_grid_and_targets_cover_every_combination() -> None:
    n = len(CFG["datasets"]) * len(CFG["models"]) * len(CFG["lookbacks"]) * len(CFG["horizons"]) * len(CFG["seeds"])
    assert len(jobs.grid(CFG)) == n * len(CFG["passes"])
    targets = jobs.evaluation_targets(CFG)
    assert len(set(targets)) == len(targets)
    assert "results/smoke/evaluate/tiny/lstm/L24-H8/seed0/int8_dynamic/metrics.json" in targets
    assert len(jobs.train_targets(CFG, "history.csv")) == len(jobs.train_targets(CFG, "run.json")) == n


def test_a_model_change_touches_only_that_models_specs() -> None:
    other = copy.deepcopy(CFG)
    other["models"]["lstm"]["hidden"] = 32
    for model in CFG["models"]:
        same = jobs.train_spec(CFG, "tiny", model, 24, 8, 0) == jobs.train_spec(other, "tiny", model, 24, 8, 0)
        assert same == (model != "lstm")


def test_a_pass_change_touches_only_that_pass() -> None:
    other = copy.deepcopy(CFG)
    other["passes"]["w4_rtn_sim"]["bits"] = 3
    assert jobs.train_spec(CFG, "tiny", "lstm", 24, 8, 0) == jobs.train_spec(other, "tiny", "lstm", 24, 8, 0)
    for name in CFG["passes"]:
        same = jobs.compress_spec(CFG, "tiny", "lstm", 24, 8, 0, name) == jobs.compress_spec(other, "tiny", "lstm", 24, 8, 0, name)
        assert same == (name != "w4_rtn_sim")


def test_per_model_train_override() -> None:
    other = copy.deepcopy(CFG)
    other["models"]["s4d"]["train"] = {"lr": 0.01}
    cfg = load_config({k: v for k, v in other.items()})
    assert jobs.train_spec(cfg, "tiny", "s4d", 24, 8, 0)["train"]["lr"] == 0.01
    assert jobs.train_spec(cfg, "tiny", "lstm", 24, 8, 0)["train"]["lr"] == CFG["train"]["lr"]


def test_code_dependencies_separate_models_and_stages() -> None:
    lstm = set(jobs.code_files("train", CFG, "lstm"))
    s4d = set(jobs.code_files("train", CFG, "s4d"))
    assert any(p.endswith("models/lstm.py") for p in lstm) and not any(p.endswith("models/lstm.py") for p in s4d)
    assert not any("/compress/" in p for p in lstm)
    compress = set(jobs.code_files("compress", CFG, "lstm"))
    assert any("/compress/" in p for p in compress) and not any("/train/" in p for p in compress)


def test_a_model_can_have_its_own_lookbacks_and_seeds() -> None:
    other = copy.deepcopy(CFG)
    other["models"]["s4d"].update({"lookbacks": [24, 48], "seeds": [0, 1, 2]})
    cfg = load_config(other)
    points = jobs.grid(cfg)
    s4d = {(p["lookback"], p["seed"]) for p in points if p["model"] == "s4d"}
    lstm = {(p["lookback"], p["seed"]) for p in points if p["model"] == "lstm"}
    assert s4d == {(lb, s) for lb in (24, 48) for s in (0, 1, 2)} and lstm == {(24, 0)}
    assert len(points) == (6 + 2) * len(cfg["passes"])
    # the axes are not hyper-parameters: s4d's spec at (24, seed 0) is unchanged
    assert jobs.train_spec(cfg, "tiny", "s4d", 24, 8, 0) == jobs.train_spec(CFG, "tiny", "s4d", 24, 8, 0)


def test_dataset_kinds_are_separate_code_dependencies() -> None:
    """The smoke dataset is synthetic: the CSV reader is not its code, and no dataset kind's file
    is training code (training reads the prepared series), so adding a kind retrains nothing."""
    data = set(jobs.code_files("data", CFG, dataset="tiny"))
    assert any(p.endswith("data/synthetic.py") for p in data) and not any(p.endswith("data/csv.py") for p in data)
    train = set(jobs.code_files("train", CFG, "lstm"))
    assert any(p.endswith("data/windows.py") for p in train)
    assert not any(p.endswith(("data/synthetic.py", "data/csv.py", "data/prepare.py")) for p in train)
