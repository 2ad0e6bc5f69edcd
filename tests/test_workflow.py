"""End-to-end: the real Snakemake workflow on config/smoke.yaml in a temporary directory."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

pytestmark = pytest.mark.slow
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
             "--workflow-profile", str(ROOT / "workflow" / "profiles" / "default")]


def snakemake(workdir: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(config or workdir / "smoke.yaml"), *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1200)


def jobs_planned(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    counts, in_table = {}, False
    for line in result.stdout.splitlines():
        if line.startswith("job") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if not parts or parts[0] == "total":
                break
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
    return counts


@contextmanager
def edited(source: Path) -> Iterator[None]:
    """A real edit of a package file, undone afterwards (content and mtime).

    Snakemake ignores a newer mtime when the content's checksum is unchanged, so touching is not enough.
    """
    before, text = source.stat(), source.read_text()
    try:
        source.write_text(text + "# edited by a test\n")
        yield
    finally:
        source.write_text(text)
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("smoke")
    shutil.copy(ROOT / "config" / "smoke.yaml", workdir / "smoke.yaml")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir


def smoke_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())


def test_every_output_exists_with_finite_metrics(smoke_run: Path) -> None:
    cfg = smoke_config()
    r = smoke_run / "results" / "smoke"
    assert (r / "summary" / "results.md").is_file() and (r / "summary" / "plots" / "pareto.png").stat().st_size > 10_000
    metrics = sorted((r / "evaluate").rglob("metrics.json"))
    assert len(metrics) == len(cfg["models"]) * len(cfg["passes"])
    for path in metrics:
        m = json.loads(path.read_text())
        assert math.isfinite(m["mse"]) and math.isfinite(m["mae"]) and m["n_windows"] > 0
        assert m["latency"]["b1"]["median_ms"] > 0
        assert m["simulated"] == (m["pass_kind"] == "rtn_weight_sim")
    assert not list(r.rglob("*.tmp")), "temporary files left behind"


def test_mlflow_holds_the_run_tree(smoke_run: Path) -> None:
    cfg = smoke_config()
    n_models, n_passes = len(cfg["models"]), len(cfg["passes"])
    db = sqlite3.connect(smoke_run / "results" / "mlflow.db")
    runs = dict(db.execute("select run_uuid, status from runs"))
    tags = {}
    for run, key, value in db.execute("select run_uuid, key, value from tags"):
        tags.setdefault(run, {})[key] = value
    stages = [t.get("seqcomp.stage") for t in tags.values()]
    assert stages.count("train") == n_models
    assert stages.count("compress") == stages.count("evaluate") == n_models * n_passes
    assert set(runs.values()) == {"FINISHED"}
    for run, t in tags.items():
        parent = t.get("mlflow.parentRunId")
        expected_parent = {"train": None, "compress": "train", "evaluate": "compress"}[t["seqcomp.stage"]]
        assert (parent and tags[parent]["seqcomp.stage"]) == expected_parent or parent is expected_parent
    params = dict(db.execute(
        "select p.key, p.value from params p join tags t on p.run_uuid = t.run_uuid "
        "where t.key = 'snakemake.wildcard.model' and t.value = 'lstm' and p.key = 'params.hidden'"
    ))
    assert params == {"params.hidden": "16"}


def test_second_invocation_has_nothing_to_do(smoke_run: Path) -> None:
    result = snakemake(smoke_run, "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changing_one_model_reruns_only_its_jobs(smoke_run: Path) -> None:
    cfg = smoke_config()
    cfg["models"]["lstm"]["hidden"] = 24
    changed = smoke_run / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    planned = jobs_planned(snakemake(smoke_run, "-n", config=changed))
    n_passes = len(cfg["passes"])
    assert planned == {"train": 1, "compress": n_passes, "evaluate": n_passes, "summarize": 1, "all": 1}


def test_changing_one_pass_reruns_only_that_pass(smoke_run: Path) -> None:
    cfg = smoke_config()
    cfg["passes"]["w4_rtn_sim"]["bits"] = 3
    changed = smoke_run / "changed_pass.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    planned = jobs_planned(snakemake(smoke_run, "-n", config=changed))
    n = len(cfg["models"])
    assert planned == {"compress": n, "evaluate": n, "summarize": 1, "all": 1}


def test_editing_a_model_file_reruns_only_that_model(smoke_run: Path) -> None:
    with edited(ROOT / "src" / "seqcomp" / "models" / "lstm.py"):
        planned = jobs_planned(snakemake(smoke_run, "-n"))
    n_passes = len(smoke_config()["passes"])
    assert planned == {"train": 1, "compress": n_passes, "evaluate": n_passes, "summarize": 1, "all": 1}


def test_editing_compression_code_skips_training(smoke_run: Path) -> None:
    with edited(ROOT / "src" / "seqcomp" / "compress" / "fp32.py"):
        planned = jobs_planned(snakemake(smoke_run, "-n"))
    cfg = smoke_config()
    n = len(cfg["models"]) * len(cfg["passes"])
    assert planned == {"compress": n, "evaluate": n, "summarize": 1, "all": 1}


def test_a_bad_config_stops_before_any_job(tmp_path: Path) -> None:
    cfg = smoke_config()
    cfg["models"]["lstm"]["hiden"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    result = snakemake(tmp_path, "-n", config=bad)
    assert result.returncode != 0
    assert "models.lstm: unknown key(s) hiden; valid keys:" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_workflow_passes_snakemake_lint(tmp_path: Path) -> None:
    result = snakemake(tmp_path, "--lint", config=ROOT / "config" / "smoke.yaml")
    assert result.returncode == 0 and "good condition" in result.stdout + result.stderr, result.stdout[-3000:]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_ui_serves_the_runs_on_localhost(smoke_run: Path) -> None:
    import time
    import urllib.request

    port = free_port()
    db = (smoke_run / "results" / "mlflow.db").resolve()
    ui = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{db}",
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        deadline, body = time.time() + 120, None
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name=seqcomp/smoke", timeout=5) as r:
                    body = json.load(r)
            except OSError:
                time.sleep(1)
        assert body is not None, "the MLflow UI did not answer within 120 s"
        request = urllib.request.Request(
            f"{base}/runs/search", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"experiment_ids": [body["experiment"]["experiment_id"]], "max_results": 1000}).encode(),
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            runs = json.load(r)["runs"]
        cfg = smoke_config()
        assert len(runs) == len(cfg["models"]) * (1 + 2 * len(cfg["passes"]))
    finally:
        os.killpg(ui.pid, signal.SIGTERM)  # the UI runs its server in worker processes
        ui.wait(timeout=30)
