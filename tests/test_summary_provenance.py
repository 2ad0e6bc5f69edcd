"""Provenance times: the journals' span over the summary's own jobs, their benchmark seconds, and
the scheduling yardstick wall_s / (benchmark seconds / cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqcomp.publish.record import summary_record as provenance
from seqcomp.publish.timing import PAUSE_S, benchmark_seconds, benchmark_times, busy_wall_ms, job_times
from seqcomp.summary.stage import job_keys_of

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def bench_file(path: Path, seconds: float) -> str:
    """A benchmark file as Snakemake writes it (one row, ``s`` first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:{int(seconds):02d}\t300\t900\t280\t290\t1\t2\t80\t{seconds * 0.9}\n")
    return str(path)


def run(job: str, start_s: float, end_s: float) -> dict:
    return {"job": job, "stage": job.split("/")[0], "start": int(start_s * 1000), "end": int(end_s * 1000),
            "commit": "abc"}


def test_the_ratio_is_wall_over_benchmark_seconds_per_core(tmp_path: Path) -> None:
    files = [bench_file(tmp_path / f"{i}.tsv", s) for i, s in enumerate((12.5, 20.0, 7.5))]
    times = benchmark_times([*files, str(tmp_path / "missing.tsv")], cores=2, wall_s=30.0)
    # 40 s of jobs on 2 cores: 20 s if the cores were never idle; the jobs took 30 s of wall time
    assert times == {"bench_s": 40.0, "bench_files": 3, "bench_missing": 1, "cores": 2,
                     "wall_over_bench_per_core": 1.5}


@pytest.mark.parametrize(("cores", "wall_s"), [(None, 30.0), (2, None)])
def test_no_ratio_without_cores_or_wall_time(tmp_path: Path, cores: int | None, wall_s: float | None) -> None:
    times = benchmark_times([bench_file(tmp_path / "a.tsv", 10.0)], cores=cores, wall_s=wall_s)
    assert times["bench_s"] == 10.0 and times["wall_over_bench_per_core"] is None


def test_a_benchmark_file_without_its_column_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.tsv").write_text("x\ty\n1\t2\n")
    with pytest.raises(ValueError, match="bad.tsv"):
        benchmark_seconds(tmp_path / "bad.tsv")


def test_only_the_summarys_own_jobs_are_timed() -> None:
    row = {"dataset": "d", "model": "m", "lookback": 96, "horizon": 24, "seed": 0, "pass": "fp32"}
    jobs = job_keys_of([row])
    assert jobs == {"train/d/m/96/24/0", "compress/d/m/96/24/0/fp32", "evaluate/d/m/96/24/0/fp32"}
    runs = [run("train/d/m/96/24/0", 0, 10), run("compress/d/m/96/24/0/fp32", 10, 12),
            run("evaluate/d/m/96/24/0/fp32", 12, 15),
            run("evaluate/d/m/96/24/0/int8", 100, 200),  # another config set's job, run later
            run("summary/etth1", 15, 20)]
    times = job_times(runs, jobs)
    assert times["jobs"] == 3 and times["wall_s"] == 15.0 and times["jobs_s"] == 15.0


def test_provenance_puts_the_yardstick_beside_the_journal_times(tmp_path: Path) -> None:
    row = {"dataset": "d", "model": "m", "lookback": 96, "horizon": 24, "seed": 0, "pass": "fp32"}
    runs = [run("train/d/m/96/24/0", 0, 10), run("evaluate/d/m/96/24/0/fp32", 10, 16)]
    files = [bench_file(tmp_path / "train.tsv", 11.0), bench_file(tmp_path / "evaluate.tsv", 7.0),
             str(tmp_path / "compress.tsv")]  # the compress job's file is missing
    times = provenance(["c.yaml"], runs, job_keys_of([row]), files, cores=2)["times"]
    # wall 16 s over (18 s of benchmarked jobs / 2 cores)
    assert times["wall_s"] == 16.0 and times["bench_s"] == 18.0 and times["bench_missing"] == 1
    assert times["wall_over_bench_per_core"] == pytest.approx(16 / 9, abs=1e-3)


def test_pauses_between_invocations_are_not_wall_time() -> None:
    """Two invocations a day apart: the wall time is their two spans; gaps under PAUSE_S count."""
    day = 86_400_000
    assert busy_wall_ms([(0, 10_000), (12_000, 20_000)]) == (20_000, 0)
    assert busy_wall_ms([(0, 10_000), (5_000, 30_000), (day, day + 4_000)]) == (34_000, 1)
    assert busy_wall_ms([(0, 10_000), (10_000 + PAUSE_S * 1000 - 1, 10_000 + PAUSE_S * 1000)]) == \
        (10_000 + PAUSE_S * 1000, 0)


def test_an_overlays_page_gets_no_ratio(tmp_path: Path) -> None:
    """Its jobs include the base grid's, which ran beside jobs the page does not count."""
    row = {"dataset": "d", "model": "m", "lookback": 96, "horizon": 24, "seed": 0, "pass": "fp32"}
    runs = [run("train/d/m/96/24/0", 0, 10), run("evaluate/d/m/96/24/0/fp32", 10, 16)]
    files = [bench_file(tmp_path / "train.tsv", 11.0), bench_file(tmp_path / "evaluate.tsv", 7.0)]
    times = provenance(["c.yaml", "c_more.yaml"], runs, job_keys_of([row]), files, cores=2)["times"]
    assert times["wall_over_bench_per_core"] is None and "base grid" in times["no_ratio"]
