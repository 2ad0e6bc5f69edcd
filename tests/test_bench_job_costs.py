"""bench/job_costs.py: per-stage sums of the jobs' benchmark files and start-up/work log lines."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import ROOT


def load_bench():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("job_costs", ROOT / "bench" / "job_costs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def job(results: Path, stage: str, name: str, wall: float, cpu: float, startup: float, work: float) -> None:
    tsv = results / "logs" / "benchmarks" / stage / f"{name}.tsv"
    tsv.parent.mkdir(parents=True, exist_ok=True)
    tsv.write_text(HEADER + f"{wall}\t0:00:0{int(wall)}\t100\t200\t90\t95\t0\t0\t50\t{cpu}\n")
    log = results / "logs" / stage / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"12:00:00 job seconds: start-up {startup:.2f} (interpreter, imports, tracking run), work {work:.2f}\n")


def test_job_costs_add_up_per_stage(tmp_path: Path) -> None:
    bench = load_bench()
    job(tmp_path, "evaluate", "a/fp32", 5.0, 4.5, 4.0, 1.0)
    job(tmp_path, "evaluate", "a/int8", 6.0, 5.5, 4.5, 1.5)
    job(tmp_path, "train", "a", 10.0, 9.0, 6.0, 4.0)
    stages = bench.job_costs(tmp_path)
    assert stages["evaluate"] == {"jobs": 2, "wall_s": 11.0, "cpu_s": 10.0, "startup_s": 8.5, "work_s": 2.5}
    out = bench.report(stages, wall_s=20.0, cores=2)
    assert out["total"]["work_s"] == pytest.approx(6.5)
    assert out["wall_over_work_per_core"] == pytest.approx(20.0 / (6.5 / 2))
    assert out["wall_over_job_seconds_per_core"] == pytest.approx(20.0 / (21.0 / 2))


def test_since_keeps_only_one_invocations_jobs(tmp_path: Path) -> None:
    """An overlay's run shares results/<name> with the base grid: --since counts only its jobs."""
    import os

    bench = load_bench()
    job(tmp_path, "train", "base", 10.0, 9.0, 6.0, 4.0)
    job(tmp_path, "train", "overlay", 3.0, 2.0, 1.0, 2.0)
    old = tmp_path / "logs" / "benchmarks" / "train" / "base.tsv"
    os.utime(old, (1_000, 1_000))
    stages = bench.job_costs(tmp_path, since=2_000)
    assert stages["train"]["jobs"] == 1 and stages["train"]["wall_s"] == 3.0
