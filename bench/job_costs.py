"""Where a workflow's time goes: each job's start-up (interpreter, imports, its tracking run)
against its work, summed per stage, beside the workflow's wall time on the cores it had.

Every job writes a Snakemake benchmark file (logs/benchmarks/<stage>/..., wall and CPU
seconds of the whole command) and one log line ``job seconds: start-up S ..., work W``
(``seqcomp.cli``). This script adds them up for a results folder; with ``--run`` it first runs
the workflow of a config from a clean folder and times it, next to a bare ``import torch``
(the floor of any job) timed in the same session.

    python bench/job_costs.py --run config/smoke.yaml --cores 2 --out bench/results/job_costs_smoke.json
    python bench/job_costs.py --results results/etth1 --wall-s 5400 --cores 2   # a finished run
    python bench/job_costs.py --results results/etth1 --since 1796000000 --wall-s 900   # its last invocation
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seqcomp.publish.bench import write_bench_result
from seqcomp.publish.timing import benchmark_row, per_core_ratio

ROOT = Path(__file__).resolve().parents[1]
JOB_LINE = re.compile(r"job seconds: start-up ([\d.]+) .*, work ([\d.]+)")


def torch_import_s(repeats: int = 3) -> float:
    """Median wall seconds of ``python -c "import torch"``: the start-up floor of a job."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def job_costs(results: Path, since: float | None = None) -> dict[str, dict[str, float]]:
    """Per stage: jobs, wall and CPU seconds (benchmark files), start-up and work seconds (logs).

    With ``since`` (a Unix time), only the jobs whose benchmark file was written after it: the
    jobs of one invocation in a results folder that earlier ones (the base grid of an overlay)
    share.
    """
    stages: dict[str, dict[str, float]] = {}
    bench = results / "logs" / "benchmarks"
    for tsv in sorted(bench.rglob("*.tsv")):
        if since is not None and tsv.stat().st_mtime < since:
            continue
        stage = tsv.relative_to(bench).parts[0].removesuffix(".tsv")
        row = benchmark_row(tsv)
        s = stages.setdefault(stage, {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0, "startup_s": 0.0, "work_s": 0.0})
        s["jobs"] += 1
        s["wall_s"] += row["s"]
        s["cpu_s"] += row["cpu_s"]
        log = results / "logs" / tsv.relative_to(bench).with_suffix(".log")
        found = JOB_LINE.search(log.read_text()) if log.is_file() else None
        if found:
            s["startup_s"] += float(found[1])
            s["work_s"] += float(found[2])
    return stages


def report(stages: dict[str, dict[str, float]], wall_s: float | None, cores: int) -> dict:
    total = {k: sum(s[k] for s in stages.values()) for k in ("jobs", "wall_s", "cpu_s", "startup_s", "work_s")}
    out = {"stages": stages, "total": total, "cores": cores, "workflow_wall_s": wall_s}
    if wall_s:
        # the pages' yardstick: wall time over (the jobs' seconds spread over the cores)
        out["wall_over_work_per_core"] = per_core_ratio(wall_s, total["work_s"], cores)
        out["wall_over_job_seconds_per_core"] = per_core_ratio(wall_s, total["wall_s"], cores)
    return out


def run_workflow(config: Path, cores: int) -> tuple[Path, float]:
    """The config's workflow from a clean folder (default profile, ``cores``); (results dir, wall s)."""
    import yaml

    workdir = Path(tempfile.mkdtemp(prefix="job-costs-"))
    shutil.copy(config, workdir / config.name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--workflow-profile", str(ROOT / "workflow" / "profiles" / "default"), "--cores", str(cores),
           "--configfile", str(workdir / config.name)]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=workdir, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    name = yaml.safe_load(config.read_text())["name"]
    return workdir / "results" / name, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="config to run from a clean folder and time")
    parser.add_argument("--results", type=Path, help="results/<name> of a finished run")
    parser.add_argument("--wall-s", type=float, help="the finished run's wall time, if known")
    parser.add_argument("--since", type=float, help="only jobs finished after this Unix time (one invocation)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    floor = torch_import_s()
    if args.run:
        results, wall = run_workflow(args.run, args.cores)
    else:
        results, wall = args.results, args.wall_s
    out = report(job_costs(results, args.since), wall, args.cores)
    out.update({"torch_import_s": floor, "source": str(args.run or args.results), "machine": platform.node(),
                "load_avg_1min_at_end": os.getloadavg()[0], "cpu_count": os.cpu_count()})
    print(json.dumps(out, indent=2))
    if args.out:
        write_bench_result(args.out, out, started)


if __name__ == "__main__":
    main()
