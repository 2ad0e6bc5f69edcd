"""How long a set of jobs took: their tracking runs' span, their Snakemake benchmark files, and
the one yardstick of how well the cores were used.

The times come from the tracking journals of the jobs (``seqcomp.tracking.current_runs``: the
newest run of each job, a rerun's superseding the earlier ones): each train, compress and
evaluate job opens its run when it starts its work and closes it when done. ``wall_s`` is the
span from the first run's start to the last run's end less pauses between invocations (an
overlay run days later), and leaves out each job's interpreter start-up before its run opens;
``jobs_s`` is the sum of the runs' own durations.

The yardstick needs what the journals leave out, each job's start-up: a Snakemake benchmark
file times the whole command (column ``s``; ``cpu_time`` its CPU seconds), and
:func:`per_core_ratio` = wall / (job seconds / cores) is 1.0 when the cores were never idle.
The pipeline's pages and bench/job_costs.py both read the files with :func:`benchmark_row`.
"""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# a stretch this long in which none of a page's jobs ran is a pause between invocations (an
# overlay run days after its base grid) or other pages' jobs, not scheduling: no job's start-up
# comes near it
PAUSE_S = 300


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


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


def benchmark_row(path: str | Path) -> dict[str, float] | None:
    """Wall seconds ``s`` and CPU seconds ``cpu_s`` (0.0 where Snakemake could not measure them) of a
    Snakemake benchmark file; None if the file does not exist."""
    try:
        with open(path, newline="") as f:
            row = next(csv.DictReader(f, delimiter="\t"), None)
    except FileNotFoundError:
        return None
    if row is None or not row.get("s"):
        raise ValueError(f"{path}: no benchmark row with an `s` column")
    cpu = row.get("cpu_time")
    return {"s": float(row["s"]), "cpu_s": float(cpu) if cpu not in (None, "", "NA", "-") else 0.0}


def benchmark_seconds(path: str | Path) -> float | None:
    """Wall seconds (column ``s``) of a Snakemake benchmark file; None if the file does not exist."""
    row = benchmark_row(path)
    return None if row is None else row["s"]


def per_core_ratio(wall_s: float | None, seconds: float, cores: int | None) -> float | None:
    """wall_s / (seconds / cores): 1.0 when ``cores`` were busy with these ``seconds`` all along;
    None where one of the three is unknown or zero."""
    return wall_s / (seconds / cores) if wall_s and cores and seconds else None


def benchmark_times(paths: list[str], cores: int | None, wall_s: float | None) -> dict[str, Any]:
    """The jobs' benchmark seconds summed (a missing file is counted as missing), the cores, and
    wall_s / (those seconds / cores) where all three are known."""
    found = [s for s in map(benchmark_seconds, paths) if s is not None]
    bench_s = round(sum(found), 1)
    ratio = per_core_ratio(wall_s, bench_s, cores)
    return {"bench_s": bench_s, "bench_files": len(found), "bench_missing": len(paths) - len(found),
            "cores": cores, "wall_over_bench_per_core": None if ratio is None else round(ratio, 3)}


def summary_times(runs: list[Any] | None, jobs: set[str], benchmarks: list[str], cores: int | None,
                  overlay: bool) -> dict[str, Any]:
    """A summary's ``times``: ``runs``, the journals' current runs (None without a tracking run);
    ``jobs``, the job keys of the summary's inputs; ``benchmarks``, those jobs' benchmark files;
    ``cores``, Snakemake's; ``overlay``, whether the config set has overlays."""
    if runs is None:
        return {"source": "no tracking run (summary called without one)"}
    times = job_times(runs, jobs)
    # an overlay's jobs include its base grid's, which ran beside jobs of other pages: the
    # cores were busy with work this page does not count, so no ratio (job_costs --since has one)
    times |= benchmark_times(benchmarks, cores, None if overlay else times.get("wall_s"))
    if overlay:
        times["no_ratio"] = "an overlay's jobs share their time with its base grid's"
    return times
