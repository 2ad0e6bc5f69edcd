"""MLflow record keeping: nesting across processes, superseded reruns, parallel SQLite writers,
the training run's record (data, code, config, model), a remote tracking server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from seqcomp.tracking import (
    Run, client, ensure_experiment, file_sha256, flatten, git_state, redact, resolve_uri, snakemake_tags,
    write_resolved_config,
)


def uri(tmp_path: Path) -> str:
    return resolve_uri(f"sqlite:///{tmp_path}/mlflow.db")


def test_sqlite_uri_gets_a_busy_timeout(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert uri(tmp_path).endswith("?timeout=120")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_uri("sqlite:///x.db") == "http://127.0.0.1:5999"


def test_nesting_and_superseded_reruns(tmp_path: Path) -> None:
    u = uri(tmp_path)
    ensure_experiment(u, "seqcomp/t")
    parent = Run.start(u, "seqcomp/t", "train/x", "train/a", {"seqcomp.stage": "train"})
    child = Run.start(u, "seqcomp/t", "compress/x", "compress/a", {"seqcomp.stage": "compress"}, parent=parent.run_id)
    child.log_params({"pass": {"bits": 4}})
    child.finish()
    again = Run.start(u, "seqcomp/t", "compress/x", "compress/a", {"seqcomp.stage": "compress"}, parent=parent.run_id)
    c = client(u)
    assert c.get_run(child.run_id).data.tags["seqcomp.superseded"] == "true"
    assert c.get_run(again.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    assert "seqcomp.superseded" not in c.get_run(again.run_id).data.tags
    assert c.get_run(child.run_id).data.params == {"pass.bits": "4"}


def test_flatten_nested_params() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": "1", "a.c": "[1, 2]", "d": "None"}


WRITER = """
import sys
from seqcomp.tracking import Run
uri, i = sys.argv[1], sys.argv[2]
run = Run.start(uri, "seqcomp/p", f"job{i}", f"train/{i}", {"seqcomp.stage": "train"})
run.log_params({"i": i, "x": {"y": 1}})
for step in range(20):
    run.log_metrics({"m": step}, step=step)
run.finish()
"""


def test_parallel_writers_lose_no_run(tmp_path: Path) -> None:
    u = uri(tmp_path)
    ensure_experiment(u, "seqcomp/p")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, u, str(i)]) for i in range(6)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 6
    c = client(u)
    runs = c.search_runs([c.get_experiment_by_name("seqcomp/p").experiment_id])
    assert sorted(r.data.params["i"] for r in runs) == [str(i) for i in range(6)]
    assert all(r.info.status == "FINISHED" and len(c.get_metric_history(r.info.run_id, "m")) == 20 for r in runs)


def train_linear(tiny_data: Path, tmp_path: Path, uri: str) -> tuple[Run, dict]:
    """The closed-form linear model trained through the real stage: the cheapest full record."""
    from seqcomp.train.stage import train

    settings = {"max_epochs": 1, "patience": 1, "batch_size": 32, "lr": 0.01, "weight_decay": 0.0, "lr_decay": 1.0,
                "grad_clip": 1.0, "loss": "mse", "limit_train_batches": 2, "accelerator": "cpu", "precision": "auto"}
    spec = {"experiment": "seqcomp/rec", "dataset": "tiny", "model": "linear", "kind": "linear", "params": {},
            "train": settings, "lookback": 24, "horizon": 8, "seed": 0}
    config = tmp_path / "config.yaml"
    config.write_text("name: rec\n")
    tags = snakemake_tags("train", {"model": "linear"})
    run = Run.start(uri, spec["experiment"], "train/linear", "train/tiny/linear", tags)
    return run, train(spec, tiny_data, tmp_path / "out", run, config_file=config)


SECRET = "s3cr3t-value-never-logged"


def test_training_run_holds_data_code_config_and_a_loadable_model(
    tiny_data: Path, tmp_path: Path, monkeypatch  # noqa: ANN001
) -> None:
    import json

    import mlflow.pytorch
    import torch

    from seqcomp.artifacts import load_model
    from seqcomp.data.windows import PreparedSeries

    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, SECRET)
    u = uri(tmp_path)
    run, summary = train_linear(tiny_data, tmp_path, u)
    c = client(u)
    record = c.get_run(run.run_id)
    assert record.info.status == "FINISHED"

    # the dataset: content hash of the file the job read, split sizes, no copy of the data
    (inp,) = record.inputs.dataset_inputs
    profile = json.loads(inp.dataset.profile)
    assert profile["sha256"] == file_sha256(tiny_data / "series.parquet")
    assert inp.dataset.digest == profile["sha256"][:32] and inp.dataset.name == "tiny"
    meta = PreparedSeries.load(tiny_data).meta
    assert sum(profile["rows"].values()) == meta["n_rows"] and profile["source"] == meta["source"]
    assert profile["windows"]["val"] == len(PreparedSeries.load(tiny_data).windows("val", 24, 8))
    assert {t.key: t.value for t in inp.tags} == {"mlflow.data.context": "training"}

    # code, config and Snakemake job
    tags = record.data.tags
    assert len(tags["seqcomp.git_commit"]) == 40 and tags["seqcomp.git_dirty"] in ("True", "False")
    assert tags["snakemake.rule"] == "train" and tags["snakemake.wildcard.model"] == "linear"
    artifacts = {a.path for a in c.list_artifacts(run.run_id)}
    assert {"config.yaml", "job_spec.json", "model.pt", "history.csv"} <= artifacts

    # the MLflow model predicts what model.pt predicts
    x = PreparedSeries.load(tiny_data).windows("test", 24, 8).tensors()[0][:5]
    logged = mlflow.pytorch.load_model(summary["model_uri"])
    with torch.no_grad():
        assert torch.allclose(logged(x), load_model(tmp_path / "out" / "model.pt")(x))
    (model,) = c.search_logged_models([record.info.experiment_id])
    assert model.source_run_id == run.run_id and model.status == "READY"

    # nothing secret in params, tags or the text artifacts
    texts = [json.dumps(record.data.params), json.dumps(tags), inp.dataset.source, inp.dataset.profile]
    texts += [Path(c.download_artifacts(run.run_id, name, str(tmp_path / "dl"))).read_text()
              for name in ("config.yaml", "job_spec.json")]
    assert not [t for t in texts if SECRET in t]


def test_git_state_outside_a_checkout_is_unknown(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import seqcomp.tracking

    monkeypatch.setattr(seqcomp.tracking, "PROJECT_ROOT", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no checkout above tmp_path
    assert git_state() == {"seqcomp.git_commit": "unknown", "seqcomp.git_dirty": "unknown"}


def test_credentials_are_cut_from_uris(tmp_path: Path) -> None:
    assert redact("http://alice:pw@mlflow.lab:5000/x") == "http://mlflow.lab:5000/x"
    assert redact("sqlite:////tmp/mlflow.db?timeout=120") == "sqlite:////tmp/mlflow.db?timeout=120"
    write_resolved_config({"name": "x", "tracking_uri": "https://bob:hunter2@mlflow.lab"}, tmp_path / "c.yaml")
    assert "hunter2" not in (tmp_path / "c.yaml").read_text() and "mlflow.lab" in (tmp_path / "c.yaml").read_text()


@contextmanager
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 (SQLite store, proxied artifacts under tmp_path); killed on exit."""
    from test_workflow import free_port

    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=5).close()
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()[-3000:]
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server runs its app in worker processes
        server.wait(timeout=30)
        log.close()


