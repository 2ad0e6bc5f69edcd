"""seqcomp.publish.bench: the micro-benchmarks' page shows a result as current only when it is.

Fixture results are written by hand: one current, one from a commit this checkout lacks, one
GPU result from a machine without a GPU, one made by another command, one missing. Staleness and
the dirty flag are checked in a scratch git repository, against each result's own code paths.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

import seqcomp.publish.bench as bench_module
from seqcomp.publish.bench import BENCHES, CODE, GROUPS, Bench, page, run_group, running_code, same_command, write_bench_result
from seqcomp.publish.record import code_changes, code_dirty
from seqcomp.errors import SeqcompError

HEAD = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
BY_OUT = {b.out: b for b in BENCHES}


def prov(out: str, commit: str = HEAD, gpus: list[str] | None = None, command: str | None = None) -> dict:
    machine = {"os": "Linux", "cpu": "Test CPU", "cores": 2, "gpus": gpus or [], "load_1min": 0.5}
    return {"command": command or BY_OUT[out].command, "commit": commit, "dirty": "False", "machine": machine,
            "wall_s": 12.5, "written": "2026-12-06 08:00:00 UTC"}


SEQ = {"env": {}, "setup": {"batch": 2, "d_model": 16},
       "layers": [{"L": 256, "s4d": {"min_ms": 13.12, "peak_mib": 5.5}, "mamba_sequential": {"skipped": "too slow"},
                   "auto_picks": "chunked"}],
       "crossover": [{"batch": 1, "L": 16, "state": 1024, "sequential": 2.62, "chunked": 1.44, "faster": "chunked",
                      "auto_picks": "chunked"}]}
DELAY = {"env": {}, "setup": {"length": 256, "lag": 64, "steps": 400, "batch": 16, "d_model": 16, "d_state": 64},
         "results": {"s4_legt": {"nmse": 0.0013, "train_s": 71.3, "params": 5201}}}
TRAIN = {"env": {"device": "cpu", "threads": 2},
         "rows": [{"model": "dlinear", "lookback": 96, "batch_size": 32, "steps": 50, "samples_per_s": 7132.7,
                   "peak_gpu_mib": None, "peak_rss_mib": 2.0, "params": 18624}]}


def write_results(folder: Path) -> tuple:
    folder.mkdir()
    (folder / "seq_scaling_cpu.json").write_text(json.dumps({**SEQ, "provenance": prov("seq_scaling_cpu.json")}))
    (folder / "memory_delay.json").write_text(json.dumps({**DELAY, "provenance": prov("memory_delay.json", "0" * 40)}))
    (folder / "train_cuda_b32.json").write_text(json.dumps({**TRAIN, "provenance": prov("train_cuda_b32.json")}))
    tiny = "python bench/train_throughput.py --device cpu --steps 2 --out bench/results/train_cpu.json"
    (folder / "train_cpu.json").write_text(json.dumps({**TRAIN, "provenance": prov("train_cpu.json", command=tiny)}))
    (folder / "old_script_output.jsonl").write_text("{}\n")
    return tuple(BY_OUT[o] for o in ("seq_scaling_cpu.json", "memory_delay.json", "train_cuda_b32.json",
                                     "train_cpu.json", "job_costs_smoke.json"))


def section(text: str, out: str) -> str:
    return text.split(f"### {out}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]


def test_page_marks_each_result_for_what_it_is(tmp_path: Path) -> None:
    benches = write_results(tmp_path / "results")
    text = page(tmp_path / "results", ROOT, benches)
    assert "1 of 5 results current" in text
    seq = section(text, "seq_scaling_cpu.json")
    assert "- current: made at commit" in seq and "Not current" not in seq
    assert "| 256 | 13.12 / 5.5 | skipped | chunked |" in seq
    assert "| 1 | 16 | 1024 | 2.62 | 1.44 | chunked | chunked |" in seq
    assert "Test CPU, 2 cores, GPUs: none, load 0.5" in seq
    delay = section(text, "memory_delay.json")
    assert "**Not current**: made at commit `000000000000`, which this checkout does not have" in delay
    assert "| s4_legt | 0.0013 | 71.3 | 5201 |" in delay  # stale numbers stay visible, under the mark
    gpu = section(text, "train_cuda_b32.json")
    assert "needs a GPU, and the machine that wrote it had none" in gpu
    assert "| dlinear |" not in gpu  # a GPU benchmark's CPU numbers are not shown at all
    assert "made by another command" in section(text, "train_cpu.json")
    smoke = section(text, "job_costs_smoke.json")
    assert "not measured: the file is missing" in smoke
    assert BY_OUT["job_costs_smoke.json"].command in smoke  # the command that makes it
    assert "## bench/seq_scaling.py\n\nSequence-length scaling on CPU" in text  # what it measures: its docstring
    assert "- `old_script_output.jsonl`" in text


def test_same_command_expands_globs_and_variables() -> None:
    registered = "python bench/int8_latency.py --models results/default/train/*/*/L96-H48/seed0/model.pt --out x.json"
    expanded = ("python bench/int8_latency.py --models results/default/train/synth/dlinear/L96-H48/seed0/model.pt "
                "results/default/train/synth/lstm/L96-H48/seed0/model.pt --out x.json")
    assert same_command(registered, expanded)
    assert not same_command(registered, expanded.replace("--out x.json", "--threads 2 --out x.json"))
    assert not same_command(registered, "python bench/int8_latency.py --models --out x.json")
    assert same_command("python b.py --wall-s $WALL_S", "python b.py --wall-s 186.8")
    assert not same_command("python b.py --steps 50", "python b.py --steps 2")


def test_the_makefile_runs_the_registry() -> None:
    """The registry is the only list of bench commands: the Makefile calls its groups, no script."""
    makefile = (ROOT / "Makefile").read_text()
    assert "python bench/" not in makefile
    for group, target in GROUPS.items():
        recipe = makefile.split(f"\n{target.removeprefix('make ')}: ", 1)[1].split("\n\n", 1)[0]
        assert f"-m seqcomp bench --group {group}" in recipe, target
    assert {b.group for b in BENCHES} == {*GROUPS, None}
    for bench in BENCHES:
        assert (ROOT / bench.script).is_file(), bench.script


def test_a_group_runs_its_commands_and_skips_those_without_input(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    made = tmp_path / "made.txt"
    monkeypatch.setattr(bench_module, "BENCHES", (
        Bench("bench/a.py", "a.json", f"python -c 'open(\"{made}\", \"w\").write(\"ok\")'", "cpu"),
        Bench("bench/b.py", "b.json", "python -c 'raise SystemExit(3)'", "cpu", "make etth1",
              needs=(str(tmp_path / "no-models/*.pt"),)),
        Bench("bench/c.py", "c.json", "python -c 'raise SystemExit(4)'", "extra"),
    ))
    assert run_group("cpu", tmp_path) == ["b.json"]
    assert made.read_text() == "ok"
    said = capsys.readouterr().out
    assert "b.json skipped: nothing at" in said and "(first make etth1)" in said
    with pytest.raises(SeqcompError, match=r"bench c\.json: .* failed \(exit 4\)"):
        run_group("extra", tmp_path)
    with pytest.raises(SeqcompError, match="the groups are cpu, gpu, extra"):
        run_group("fast", tmp_path)


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def scratch_repo(tmp_path: Path) -> Path:
    """A git repository with one committed file per kind of path a result may or may not depend on."""
    root = tmp_path / "repo"
    for name in ("src/seqcomp/publish/bench.py", "src/seqcomp/cli.py", "src/seqcomp/models.py", "pyproject.toml",
                 "Snakefile", "rules/train.smk", "README.md", "bench/seq_scaling.py", "bench/job_costs.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("v1\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v1")
    return root


def test_each_result_is_stale_or_dirty_by_its_own_code(tmp_path: Path) -> None:
    root = scratch_repo(tmp_path)
    first = git(root, "rev-parse", "HEAD")
    scan, costs = BY_OUT["seq_scaling_cpu.json"], BY_OUT["job_costs_smoke.json"]
    for name in ("README.md", "src/seqcomp/publish/bench.py", "Snakefile", "src/seqcomp/cli.py"):
        (root / name).write_text("v2\n")
    assert code_dirty(root, scan.code_paths) == "False"  # the page's code, a README, the workflow: not its code
    assert code_dirty(root, costs.code_paths) == "True"  # a workflow's job costs depend on its Snakefile
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "v2")
    assert code_changes(root, first, scan.code_paths) == []
    assert code_changes(root, first, costs.code_paths) == ["Snakefile", "src/seqcomp/cli.py"]
    (root / "src/seqcomp/models.py").write_text("v3\n")
    assert code_dirty(root, scan.code_paths) == code_dirty(root, costs.code_paths) == "True"


def test_running_code_is_the_scripts_registered_code() -> None:
    for bench in BENCHES:  # the script finds its results' code, the same for each of them
        assert running_code(str(ROOT / bench.script)) == bench.code_paths, bench.out
    assert "Snakefile" in BY_OUT["job_costs_etth1.json"].code_paths
    assert running_code(str(ROOT / "bench/seq_scaling.py")) == (*CODE, "bench/seq_scaling.py")
    assert running_code("/usr/lib/python3/pytest") == CODE  # not a script of this checkout


def test_a_result_in_an_older_format_names_its_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    old = {k: v for k, v in SEQ.items() if k != "crossover"}
    (tmp_path / "results" / "seq_scaling_cpu.json").write_text(json.dumps({**old, "provenance": prov("seq_scaling_cpu.json")}))
    with pytest.raises(SeqcompError, match=r"seq_scaling_cpu\.json: no key 'crossover'"):
        page(tmp_path / "results", ROOT, (BY_OUT["seq_scaling_cpu.json"],))


def test_write_bench_result_adds_provenance(tmp_path: Path) -> None:
    started = time.perf_counter()
    write_bench_result(tmp_path / "r.json", {"rows": [1]}, started)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["rows"] == [1]
    p = saved["provenance"]
    assert p["command"].startswith("python ") and p["commit"] == HEAD and p["dirty"] in ("True", "False")
    assert p["machine"]["cores"] >= 1 and p["wall_s"] >= 0


def test_pages_command_writes_the_bench_page(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from seqcomp.cli import main

    write_results(tmp_path / "results")
    monkeypatch.chdir(ROOT)  # the scripts' docstrings and git are read from the checkout
    assert main(["pages", "--bench", "--bench-results", str(tmp_path / "results"), "--docs", str(tmp_path / "docs")]) == 0
    text = (tmp_path / "docs" / "microbench.md").read_text()
    assert text.startswith("# Micro-benchmarks\n") and "| 256 | 13.12 / 5.5 | skipped | chunked |" in text
    assert main(["pages"]) == 2  # neither --config nor --bench: an error, not an empty run


def test_corpus_throughput_rows_render(tmp_path: Path) -> None:
    row = {"case": "forecast_pfn", "series": 5, "length": 64, "generated_length": 64, "channels": 5, "wall_s": 0.01,
           "points_per_s": 32000, "drawn_per_s": 32000, "dense_fallbacks": 0}
    (tmp_path / "corpus_cpu.json").write_text(json.dumps({"env": {}, "rows": [row],
                                                          "provenance": prov("corpus_cpu.json")}))
    text = section(page(tmp_path, ROOT, (BY_OUT["corpus_cpu.json"],)), "corpus_cpu.json")
    assert "| forecast_pfn | 5 | 64 | 64 | 5 |" in text and "32000" in text.replace(",", "").replace(" ", "")


def run_pretrain_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "bench/pretrain_throughput.py", *args], cwd=ROOT, capture_output=True,
                          text=True, check=False)


def test_pretrain_throughput_times_each_pretraining_job(tmp_path: Path, etth1: Path) -> None:  # noqa: ARG001 (the config's target)
    out = tmp_path / "pretrain_cpu.json"
    done = run_pretrain_bench("--steps", "2", "--warmup", "1", "--batch", "8", "--series", "4",
                              "--also", "moe:96:tokens=point", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["model"], r["tokens"], r["context"]) for r in rows] == [
        ("ttm", None, 512), ("moe", "patch", 512), ("moe", "point", 96)]  # config/pretrain.yaml's jobs, then --also
    for r in rows:
        assert r["steps"] == 2 and r["batch_size"] == 8 and r["horizon"] == 336 and r["precision"] == "32-true"
        assert r["samples_per_s"] > 0 and r["fit_wall_s"] > 0 and "step_samples_per_s" in r and "fit_overhead_s" in r and r["params"] > 0 and r["train_windows"] >= 16
    assert result["env"]["corpus_series"] == 4 and result["provenance"]["command"].startswith("python bench/")
    text = section(page(tmp_path, ROOT, (BY_OUT["pretrain_cpu.json"],)), "pretrain_cpu.json")
    assert "| moe | moe_transformer | point | 96 | 336 | 8 | 2 |" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the run without CUDA")
def test_pretrain_throughput_on_cuda_without_a_gpu_writes_nothing(tmp_path: Path) -> None:
    done = run_pretrain_bench("--device", "cuda", "--out", str(tmp_path / "pretrain_cuda.json"))
    assert done.returncode == 0 and "no CUDA device here, nothing run" in done.stdout
    assert not (tmp_path / "pretrain_cuda.json").exists()
