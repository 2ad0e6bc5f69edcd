"""Job specs and code dependencies: what makes Snakemake rerun exactly the right jobs."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import yaml

from conftest import ROOT
from seqcomp import jobs
from seqcomp.compress import PASSES
from seqcomp.config import load_config
from seqcomp.stamps import (AS_RAN_NS, RECORD_NAME, ast_digest, import_closure, module_file, record_job,
                             recorded_modules, write_stamp)

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
    lstm = jobs.code_modules("train", CFG, "lstm")
    s4d = jobs.code_modules("train", CFG, "s4d")
    assert "seqcomp.models.lstm" in lstm and "seqcomp.models.lstm" not in s4d
    assert not any(m.startswith(("seqcomp.compress", "seqcomp.evaluate", "seqcomp.summary")) for m in lstm)
    assert {"seqcomp.cli", "seqcomp.scores", "seqcomp.models._common"} <= lstm  # the job shell; shared code
    assert "seqcomp.models._common" not in jobs.code_modules("train", CFG, "linear")
    compress = jobs.code_modules("compress", CFG, "lstm")
    assert "seqcomp.compress.stage" in compress and not any(m.startswith("seqcomp.train") for m in compress)
    assert "seqcomp.jobs" not in lstm | compress  # the DAG's code, not a job's (docs/pipeline.md, Reruns)


def pass_names(modules: frozenset[str]) -> set[str]:
    """The pass modules (registry keys) among ``modules``."""
    return {m.rpartition(".")[2] for m in modules if m.startswith("seqcomp.compress.passes.")}


def test_a_pass_job_depends_on_its_own_pass_file_and_the_machinery_it_imports() -> None:
    for stage in ("compress", "evaluate"):
        rtn = jobs.code_modules(stage, CFG, "lstm", passname="w4_rtn_sim")
        fp32 = jobs.code_modules(stage, CFG, "lstm", passname="fp32")
        assert pass_names(rtn) == {"rtn_weight_sim"} and pass_names(fp32) == {"fp32"}
        assert {"seqcomp.compress", "seqcomp.compress.quant.common", "seqcomp.compress.quant.size"} <= fp32 & rtn
        assert "seqcomp.compress.quant.uniform" in rtn and "seqcomp.compress.quant.uniform" not in fp32
        assert "seqcomp.compress.quant.gptq" not in fp32  # (RTN's learned rounding uses GPTQ's Hessian: in its walk)
    gptq = load_config({**copy.deepcopy(CFG), "passes": {"g": {"kind": "gptq_weight_sim"}}})
    assert "seqcomp.compress.quant.gptq" in jobs.code_modules("compress", gptq, "lstm", passname="g")
    # without a pass, every pass (the conservative answer)
    assert pass_names(jobs.code_modules("compress", CFG, "lstm")) == set(PASSES.names())


def test_a_pass_that_runs_others_depends_on_their_files_as_configured() -> None:
    other = copy.deepcopy(CFG)
    other["passes"] = {
        "pruned_int4": {"kind": "chain", "steps": [{"kind": "prune_sim"}, {"kind": "rtn_weight_sim"}]},
        "qat": {"kind": "qat_sim"},  # builds rtn_weight_sim by its registry key in code
        "mp": {"kind": "mixed_precision_sim", "uniform_bits": 3},
        "nested": {"kind": "chain", "steps": [{"kind": "qat_sim"}]},
        "alloc": {"kind": "allocate_sim"},  # default candidates: literal {"kind": ...} entries in its code
        "alloc_pruned": {"kind": "allocate_sim", "candidates": {"p": {"kind": "prune_sim"}}},
    }
    cfg = load_config(other)
    deps = {name: pass_names(jobs.code_modules("compress", cfg, "lstm", passname=name)) for name in cfg["passes"]}
    assert deps == {
        "pruned_int4": {"chain", "prune_sim", "rtn_weight_sim"},
        "qat": {"qat_sim", "rtn_weight_sim"},
        "mp": {"mixed_precision_sim", "rtn_weight_sim"},
        "nested": {"chain", "qat_sim", "rtn_weight_sim"},
        "alloc": {"allocate_sim", "gptq_weight_sim", "vptq_sim", "ssm_pole_sim"},
        "alloc_pruned": {"allocate_sim", "gptq_weight_sim", "vptq_sim", "ssm_pole_sim", "prune_sim"},
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
    data = jobs.code_modules("data", CFG, dataset="tiny")
    assert "seqcomp.data.synthetic" in data and "seqcomp.data.csv" not in data
    assert not any(m.startswith(("seqcomp.models", "seqcomp.train")) for m in data)
    train = jobs.code_modules("train", CFG, "lstm")
    assert "seqcomp.data.windows" in train
    # (seqcomp.data.core is in the static walk through seqcomp.data.check_series, a config-time
    # check imported inside a function; a training job never loads it: its record says so)
    assert not {"seqcomp.data.synthetic", "seqcomp.data.csv", "seqcomp.data.ar", "seqcomp.data.stage"} & train


def test_a_stamp_is_one_file_per_job_rewritten_only_when_its_code_changes(tmp_path: Path) -> None:
    folder, job_dir = str(tmp_path / "stamps"), "results/x/train/tiny/lstm/L24-H8/seed0"
    stamp = Path(jobs.code_stamp("train", CFG, job_dir, "lstm", folder=folder))
    assert stamp == tmp_path / "stamps" / "results/x/train/tiny/lstm/L24-H8/seed0.sha256"
    lines = stamp.read_text().splitlines()
    assert {line.split()[1] for line in lines} == jobs.code_modules("train", CFG, "lstm")
    record = tmp_path / "job"  # a job that ran: its record decides, at the same path
    record.mkdir()
    (record / RECORD_NAME).write_text(json.dumps({"modules": {"seqcomp": "x", "seqcomp.models.linear": "y"}}))
    stamp = Path(jobs.code_stamp("train", CFG, str(record), "lstm", folder=folder))
    assert [line.split()[1] for line in stamp.read_text().splitlines()] == ["seqcomp", "seqcomp.models.linear"]


def test_the_ast_digest_ignores_comments_docstrings_and_formatting(tmp_path: Path) -> None:
    def digest(name: str, text: str) -> str:
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        return ast_digest(path)

    base = digest("a", '"""Module."""\nX = 1\n\n\ndef f(a, b):\n    """Doc."""\n    return a + b\n')
    same = '"""Module,\n  reflowed."""\n# a comment\nX = 1  # another\n\ndef f(a,\n      b):\n    """Other."""\n    return (a + b)\n'
    assert digest("b", same) == base
    assert digest("c", "X = 1\n\n\ndef f(a, b):\n    return a + b\n") == base  # no docstring at all
    assert digest("d", '"""Module."""\nX = 2\n\n\ndef f(a, b):\n    """Doc."""\n    return a + b\n') != base
    assert digest("e", '"""Module."""\nX = 1\n\n\ndef f(a, b):\n    """Doc."""\n    return b + a\n') != base
    assert digest("f", 'X = "a string that is not a docstring"\n') != digest("g", 'X = "another string"\n')


def fake_package(root: Path, files: dict[str, str]) -> Path:
    """A package named seqcomp under ``root`` from {module name: source}; returns its folder. A
    module that others are under is a package (``__init__.py``)."""
    pkg = root / "seqcomp"
    for name, text in {"seqcomp": "", **files}.items():
        parts = name.split(".")[1:]
        is_package = any(other.startswith(name + ".") for other in files) or not parts
        path = pkg.joinpath(*parts, "__init__.py") if is_package else pkg.joinpath(*parts[:-1], parts[-1] + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_the_static_walk_follows_every_import_form(tmp_path: Path) -> None:
    pkg = fake_package(tmp_path, {
        "seqcomp.stage": (
            "import os\n"
            "import seqcomp.plain\n"
            "from seqcomp.models import mamba\n"              # a module, from its package
            "from seqcomp.names import CONSTANT as other\n"   # a name, under another name
            "from . import sibling\n"                         # relative
            "def run():\n    from .models.inner import go\n"  # inside a function, relative to a subpackage
            "    return importlib.import_module('seqcomp.lazy')\n"  # by name in a string
            "REGISTRY = {'x': 'seqcomp.models.other:Cls'}\n"  # a registry entry: not followed
        ),
        "seqcomp.plain": "", "seqcomp.names": "CONSTANT = 1\n",
        "seqcomp.models": "", "seqcomp.models.mamba": "from .. import deep\n", "seqcomp.models.other": "",
        "seqcomp.models.inner": "", "seqcomp.sibling": "", "seqcomp.lazy": "", "seqcomp.deep": "",
        "seqcomp.unused": "",
    })
    found = import_closure(["seqcomp.stage"], pkg)
    assert found == {"seqcomp", "seqcomp.stage", "seqcomp.plain", "seqcomp.models", "seqcomp.models.mamba",
                     "seqcomp.names", "seqcomp.sibling", "seqcomp.models.inner", "seqcomp.lazy", "seqcomp.deep"}
    # a leaf is kept but not followed (the job shell: its other commands' imports are not the job's)
    assert import_closure(["seqcomp.stage"], pkg, leaves=["seqcomp.models.mamba"]) == found - {"seqcomp.deep"}


def test_a_stamp_is_newer_than_the_outputs_exactly_while_the_code_differs_from_what_ran(tmp_path: Path) -> None:
    pkg = fake_package(tmp_path, {"seqcomp.a": "x = 1\n", "seqcomp.b": "y = 2\n"})
    a, b = pkg / "a.py", pkg / "b.py"
    modules, stamp = frozenset({"seqcomp", "seqcomp.a", "seqcomp.b"}), tmp_path / "stamps" / "job.sha256"
    ran = {name: ast_digest(module_file(name, pkg)) for name in modules}  # the job's record

    def build() -> int:  # a new DAG build: the stamp's mtime
        write_stamp.__globals__["_digests"].cache_clear()
        write_stamp(stamp, modules, ran, pkg)
        return stamp.stat().st_mtime_ns

    assert build() == AS_RAN_NS  # as it ran: older than any output
    first = stamp.read_text()
    a.write_text("x = 1  # a comment\n")  # newer, but no code changed
    assert build() == AS_RAN_NS and stamp.read_text() == first
    a.write_text("x = 3\n")  # a real edit: dated when first seen, and stays so
    seen = build()
    assert seen > AS_RAN_NS and stamp.read_text() != first
    assert build() == seen
    a.write_text("x = 1\n")  # undone (with a new mtime, as a checkout gives): as it ran again
    assert build() == AS_RAN_NS and stamp.read_text() == first
    assert write_stamp(stamp, modules, None, pkg) is None and stamp.stat().st_mtime_ns > AS_RAN_NS  # no record
    b.unlink()  # a module the job ran is gone: the job reruns
    assert build() > AS_RAN_NS and "missing seqcomp.b" in stamp.read_text()


def test_a_job_records_the_modules_it_loaded_with_their_digests(tmp_path: Path) -> None:
    import time

    record_job(tmp_path, started=time.time())
    ran = recorded_modules(tmp_path)
    assert ran["seqcomp.jobs"] == ast_digest(module_file("seqcomp.jobs")) and "seqcomp.stamps" not in ran
    assert all(name == "seqcomp" or name.startswith("seqcomp.") for name in ran)
    record_job(tmp_path, started=0.0)  # every file saved after the process started: none counts as it ran
    modules = {name: digest for name, digest in recorded_modules(tmp_path).items() if "[" not in name}
    assert set(modules.values()) == {"saved-while-running"}  # (a registry's entries rerun with its module)
    (tmp_path / RECORD_NAME).write_text("[1, 2]")  # unreadable: as if the job never ran
    assert recorded_modules(tmp_path) is None


def test_a_registry_entry_counts_only_for_the_jobs_that_resolve_it(tmp_path: Path) -> None:
    """Adding a model or a pass to a registry changes no digest; a job records the entries it
    resolved, so changing its own entry reruns it; a record from before entries were left out
    of the digests still counts while the module is unchanged."""
    source = 'from seqcomp.registry import Registry\nR = Registry("thing", {"a": "seqcomp.x:A"})\n'
    pkg = fake_package(tmp_path, {"seqcomp.reg": source, "seqcomp.x": "A = 1\nB = 2\n"})
    reg = pkg / "reg.py"
    before, legacy = ast_digest(reg), ast_digest(reg, with_entries=True)
    reg.write_text(source.replace('"seqcomp.x:A"}', '"seqcomp.x:A", "b": "seqcomp.x:B"}'))
    assert ast_digest(reg) == before and ast_digest(reg, with_entries=True) != legacy
    reg.write_text(source.replace("thing", "other"))  # other code in the module still counts
    assert ast_digest(reg) != before
    reg.write_text(source)

    modules, stamp = frozenset({"seqcomp.reg", "seqcomp.reg[a]"}), tmp_path / "job.sha256"

    def as_ran(ran: dict[str, str]) -> bool:
        write_stamp.__globals__["_digests"].cache_clear()
        write_stamp(stamp, modules, ran, pkg)
        return stamp.stat().st_mtime_ns == AS_RAN_NS

    ran = {"seqcomp.reg": before, "seqcomp.reg[a]": "seqcomp.x:A"}
    assert as_ran(ran) and as_ran({**ran, "seqcomp.reg": legacy})
    reg.write_text(source.replace('"seqcomp.x:A"}', '"seqcomp.x:A", "b": "seqcomp.x:B"}'))
    assert as_ran(ran) and not as_ran({**ran, "seqcomp.reg": legacy})  # an old record reruns once
    reg.write_text(source.replace("seqcomp.x:A", "seqcomp.x:B"))  # the job's own entry changed
    assert not as_ran(ran)


def test_a_job_records_the_registry_entries_it_resolved(tmp_path: Path) -> None:
    import time

    PASSES.get("fp32")  # loads its module
    record_job(tmp_path, started=time.time())
    assert recorded_modules(tmp_path)["seqcomp.compress[fp32]"] == "seqcomp.compress.passes.fp32:Identity"