def rest(base: str, path: str, body: dict | None = None) -> dict:
    import json

    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/{path}", method="POST" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None, headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.load(r)


@pytest.mark.slow
def test_a_train_job_logs_to_a_remote_tracking_server(tiny_data: Path, tmp_path: Path) -> None:
    import json

    spec = {"experiment": "seqcomp/remote", "dataset": "tiny", "model": "linear", "kind": "linear", "params": {},
            "train": {"max_epochs": 1, "patience": 1, "batch_size": 32, "lr": 0.01, "weight_decay": 0.0, "lr_decay": 1.0,
                      "grad_clip": 1.0, "loss": "mse", "limit_train_batches": 2, "accelerator": "cpu",
                      "precision": "auto"}, "lookback": 24, "horizon": 8, "seed": 0}
    (tmp_path / "config.yaml").write_text("name: remote\n")
    with mlflow_server(tmp_path) as base:
        env = {**os.environ, "MLFLOW_TRACKING_URI": base}
        job = subprocess.run(
            [sys.executable, "-m", "seqcomp", "train", "--spec", json.dumps(spec), "--data", str(tiny_data),
             "--out", str(tmp_path / "out"), "--config-file", str(tmp_path / "config.yaml")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )
        assert job.returncode == 0, job.stderr[-3000:]
        experiment = rest(base, "experiments/get-by-name?experiment_name=seqcomp/remote")["experiment"]
        (run,) = rest(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        run_id = run["info"]["run_id"]
        assert run["info"]["status"] == "FINISHED" and run["inputs"]["dataset_inputs"][0]["dataset"]["name"] == "tiny"
        listed = rest(base, f"artifacts/list?run_id={run_id}")["files"]
        assert {"config.yaml", "model.pt", "history.csv", "job_spec.json"} <= {f["path"] for f in listed}
        model_id = json.loads((tmp_path / "out" / "run.json").read_text())["model_uri"].removeprefix("models:/")
        model = rest(base, f"logged-models/{model_id}")["model"]
        assert model["info"]["source_run_id"] == run_id and model["info"]["status"] == "LOGGED_MODEL_READY"
    # nothing went to a local store; the artifacts went through the server to its destination
    assert not (tmp_path / "results").exists()
    stored = {p.name for p in (tmp_path / "server-artifacts").rglob("*") if p.is_file()}
    assert {"config.yaml", "model.pt", "MLmodel", "input_example.json"} <= stored


def test_run_names_tell_the_jobs_of_a_grid_apart() -> None:
    from seqcomp.cli import run_name

    spec = {"dataset": "ett", "model": "lstm", "lookback": 96, "horizon": 24, "seed": 2}
    assert run_name("train", spec) == "train/ett/lstm/L96-H24/seed2"
    assert run_name("evaluate", {**spec, "pass": "int8_dynamic"}) == "evaluate/ett/lstm/L96-H24/seed2/int8_dynamic"
