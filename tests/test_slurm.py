"""The workflow under a real one-node Slurm cluster (workflow/profiles/slurm/local-cluster.sh):
every job goes through sbatch (snakemake-executor-plugin-slurm), tracking through an `mlflow
server` on 127.0.0.1, as docs/slurm.md tells cluster users to run it.

Needs root and Debian's slurm-wlm, slurmdbd, munge and mariadb-server (.ci/run installs them);
skipped otherwise, saying why.
"""

from __future__ import annotations

import json
import os
import re
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
PARTITION, ACCOUNT = "debug", "seqcomp"  # the test cluster's only partition and account (local-cluster.sh)
NEEDS = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running one-node cluster; yields the environment its clients need. Stopped (every
    daemon, by pid) however the tests end."""
    missing = [c for c in NEEDS if shutil.which(c) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"a local Slurm cluster needs root and {', '.join(missing) or 'its packages'} "
                    "(apt-get install slurm-wlm slurmdbd munge mariadb-server)")
    state = tmp_path_factory.mktemp("cluster")
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


def user_profile(workdir: Path) -> Path:
    """workflow/profiles/slurm as a user adapts it (docs/slurm.md): their account and partition,
    the partition for training under set-resources; plus what suits seconds-long test jobs:
    status polls every 2 s (not after 40 s, then every 10 s), Slurm logs kept for the checks."""
    profile = yaml.safe_load((ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"].update(slurm_account=ACCOUNT, slurm_partition=PARTITION)
    profile["set-resources"] = {"train": {"slurm_partition": PARTITION}}
    profile.update({"slurm-init-seconds-before-status-checks": 1, "seconds-between-status-checks": 2,
                    "slurm-keep-successful-logs": True})
    (workdir / "profile").mkdir(exist_ok=True)
    (workdir / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    return workdir / "profile"


def slurm_snakemake(workdir: Path, config: Path, env: dict[str, str], *args: str,
                    **popen: object) -> subprocess.CompletedProcess | subprocess.Popen:
    """The README's cluster command; ``popen`` given: started in the background, else run to the end.
    ``args`` come first: targets after ``--configfile`` would be read as more config files."""
    cmd = [sys.executable, "-m", "snakemake", *args, "--snakefile", str(ROOT / "Snakefile"), "--directory",
           str(workdir), "--workflow-profile", str(user_profile(workdir)), "--configfile", str(config)]
    if popen:
        return subprocess.Popen(cmd, cwd=workdir, env=env, **popen)
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)


def sacct(env: dict[str, str], workdir: Path) -> list[dict[str, str]]:
    """Every job the cluster has accounted for that ran in ``workdir`` (one row per job, no steps)."""
    fields = ["JobID", "Comment", "State", "ReqCPUS", "ReqMem", "Timelimit", "AllocTRES", "Partition", "Account",
              "WorkDir"]
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-S", "2000-01-01", "-o", ",".join(fields)],
                         env=env, capture_output=True, text=True, check=True).stdout
    rows = [dict(zip(fields, line.split("|"))) for line in out.splitlines()]
    return [r for r in rows if r["WorkDir"] == str(workdir)]


def queue(env: dict[str, str], workdir: Path) -> list[dict[str, str]]:
    """The jobs from ``workdir`` that slurmctld holds now (sacct learns of them with a delay)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%k|%T|%Z"], env=env, capture_output=True, text=True,
                         check=True).stdout
    rows = [dict(zip(("JobID", "Comment", "State", "WorkDir"), line.split("|"))) for line in out.splitlines()]
    return [r for r in rows if r["WorkDir"] == str(workdir)]


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, dict[str, str]]:
    """A dry run's jobs as {plugin comment (rule_<rule>_wildcards_<values>): {threads, mem_mb, ...}},
    read from each job's console line (its rule's message):
    ``Job 3: train tiny/lstm L24-H8 seed0 [threads=1 mem_mb=4000 runtime=120 gpu=1]``."""
    jobs = {}
    for line in result.stdout.splitlines():
        found = re.match(r"Job \d+: (\w+) (.*?)\s*\[(.*)\]$", line)
        if not found:
            continue
        rule, what, asks = found.groups()
        if rule == "summary":
            wildcards = []
        elif rule == "data":
            wildcards = [what]
        else:  # <dataset>/<model> L<lookback>-H<horizon> seed<seed> [<pass>]
            data_model, window, seed, *passname = what.split()
            lookback, horizon = window.removeprefix("L").split("-H")
            wildcards = [*data_model.split("/"), lookback, horizon, seed.removeprefix("seed"), *passname]
        comment = f"rule_{rule}" + (f"_wildcards_{'_'.join(wildcards)}" if wildcards else "")
        jobs[comment] = dict(kv.split("=", 1) for kv in asks.split())
    return jobs


def slurm_time(minutes: str) -> str:
    return f"{int(minutes) // 60:02d}:{int(minutes) % 60:02d}:00"


