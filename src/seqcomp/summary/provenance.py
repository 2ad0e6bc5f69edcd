"""Where and when a summary's numbers were made: the config files, the commit, the machine and
the jobs' times, written to results/<name>/summary/provenance.json for the generated pages.

The times come from the tracking journals of the jobs (``seqcomp.tracking.current_runs``: the
newest run of each job, a rerun's superseding the earlier ones): each train, compress and
evaluate job opens its run when it starts its work and closes it when done. ``wall_s`` is the
span from the first run's start to the last run's end, so it includes any pause between
invocations (an overlay run days later) and leaves out each job's interpreter start-up before
its run opens; ``jobs_s`` is the sum of the runs' own durations. Only the jobs whose files the
summary reads count (an overlay's jobs are not the base grid's).

The scheduling yardstick needs what the journals leave out, each job's start-up: ``bench_s`` sums
the wall seconds (column ``s``) of the jobs' Snakemake benchmark files, which time the whole
command, and ``wall_over_bench_per_core`` = wall_s / (bench_s / cores) is 1.0 when the cores
Snakemake ran with were never idle.

The micro-benchmarks in bench/ write the same kind of record, with this module's :func:`machine`,
into each result (``seqcomp.bench.write_bench_result``).
"""

from __future__ import annotations

import csv
import os
import platform
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STAGES = ("train", "compress", "evaluate")


def machine() -> dict[str, Any]:
    """This machine in words: OS, CPU model and cores, and the GPUs nvidia-smi lists (if any)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, check=False)
        gpus = [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
    # a shared machine's load explains slow or noisy timings (latency, wall time)
    load = round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None
    return {"os": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "gpus": gpus, "load_1min": load}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# a stretch this long in which none of a page's jobs ran is a pause between invocations (an
# overlay run days after its base grid) or other pages' jobs, not scheduling: no job's start-up
# comes near it
PAUSE_S = 300


def busy_wall_ms(spans: list[tuple[int, int]]) -> tuple[int, int]:
    """(span of ``spans`` less its pauses, number of pauses): the time from the first start to the
    last end, less each stretch of at least PAUSE_S with no span open. Gaps shorter than that are
    the scheduler's own (a job's start-up, Snakemake's bookkeeping) and count."""
    spans = sorted(spans)
    wall, pauses, open_until = 0, 0, spans[0][0]
    block_start = spans[0][0]
    for start, end in spans:
        if start - open_until >= PAUSE_S * 1000:
            wall += open_until - block_start
            pauses += 1
            block_start = start
        open_until = max(open_until, end)
    return wall + open_until - block_start, pauses


def job_times(runs: list[dict[str, Any]], jobs: set[str]) -> dict[str, Any]:
    """Span and sum of the finished current runs (``seqcomp.tracking.current_runs``) of the job keys
    ``jobs``. ``wall_s`` leaves out pauses between invocations (see busy_wall_ms), so an overlay's
    page, whose jobs include its base grid's, is timed by the work, not by the days between runs."""
    current = [r for r in runs if r["job"] in jobs and r["end"]]
    if not current:
        return {"source": "tracking journals of the jobs", "jobs": 0}
    start, end = min(r["start"] for r in current), max(r["end"] for r in current)
    busy, pauses = busy_wall_ms([(r["start"], r["end"]) for r in current])
    return {
        "source": "tracking journals of the jobs (current train/compress/evaluate runs)",
        "jobs": len(current),
        "first_start": _iso(start),
        "last_end": _iso(end),
        "wall_s": round(busy / 1000, 1),
        "span_s": round((end - start) / 1000, 1),
        "pauses": pauses,
        "jobs_s": round(sum(r["end"] - r["start"] for r in current) / 1000, 1),
        "commits": sorted({r["commit"] for r in current}),
    }


def benchmark_seconds(path: str | Path) -> float | None:
    """Wall seconds (column ``s``) of a Snakemake benchmark file; None if the file does not exist."""
    try:
        with open(path, newline="") as f:
            row = next(csv.DictReader(f, delimiter="\t"), None)
    except FileNotFoundError:
        return None
    if row is None or not row.get("s"):
        raise ValueError(f"{path}: no benchmark row with an `s` column")
    return float(row["s"])


def benchmark_times(paths: list[str], cores: int | None, wall_s: float | None) -> dict[str, Any]:
    """The jobs' benchmark seconds summed (a missing file is counted as missing), the cores, and
    wall_s / (those seconds / cores) where all three are known."""
    found = [s for s in map(benchmark_seconds, paths) if s is not None]
    bench_s = round(sum(found), 1)
    ratio = round(wall_s / (bench_s / cores), 3) if wall_s and cores and bench_s else None
    return {"bench_s": bench_s, "bench_files": len(found), "bench_missing": len(paths) - len(found),
            "cores": cores, "wall_over_bench_per_core": ratio}


def provenance(config_files: list[str], runs: list[Any] | None, jobs: set[str], benchmarks: list[str],
               cores: int | None) -> dict[str, Any]:
    """``runs``: the journals' current runs (None without a tracking run); ``jobs``: the job keys
    of the summary's inputs; ``benchmarks``: those jobs' benchmark files; ``cores``: Snakemake's."""
    from seqcomp.tracking import git_state

    git = git_state()
    if runs is None:
        times: dict[str, Any] = {"source": "no tracking run (summary called without one)"}
    else:
        times = job_times(runs, jobs)
        # an overlay's jobs include its base grid's, which ran beside jobs of other pages: the
        # cores were busy with work this page does not count, so no ratio (job_costs --since has one)
        overlay = len(config_files) > 1
        times |= benchmark_times(benchmarks, cores, None if overlay else times.get("wall_s"))
        if overlay:
            times["no_ratio"] = "an overlay's jobs share their time with its base grid's"
    return {
        "config_files": config_files,
        "commit": git["seqcomp.git_commit"],
        "dirty": git["seqcomp.git_dirty"],
        "machine": machine(),
        "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "times": times,
    }

