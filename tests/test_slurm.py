"""The workflow under a real one-node Slurm cluster (workflow/profiles/slurm/local-cluster.sh):
every job goes through sbatch (snakemake-executor-plugin-slurm), tracking through an `mlflow
server` on 127.0.0.1, as docs/slurm.md tells cluster users to run it.

Needs root and Debian's slurm-wlm, slurmdbd, munge and mariadb-server (.ci/run installs them);
skipped otherwise, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from test_tracking import mlflow_server
from test_workflow import smoke_config, snakemake

pytestmark = pytest.mark.slow
CLUSTER = ROOT / "workflow" / "profiles" / "slurm" / "local-cluster.sh"
PARTITION = "debug"  # the test cluster's only partition (local-cluster.sh)
NEEDS = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd")
# The profile as a user runs it, polling faster (its defaults suit hours-long jobs: an initial
# 40 s wait, then every 10 s) and keeping the Slurm logs of successful jobs for the checks.
FAST = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2",
        "--slurm-keep-successful-logs"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running one-node cluster; yields the environment its clients need. Stopped (every
    daemon, by pid) however the tests end."""
    missing = [c for c in NEEDS if shutil.which(c) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"a local Slurm cluster needs root and {', '.join(missing) or 'its packages'} "
                    "(apt-get install slurm-wlm slurmdbd munge mariadb-server)")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_CONF": str(state / "slurm.conf"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    try:
        started = subprocess.run([str(CLUSTER), "start", str(state)], capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stderr + logs_of(state)
        yield env
    finally:
        subprocess.run([str(CLUSTER), "stop", str(state)], timeout=300)


def logs_of(state: Path) -> str:
    return "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((state / "log").glob("*.log")))


def slurm_snakemake(workdir: Path, config: Path, env: dict[str, str], *args: str,
                    **popen: object) -> subprocess.CompletedProcess | subprocess.Popen:
    """The README's cluster command; ``popen`` given: started in the background, else run to the end."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--workflow-profile", str(ROOT / "workflow" / "profiles" / "slurm"), "--configfile", str(config),
           *FAST, *args]
    if popen:
        return subprocess.Popen(cmd, cwd=workdir, env=env, **popen)
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)


def sacct(env: dict[str, str]) -> list[dict[str, str]]:
    """Every job the cluster has accounted for (one row per job, steps left out)."""
    fields = ["JobID", "JobName", "Comment", "State", "ReqCPUS", "ReqMem", "Timelimit", "AllocTRES", "Partition"]
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-S", "2000-01-01", "-o", ",".join(fields)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines()]


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, dict[str, str]]:
    """A dry run's jobs as {plugin comment (rule_<rule>_wildcards_<values>): {threads, mem_mb, ...}}."""
    jobs = {}
    for block in result.stdout.split("\nrule ")[1:]:
        lines = [line.strip() for line in block.splitlines()]
        rule = lines[0].rstrip(":")
        fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        wildcards = [kv.split("=", 1)[1] for kv in fields["wildcards"].split(", ")] if "wildcards" in fields else []
        comment = f"rule_{rule}" + (f"_wildcards_{'_'.join(wildcards)}" if wildcards else "")
        resources = dict(kv.split("=", 1) for kv in fields["resources"].split(", "))
        jobs[comment] = {"threads": fields.get("threads", "1"), **resources}
    return jobs


def slurm_time(minutes: str) -> str:
    return f"{int(minutes) // 60:02d}:{int(minutes) % 60:02d}:00"


@pytest.fixture(scope="module")
def runs(cluster: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same small config run twice: locally (default profile, SQLite store) and through Slurm
    (tracking through an mlflow server). Training asks for a GPU (accelerator auto) and finds none."""
    cfg = smoke_config()
    cfg.update(name="slurm", models={"naive": {}, "linear": {}, "lstm": {"hidden": 8}}, passes={"fp32": {}})
    cfg["train"]["accelerator"] = "auto"
    out = {}
    for where in ("local", "slurm"):
        out[where] = tmp_path_factory.mktemp(where)
        (out[where] / "slurm.yaml").write_text(yaml.safe_dump(cfg))
    local = snakemake(out["local"], config=out["local"] / "slurm.yaml")
    assert local.returncode == 0, local.stderr[-3000:]

    workdir, config = out["slurm"], out["slurm"] / "slurm.yaml"
    with mlflow_server(workdir) as uri:
        env = {**cluster, "MLFLOW_TRACKING_URI": uri}
        plan = slurm_snakemake(workdir, config, env, "-n", "--set-resources", f"train:slurm_partition={PARTITION}")
        assert plan.returncode == 0, plan.stderr[-3000:]
        (workdir / "plan.json").write_text(json.dumps(planned_jobs(plan)))
        result = slurm_snakemake(workdir, config, env, "--set-resources", f"train:slurm_partition={PARTITION}")
        (workdir / "snakemake.log").write_text(result.stdout + result.stderr)
        assert result.returncode == 0, result.stderr[-5000:]
    return out


def test_every_job_ran_as_a_slurm_job_with_the_resources_its_rule_asks_for(cluster: dict, runs: dict) -> None:
    plan = json.loads((runs["slurm"] / "plan.json").read_text())
    local_rules = {"rule_all", "rule_tracking_init"}  # localrule: True, run by Snakemake itself
    jobs = {j["Comment"]: j for j in sacct(cluster) if j["Comment"].startswith("rule_")}
    assert set(jobs) == set(plan) - local_rules
    for comment, job in jobs.items():
        asked = plan[comment]
        assert job["State"] == "COMPLETED", job
        assert (job["ReqCPUS"], job["ReqMem"], job["Timelimit"]) == (
            asked["threads"], f"{asked['mem_mb']}M", slurm_time(asked["runtime"])), comment
        assert ("gres/gpu=1" in job["AllocTRES"]) == (asked.get("gpu") == "1"), comment
        assert (asked.get("gpu") == "1") == comment.startswith("rule_train_")  # accelerator auto asks for one
        rule, _, wildcards = comment.removeprefix("rule_").partition("_wildcards_")
        log = runs["slurm"] / ".snakemake" / "slurm_logs" / f"rule_{rule}" / wildcards / f"{job['JobID']}.log"
        assert log.is_file(), log
    assert {j["Partition"] for c, j in jobs.items() if c.startswith("rule_train_")} == {PARTITION}


def metrics(workdir: Path) -> dict[str, dict]:
    return {str(p.relative_to(workdir)): json.loads(p.read_text())
            for p in sorted(workdir.glob("results/*/evaluate/**/metrics.json"))}


def test_metrics_equal_a_local_run(runs: dict) -> None:
    local, slurm = metrics(runs["local"]), metrics(runs["slurm"])
    assert set(local) == set(slurm) and len(local) == 3
    for path, m in slurm.items():
        ref = local[path]
        assert m["n_windows"] == ref["n_windows"] and m["size_bytes"] == ref["size_bytes"]
        if m["model"] in ("naive", "linear"):  # parameter-free, closed form: the same arithmetic
            assert (m["mse"], m["mae"], m["mse_per_step"]) == (ref["mse"], ref["mae"], ref["mse_per_step"]), path
        else:  # SGD: the same seed and batches, floating-point order may differ by thread count
            assert m["mse"] == pytest.approx(ref["mse"], rel=1e-5) and m["mae"] == pytest.approx(ref["mae"], rel=1e-5)


def run_tree(db: Path) -> list[tuple]:
    """Each run as (stage, model, pass, parent's stage, status): the shape of the store, no ids."""
    con = sqlite3.connect(db)
    tags: dict[str, dict[str, str]] = {}
    for run, key, value in con.execute("select run_uuid, key, value from tags"):
        tags.setdefault(run, {})[key] = value
    status = dict(con.execute("select run_uuid, status from runs"))
    return sorted(
        (t.get("seqcomp.stage"), t.get("snakemake.wildcard.model"), t.get("snakemake.wildcard.passname"),
         tags.get(t.get("mlflow.parentRunId"), {}).get("seqcomp.stage"), status[run])
        for run, t in tags.items()
    )


def test_mlflow_server_holds_the_run_tree_of_a_local_run(runs: dict) -> None:
    slurm = run_tree(runs["slurm"] / "server.db")
    assert slurm == run_tree(runs["local"] / "results" / "mlflow.db")
    assert [r[0] for r in slurm].count("train") == 3 and {r[4] for r in slurm} == {"FINISHED"}