@pytest.fixture(scope="module")
def runs(cluster: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same small config run twice: locally (default profile, SQLite store) and through Slurm
    (tracking through an mlflow server). Training asks for a GPU (accelerator auto) and finds none."""
    cfg = smoke_config()
    cfg.update(name="slurm", models={"linear": {}, "lstm": {"hidden": 8}}, passes={"fp32": {}})
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
        plan = slurm_snakemake(workdir, config, env, "-n")
        assert plan.returncode == 0, plan.stderr[-3000:]
        (workdir / "plan.json").write_text(json.dumps(planned_jobs(plan)))
        result = slurm_snakemake(workdir, config, env)
        (workdir / "snakemake.log").write_text(result.stdout + result.stderr)
        assert result.returncode == 0, result.stderr[-5000:]
    return out


def test_every_job_ran_as_a_slurm_job_with_the_resources_its_rule_asks_for(cluster: dict, runs: dict) -> None:
    plan = json.loads((runs["slurm"] / "plan.json").read_text())
    local_rules = {"rule_all"}  # localrule: True, run by Snakemake itself
    jobs = {j["Comment"]: j for j in sacct(cluster, runs["slurm"])}
    assert set(jobs) == set(plan) - local_rules
    for comment, job in jobs.items():
        asked = plan[comment]
        assert job["State"] == "COMPLETED", job
        assert (job["ReqCPUS"], job["ReqMem"], job["Timelimit"]) == (
            asked["threads"], f"{asked['mem_mb']}M", slurm_time(asked["runtime"])), comment
        assert ("gres/gpu=1" in job["AllocTRES"]) == (asked.get("gpu") == "1"), comment
        # accelerator auto asks for one, but not for a closed-form fit (seqcomp.models.trains_by_sgd)
        sgd_training = comment.startswith("rule_train_") and "_linear_" not in comment
        assert (asked.get("gpu") == "1") == sgd_training, comment
        rule, _, wildcards = comment.removeprefix("rule_").partition("_wildcards_")
        log = runs["slurm"] / ".snakemake" / "slurm_logs" / f"rule_{rule}" / wildcards / f"{job['JobID']}.log"
        assert log.is_file(), log
    assert {(j["Partition"], j["Account"]) for j in jobs.values()} == {(PARTITION, ACCOUNT)}


def metrics(workdir: Path) -> dict[str, dict]:
    return {str(p.relative_to(workdir)): json.loads(p.read_text())
            for p in sorted(workdir.glob("results/*/evaluate/**/metrics.json"))}


def test_metrics_equal_a_local_run(runs: dict) -> None:
    local, slurm = metrics(runs["local"]), metrics(runs["slurm"])
    assert set(local) == set(slurm) and len(local) == 2
    for path, m in slurm.items():
        ref = local[path]
        assert m["n_windows"] == ref["n_windows"] and m["size_bytes"] == ref["size_bytes"]
        if m["model"] == "linear":  # closed form: the same arithmetic, bit for bit
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
    assert [r[0] for r in slurm].count("train") == 2 and {r[4] for r in slurm} == {"FINISHED"}


def small_config(workdir: Path, name: str, **train: object) -> Path:
    cfg = smoke_config()
    cfg.update(name=name, models={"linear": {}, "lstm": {"hidden": 8}}, passes={"fp32": {}})
    cfg["train"].update(train)
    (workdir / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return workdir / f"{name}.yaml"


def live_runs(db: Path, stage: str) -> dict[str, str]:
    """{run id: status} of the runs of ``stage`` not superseded by a rerun of their job."""
    con = sqlite3.connect(db)
    tags: dict[str, dict[str, str]] = {}
    for run, key, value in con.execute("select run_uuid, key, value from tags"):
        tags.setdefault(run, {})[key] = value
    status = dict(con.execute("select run_uuid, status from runs"))
    return {r: status[r] for r, t in tags.items() if t.get("seqcomp.stage") == stage and t.get("seqcomp.superseded") != "true"}


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the workflow ended before {what}"
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.1)


def test_a_cancelled_training_job_is_reported_and_resumes_from_its_checkpoint(cluster: dict, tmp_path: Path) -> None:
    """scancel mid-training: Snakemake reports the Slurm job, resubmits it (the profile's
    retries: 1) and the new job resumes from the last epoch checkpoint."""
    config = small_config(tmp_path, "cancel", max_epochs=40, patience=40, batch_size=8, limit_train_batches=None)
    out = tmp_path / "results" / "cancel" / "train" / "tiny" / "lstm" / "L24-H8" / "seed0"
    with mlflow_server(tmp_path) as uri, (tmp_path / "snakemake.log").open("w") as log:
        env = {**cluster, "MLFLOW_TRACKING_URI": uri}
        proc = slurm_snakemake(tmp_path, config, env, str(out.relative_to(tmp_path) / "run.json"),
                               stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until((out / "checkpoints" / "last.ckpt").exists, proc, "a training checkpoint")
            running = [j["JobID"] for j in queue(cluster, tmp_path) if j["Comment"].startswith("rule_train_")]
            subprocess.run(["scancel", *running], env=cluster, check=True)
            assert proc.wait(timeout=600) == 0, (tmp_path / "snakemake.log").read_text()[-5000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    text = (tmp_path / "snakemake.log").read_text()
    assert len(running) == 1 and f"SLURM-job '{running[0]}' failed" in text and "CANCELLED" in text
    assert "Error in rule train" in text
    result = json.loads((out / "run.json").read_text())
    assert result["resumed_from"] == str((out / "checkpoints" / "last.ckpt").relative_to(tmp_path))
    assert result["epochs"] == 40
    train_jobs = [j for j in sacct(cluster, tmp_path) if j["Comment"].startswith("rule_train_")]
    assert [j["State"].split()[0] for j in train_jobs] == ["CANCELLED", "COMPLETED"]
    assert list(live_runs(tmp_path / "server.db", "train").values()) == ["FINISHED"]


def test_a_data_parallel_training_job_runs_its_processes_in_one_slurm_job(cluster: dict, tmp_path: Path) -> None:
    """train.devices: 2 on CPU: one Slurm job with 2 CPUs (one task: the plugin starts the
    command with `srun -n1`, and the command starts its second process; docs/slurm.md), whose
    fit runs as 2 gloo processes and writes its outputs once."""
    config = small_config(tmp_path, "ddp", devices=2, accelerator="cpu")
    out = tmp_path / "results" / "ddp" / "train" / "tiny" / "lstm" / "L24-H8" / "seed0"
    result = slurm_snakemake(tmp_path, config, cluster, str(out.relative_to(tmp_path) / "run.json"))
    assert result.returncode == 0, result.stderr[-5000:]
    [job] = [j for j in sacct(cluster, tmp_path) if j["Comment"].startswith("rule_train_")]
    assert (job["State"], job["ReqCPUS"]) == ("COMPLETED", "2") and "gres/gpu" not in job["AllocTRES"]
    assert json.loads((out / "run.json").read_text())["devices"] == 2
    log = (tmp_path / "results" / "ddp" / "logs" / "train" / "tiny" / "lstm" / "L24-H8" / "seed0.log").read_text()
    assert "2 processes (DDP)" in log and log.count("epoch 1/") == 1  # rank 0 logs, rank 1 does not


def test_a_job_over_its_memory_request_is_killed_and_the_error_says_what_to_raise(cluster: dict, tmp_path: Path) -> None:
    config = small_config(tmp_path, "oom")
    result = slurm_snakemake(tmp_path, config, cluster, "results/oom/data/tiny/meta.json",
                             "--set-resources", "data:mem_mb=30", "--retries", "0")
    assert result.returncode != 0
    [job] = sacct(cluster, tmp_path)
    log = tmp_path / ".snakemake" / "slurm_logs" / "rule_data" / "tiny" / f"{job['JobID']}.log"
    assert "exceeded memory limit" in log.read_text()
    assert "Error in rule data" in result.stderr and str(log) in result.stderr
    assert (f"Slurm job {job['JobID']} (rule data) was killed for exceeding its mem_mb request ({log}): "
            "raise it, e.g. --set-resources data:mem_mb=<more>") in result.stderr


def test_a_drained_node_holds_the_jobs_until_it_is_resumed(cluster: dict, tmp_path: Path) -> None:
    """Jobs wait in the queue while the only node is drained, then run once it is resumed:
    each job once, one training run in MLflow."""
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], env=cluster, capture_output=True, text=True,
                          check=True).stdout.strip()
    config = small_config(tmp_path, "drain")
    target = "results/drain/train/tiny/linear/L24-H8/seed0/run.json"
    scontrol = ["scontrol", "update", f"nodename={node}"]
    subprocess.run([*scontrol, "state=drain", "reason=test"], env=cluster, check=True)
    try:
        with mlflow_server(tmp_path) as uri, (tmp_path / "snakemake.log").open("w") as log:
            env = {**cluster, "MLFLOW_TRACKING_URI": uri}
            proc = slurm_snakemake(tmp_path, config, env, target, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_until(lambda: [j["State"] for j in queue(cluster, tmp_path)] == ["PENDING"], proc, "a pending job")
                time.sleep(6)  # three status polls while the node is drained
                assert proc.poll() is None and [j["State"] for j in queue(cluster, tmp_path)] == ["PENDING"]
                subprocess.run([*scontrol, "state=resume"], env=cluster, check=True)
                assert proc.wait(timeout=600) == 0, (tmp_path / "snakemake.log").read_text()[-5000:]
            finally:
                if proc.poll() is None:
                    proc.kill()
    finally:
        subprocess.run([*scontrol, "state=resume"], env=cluster, capture_output=True)  # for the tests after this one
    comments = [j["Comment"] for j in sacct(cluster, tmp_path)]
    assert sorted(comments) == ["rule_data_wildcards_tiny", "rule_train_wildcards_tiny_linear_24_8_0"]
    assert {j["State"] for j in sacct(cluster, tmp_path)} == {"COMPLETED"}
    assert list(live_runs(tmp_path / "server.db", "train").values()) == ["FINISHED"]
    assert sqlite3.connect(tmp_path / "server.db").execute("select count(*) from runs").fetchone() == (1,)
