"""Job specs and code dependencies: what makes Snakemake rerun exactly the right jobs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from conftest import ROOT
from seqcomp import jobs
from seqcomp.compress import PASSES
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


def test_only_a_model_fit_by_sgd_asks_for_a_gpu() -> None:
    """Closed-form and parameter-free training never touches a GPU: it asks the scheduler for none."""
    cfg = copy.deepcopy(CFG)
    cfg["train"]["accelerator"] = "auto"
    cfg["models"].update({"naive": {"kind": "naive"}, "naive_cycle": {"kind": "naive", "cycle": 4}})
    assert {m: jobs.train_gpus(cfg, m) for m in cfg["models"]} == {
        "linear": 0, "lstm": 1, "s4d": 1, "naive": 0, "naive_cycle": 1}
    cfg["train"]["accelerator"] = "cpu"
    assert not any(jobs.train_gpus(cfg, m) for m in cfg["models"])


def test_code_dependencies_separate_models_and_stages() -> None:
    lstm = set(jobs.code_files("train", CFG, "lstm"))
    s4d = set(jobs.code_files("train", CFG, "s4d"))
    assert any(p.endswith("models/lstm.py") for p in lstm) and not any(p.endswith("models/lstm.py") for p in s4d)
    assert not any("/compress/" in p for p in lstm)
    compress = set(jobs.code_files("compress", CFG, "lstm"))
    assert any("/compress/" in p for p in compress) and not any("/train/" in p for p in compress)


def pass_names(files: list[str]) -> set[str]:
    """The pass files (registry keys) among ``files``, without the passes package's __init__."""
    return {Path(f).stem for f in files if Path(f).parent.name == "passes" and not f.endswith("__init__.py")}


def test_a_pass_job_depends_on_its_own_pass_file_and_all_shared_machinery() -> None:
    for stage in ("compress", "evaluate"):
        rtn = jobs.code_files(stage, CFG, "lstm", passname="w4_rtn_sim")
        fp32 = jobs.code_files(stage, CFG, "lstm", passname="fp32")
        assert pass_names(rtn) == {"rtn_weight_sim"} and pass_names(fp32) == {"fp32"}
        shared = {f for f in fp32 if "/compress/" in f and "/passes/" not in f}
        assert any(f.endswith("compress/quant/uniform.py") for f in shared)
        assert any(f.endswith("compress/__init__.py") for f in shared)
        assert shared <= set(rtn)
    # without a pass, every pass's file (the conservative answer)
    assert pass_names(jobs.code_files("compress", CFG, "lstm")) == set(PASSES.names())


def test_a_pass_that_runs_others_depends_on_their_files_as_configured() -> None:
    other = copy.deepcopy(CFG)
    other["passes"] = {
        "pruned_int4": {"kind": "chain", "steps": [{"kind": "prune_sim"}, {"kind": "rtn_weight_sim"}]},
        "qat": {"kind": "qat_sim"},  # builds rtn_weight_sim by its registry key in code
        "mp": {"kind": "mixed_precision_sim", "uniform_bits": 3},
        "nested": {"kind": "chain", "steps": [{"kind": "qat_sim"}]},
    }
    cfg = load_config(other)
    deps = {name: pass_names(jobs.code_files("compress", cfg, "lstm", passname=name)) for name in cfg["passes"]}
    assert deps == {
        "pruned_int4": {"chain", "prune_sim", "rtn_weight_sim"},
        "qat": {"qat_sim", "rtn_weight_sim"},
        "mp": {"mixed_precision_sim", "rtn_weight_sim"},
        "nested": {"chain", "qat_sim", "rtn_weight_sim"},
    }


def test_each_pass_lives_in_the_file_named_as_its_registry_key() -> None:
    passes = ROOT / "src" / "seqcomp" / "compress" / "passes"
    assert {p.stem for p in passes.glob("*.py")} - {"__init__"} == set(PASSES.names())
    for key in PASSES.names():
        assert PASSES.source_file(key) == passes / f"{key}.py"


def test_no_pass_imports_another_pass() -> None:
    """Passes share code through compress/quant/ and run each other through the registry only,
    so that editing one pass reruns only its jobs."""
    passes = ROOT / "src" / "seqcomp" / "compress" / "passes"
    for source in passes.glob("*.py"):
        text = source.read_text()
        assert "seqcomp.compress.passes" not in text, source.name
        assert not re.search(r"from seqcomp\.compress import .*\b(" + "|".join(p.stem for p in passes.glob("*.py")) + r")\b", text)


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
    assert not any(p.endswith(("data/synthetic.py", "data/csv.py", "data/core.py", "data/stage.py")) for p in train)


def test_code_stamp_follows_content_not_mtime(tmp_path: Path) -> None:
    import os

    stamp_of = jobs._code_stamp.__wrapped__  # uncached: each call is a new DAG build
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n"), b.write_text("y = 2\n")
    os.utime(a, ns=(10**18, 10**18)), os.utime(b, ns=(15 * 10**17, 15 * 10**17))
    files, folder = (str(a), str(b)), str(tmp_path / "stamps")
    stamp = Path(stamp_of("train", files, folder))
    assert stamp.stat().st_mtime_ns == 15 * 10**17  # the newest source's mtime
    first = stamp.read_text()
    os.utime(a)  # touched, same content: the stamp stays as it was
    assert stamp_of("train", files, folder) == str(stamp) and stamp.stat().st_mtime_ns == 15 * 10**17
    a.write_text("x = 3\n")  # a real edit: new content, new mtime
    stamp_of("train", files, folder)
    assert stamp.read_text() != first and stamp.stat().st_mtime_ns == a.stat().st_mtime_ns
    a.write_text("x = 1\n")  # undone, mtime included: as before the edit
    os.utime(a, ns=(10**18, 10**18))
    stamp_of("train", files, folder)
    assert stamp.read_text() == first and stamp.stat().st_mtime_ns == 15 * 10**17
