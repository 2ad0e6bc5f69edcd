"""MLflow record keeping: nesting across processes, superseded reruns, parallel SQLite writers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from seqcomp.tracking import Run, client, ensure_experiment, flatten, resolve_uri


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
