"""Record keeping: jobs write journals without MLflow; one replayer applies them to the store
(nesting by job key, superseded reruns, statuses, the training record, idempotent replay after a
crash at any point, live replay in a thread, a remote tracking server)."""

from __future__ import annotations

import json
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

from seqcomp.names import job_key
from seqcomp.tracking import (
    Run, current_runs, file_sha256, flatten, git_state, redact, resolve_uri, snakemake_tags, tracked,
    write_resolved_config,
)
from seqcomp.tracking.replay import STATE_SUFFIX, Progress, Replayer, client, drain_live, start_live

EXP = "seqcomp/t"


def uri(tmp_path: Path) -> str:
    return resolve_uri(f"sqlite:///{tmp_path}/mlflow.db")


def replay(journals: Path, u: str, final: bool = False) -> list[str]:
    return Replayer(journals, u).replay(final=final)


def runs_of(u: str, experiment: str = EXP) -> dict[str, object]:
    """{seqcomp.journal id: run} of every run in ``experiment``."""
    c = client(u)
    exp = c.get_experiment_by_name(experiment)
    return {r.data.tags["seqcomp.journal"]: r for r in c.search_runs([exp.experiment_id], max_results=1000)}


def job(journals: Path, stage: str, spec: dict, parent: str | None = None, finish: bool = True) -> Run:
    """A stand-in job: starts a run, logs params and three metric steps, finishes unless told not to."""
    run = Run.start(journals, EXP, f"{stage}/x", job_key(stage, spec), {"seqcomp.stage": stage},
                    parent=job_key(parent, spec) if parent else None)
    run.log_params({"spec": spec})
    for step in range(3):
        run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    if finish:
        run.finish()
    return run


SPEC = {"dataset": "tiny", "model": "linear", "lookback": 24, "horizon": 8, "seed": 0, "pass": "fp32"}


def test_sqlite_uri_gets_a_busy_timeout(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert uri(tmp_path).endswith("?timeout=120")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_uri("sqlite:///x.db") == "http://127.0.0.1:5999"


def test_flatten_nested_params() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": "1", "a.c": "[1, 2]", "d": "None"}


def test_job_keys_name_the_stage_and_its_wildcards() -> None:
    assert job_key("train", SPEC) == "train/tiny/linear/24/8/0"  # a compress spec names its training job
    assert job_key("evaluate", SPEC) == "evaluate/tiny/linear/24/8/0/fp32"


def test_nesting_by_job_key_and_superseded_reruns(tmp_path: Path) -> None:
    journals, u = tmp_path / "journal", uri(tmp_path)
    train = job(journals, "train", SPEC)
    first = job(journals, "compress", SPEC, parent="train")
    assert replay(journals, u) == []
    again = job(journals, "compress", SPEC, parent="train")  # a rerun, replayed later
    assert replay(journals, u) == []
    runs = runs_of(u)
    t, old, new = (runs[r.path.stem] for r in (train, first, again))
    assert old.data.tags["mlflow.parentRunId"] == new.data.tags["mlflow.parentRunId"] == t.info.run_id
    assert old.data.tags["seqcomp.superseded"] == "true" and "seqcomp.superseded" not in new.data.tags
    assert new.data.params == {f"spec.{k}": str(v) for k, v in SPEC.items()}
    assert new.data.tags["seqcomp.job"] == "compress/tiny/linear/24/8/0/fp32" and new.info.status == "FINISHED"
    assert len(client(u).get_metric_history(new.info.run_id, "loss")) == 3


def test_failed_and_killed_jobs_get_their_status(tmp_path: Path) -> None:
    journals, u = tmp_path / "journal", uri(tmp_path)
    with pytest.raises(RuntimeError), tracked(job(journals, "train", SPEC, finish=False)):
        raise RuntimeError("diverged")
    killed = job(journals, "compress", SPEC, parent="train", finish=False)  # its process was killed
    (tmp_path / "partial.txt").write_text("x")
    killed.log_artifact(tmp_path / "partial.txt")
    replay(journals, u)
    assert runs_of(u)[killed.path.stem].info.status == "RUNNING" and killed.files.is_dir()
    job(journals, "compress", SPEC, parent="train")  # Snakemake reruns the killed job
    replay(journals, u)
    assert not killed.files.exists(), "a killed job's linked files outlive its superseded run"
    statuses = {r.data.tags["seqcomp.job"] + ("/old" if r.data.tags.get("seqcomp.superseded") else ""): r.info.status
                for r in runs_of(u).values()}
    assert statuses == {"train/tiny/linear/24/8/0": "FAILED", "compress/tiny/linear/24/8/0/fp32/old": "KILLED",
                        "compress/tiny/linear/24/8/0/fp32": "FINISHED"}


def test_replay_resumes_and_is_idempotent_after_a_crash_at_any_point(tmp_path: Path) -> None:
    journals, u = tmp_path / "journal", uri(tmp_path)
    run = job(journals, "train", SPEC, finish=False)  # a job still running
    replay(journals, u)
    run.log_metrics({"loss": 0.1}, step=3)
    run.set_tags({"seqcomp.note": "x"})
    run.finish()
    replay(journals, u)  # picks up at its offset
    state = run.path.with_name(run.path.name + STATE_SUFFIX)
    assert json.loads(state.read_text())["offset"] == run.path.stat().st_size
    # A crash after the run was created and lines applied, before any progress was recorded:
    state.unlink()
    replay(journals, u)
    replay(journals, u)
    (record,) = runs_of(u).values()
    assert [m.step for m in client(u).get_metric_history(record.info.run_id, "loss")] == [0, 1, 2, 3]
    assert record.info.status == "FINISHED" and record.data.tags["seqcomp.note"] == "x"


def test_current_runs_are_read_from_the_journals_without_the_store(tmp_path: Path) -> None:
    journals = tmp_path / "journal"
    job(journals, "train", SPEC)
    job(journals, "compress", SPEC, parent="train", finish=False)  # killed, then rerun:
    rerun = job(journals, "compress", SPEC, parent="train", finish=False)
    rerun.log_params({"late": 1})
    runs = {r["job"]: r for r in current_runs(journals)}
    assert set(runs) == {"train/tiny/linear/24/8/0", "compress/tiny/linear/24/8/0/fp32"}
    assert runs["train/tiny/linear/24/8/0"]["status"] == "FINISHED" and runs["train/tiny/linear/24/8/0"]["end"]
    rerun.finish("FAILED")
    compress = {r["job"]: r for r in current_runs(journals)}["compress/tiny/linear/24/8/0/fp32"]
    assert compress["status"] == "FAILED" and compress["stage"] == "compress" and compress["end"] >= compress["start"]


def test_a_child_waits_for_its_parent_unless_the_replay_is_final(tmp_path: Path) -> None:
    journals, u = tmp_path / "journal", uri(tmp_path)
    orphan = job(journals, "compress", SPEC, parent="train")  # its training job was tracked elsewhere
    (problem,) = replay(journals, u)
    assert "train/tiny/linear/24/8/0 has no run yet" in problem
    assert replay(journals, u, final=True) == []
    assert "mlflow.parentRunId" not in runs_of(u)[orphan.path.stem].data.tags


def train_record(journals: Path, tiny_data: Path, out: Path) -> Run:
    """What a training job records (the calls of seqcomp.train), for a linear model saved as model.pt."""
    from seqcomp.artifacts import save_model
    from seqcomp.data.windows import PreparedSeries
    from seqcomp.models import SeriesShape, build_model

    series = PreparedSeries.load(tiny_data)
    shape = SeriesShape(24, 8, series.channels)
    net = build_model("linear", {}, shape)
    out.mkdir(parents=True)
    save_model(net, "linear", {}, shape, out / "model.pt")
    config = out / "config.yaml"
    config.write_text("name: rec\n")
    spec = {**{k: v for k, v in SPEC.items() if k != "pass"}, "experiment": EXP}
    run = Run.start(journals, EXP, "train/x", job_key("train", spec), snakemake_tags("train", {"model": "linear"}))
    with tracked(run):
        run.log_params(spec)
        run.log_dict(spec, "job_spec.json")
        run.log_artifact(config)
        run.log_input("tiny", tiny_data / "series.parquet", {"source": series.meta["source"], "rows": 1})
        run.log_artifact(out / "model.pt")
        run.log_model(out / "model.pt", series.windows("val", 24, 8)[0][0][None].numpy())
    return run


SECRET = "s3cr3t-value-never-logged"


def test_a_training_record_holds_data_code_config_and_a_loadable_model(
    tiny_data: Path, tmp_path: Path, monkeypatch  # noqa: ANN001
) -> None:
    import mlflow.pytorch
    import torch

    from seqcomp.artifacts import load_model
    from seqcomp.data.windows import PreparedSeries

    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, SECRET)
    journals, u = tmp_path / "journal", uri(tmp_path)
    run = train_record(journals, tiny_data, tmp_path / "out")
    (tmp_path / "out" / "model.pt").unlink()  # the run holds the file as it was logged, not as it is now
    assert replay(journals, u) == []
    c = client(u)
    record = runs_of(u)[run.path.stem]
    assert record.info.status == "FINISHED"
    assert not run.files.exists(), "files beside a replayed journal are kept after replay"

    # the dataset: content hash of the file the job read, its profile, no copy of the data
    (inp,) = record.inputs.dataset_inputs
    profile = json.loads(inp.dataset.profile)
    assert profile == {"sha256": file_sha256(tiny_data / "series.parquet"), "source": profile["source"], "rows": 1}
    assert inp.dataset.digest == profile["sha256"][:32] and inp.dataset.name == "tiny"
    assert {t.key: t.value for t in inp.tags} == {"mlflow.data.context": "training"}

    # code, config and Snakemake job
    tags = record.data.tags
    assert len(tags["seqcomp.git_commit"]) == 40 and tags["seqcomp.git_dirty"] in ("True", "False")
    assert tags["snakemake.rule"] == "train" and tags["snakemake.wildcard.model"] == "linear"
    assert {"config.yaml", "job_spec.json", "model.pt"} <= {a.path for a in c.list_artifacts(record.info.run_id)}

    # the MLflow model predicts what model.pt predicts; replaying it again logs no second model
    (model,) = c.search_logged_models([record.info.experiment_id])
    assert model.source_run_id == record.info.run_id and "READY" in str(model.status)
    run.path.with_name(run.path.name + STATE_SUFFIX).unlink()
    replay(journals, u)
    assert len(c.search_logged_models([record.info.experiment_id])) == 1
    x = PreparedSeries.load(tiny_data).windows("test", 24, 8).tensors()[0][:5]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", u)  # models:/ resolves through the process-wide store
    logged = mlflow.pytorch.load_model(f"models:/{model.model_id}")
    stored = Path(c.download_artifacts(record.info.run_id, "model.pt", str(tmp_path / "dl")))
    with torch.no_grad():
        assert torch.allclose(logged(x), load_model(stored)(x))

    # nothing secret in params, tags or the text artifacts
    texts = [json.dumps(record.data.params), json.dumps(tags), inp.dataset.source, inp.dataset.profile]
    texts += [Path(c.download_artifacts(record.info.run_id, name, str(tmp_path / "dl"))).read_text()
              for name in ("config.yaml", "job_spec.json")]
    assert not [t for t in texts if SECRET in t]


JOB = """
import sys
from seqcomp.tracking import Run, tracked
journals, i = sys.argv[1], sys.argv[2]
run = Run.start(journals, "seqcomp/p", f"job{i}", f"train/{i}", {"seqcomp.stage": "train"})
with tracked(run):
    run.log_params({"i": i, "x": {"y": 1}})
    for step in range(20):
        run.log_metrics({"m": step}, step=step)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("mlflow", "pandas", "lightning", "sqlalchemy"))
assert not heavy, heavy
"""


def test_parallel_jobs_import_no_mlflow_and_lose_no_run(tmp_path: Path) -> None:
    journals, u = tmp_path / "journal", uri(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", JOB, str(journals), str(i)], stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 4, [p.stderr.read()[-2000:] for p in procs]
    assert not (tmp_path / "mlflow.db").exists()
    replay(journals, u)
    runs = runs_of(u, "seqcomp/p").values()
    assert sorted(r.data.params["i"] for r in runs) == [str(i) for i in range(4)]
    c = client(u)
    assert all(r.info.status == "FINISHED" and len(c.get_metric_history(r.info.run_id, "m")) == 20 for r in runs)


def test_live_replay_shows_runs_while_the_workflow_runs(tmp_path: Path) -> None:
    journals = tmp_path / "journal"
    live = start_live(journals, uri(tmp_path))
    try:
        running = job(journals, "train", SPEC, finish=False)
        deadline = time.time() + 300  # the thread imports MLflow first (seconds on a loaded box)
        while time.time() < deadline and Progress.load(running.path).run_id is None:
            time.sleep(0.5)
        # through the replayer's own store: a second store on the SQLite file in this process could
        # wait on the thread's write lock
        assert live.replayer.client.get_run(Progress.load(running.path).run_id).info.status == "RUNNING"
        running.finish()
    finally:
        drain_live()
    assert runs_of(uri(tmp_path))[running.path.stem].info.status == "FINISHED"


def test_track_command_replays_and_names_a_missing_folder(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from seqcomp.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["track", "--results", "results/none"]) == 2
    job(tmp_path / "results" / "x" / "tracking" / "journal", "train", SPEC)
    assert main(["track", "--results", "results/x"]) == 0
    assert len(runs_of(resolve_uri())) == 1  # the default store: results/mlflow.db


def test_ui_links_open_each_experiments_training_runs(tmp_path: Path, capfd) -> None:  # noqa: ANN001
    """``make ui`` prints, per experiment of the store, the link to its runs view (MLflow 3 opens
    the traces overview otherwise), read from the SQLite file as MLflow wrote it."""
    from seqcomp.cli import main

    store = tmp_path / "mlflow.db"
    assert main(["ui-links", "--store", str(store)]) == 0
    assert "no experiments yet" in capfd.readouterr().out
    job(tmp_path / "journal", "train", SPEC)
    replay(tmp_path / "journal", uri(tmp_path))
    exp_id = client(uri(tmp_path)).get_experiment_by_name(EXP).experiment_id
    assert main(["ui-links", "--store", str(store)]) == 0
    expected = f"{EXP}: http://127.0.0.1:5000/#/experiments/{exp_id}?workflowType=machine_learning"
    assert expected in capfd.readouterr().out.splitlines()
    (tmp_path / "junk.db").write_text("not sqlite")
    assert main(["ui-links", "--store", str(tmp_path / "junk.db")]) == 2


def test_git_state_outside_a_checkout_is_unknown(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import seqcomp.tracking

    monkeypatch.setattr(seqcomp.tracking, "PROJECT_ROOT", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no checkout above tmp_path
    assert git_state() == {"seqcomp.git_commit": "unknown", "seqcomp.git_dirty": "unknown"}


def test_untracked_results_are_not_uncommitted_code(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """An output, a note or an edited README leaves the checkout clean (the same meaning of dirty
    as a page's record); a new module, or an edit of one, makes it dirty."""
    import subprocess

    import seqcomp.tracking

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    code = tmp_path / "src" / "seqcomp"
    code.mkdir(parents=True)
    (code / "a.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("r")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "a")
    monkeypatch.setattr(seqcomp.tracking, "PROJECT_ROOT", tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text("{}")
    (tmp_path / "notes.md").write_text("n")
    (tmp_path / "README.md").write_text("r, edited")  # a tracked file, but not the pipeline's code
    assert git_state()["seqcomp.git_dirty"] == "False"
    (code / "b.py").write_text("y = 2\n")
    assert git_state()["seqcomp.git_dirty"] == "True"
    (code / "b.py").unlink()
    (code / "a.py").write_text("x = 2\n")
    assert git_state()["seqcomp.git_dirty"] == "True"


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
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/{path}", method="POST" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None, headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.load(r)


@pytest.mark.slow
def test_journals_replay_into_a_remote_tracking_server(tiny_data: Path, tmp_path: Path) -> None:
    results = tmp_path / "work" / "results" / "remote"
    train_record(results / "tracking" / "journal", tiny_data, tmp_path / "out")
    with mlflow_server(tmp_path) as base:
        env = {**os.environ, "MLFLOW_TRACKING_URI": base}
        track = subprocess.run([sys.executable, "-m", "seqcomp", "track", "--results", str(results)],
                               cwd=tmp_path / "work", env=env, capture_output=True, text=True, timeout=600)
        assert track.returncode == 0, track.stderr[-3000:]
        experiment = rest(base, f"experiments/get-by-name?experiment_name={EXP}")["experiment"]
        (run,) = rest(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        run_id = run["info"]["run_id"]
        assert run["info"]["status"] == "FINISHED" and run["inputs"]["dataset_inputs"][0]["dataset"]["name"] == "tiny"
        listed = rest(base, f"artifacts/list?run_id={run_id}")["files"]
        assert {"config.yaml", "model.pt", "job_spec.json"} <= {f["path"] for f in listed}
        (model,) = rest(base, "logged-models/search", {"experiment_ids": [experiment["experiment_id"]]})["models"]
        assert model["info"]["source_run_id"] == run_id and model["info"]["status"] == "LOGGED_MODEL_READY"
    # nothing went to a local store; the artifacts went through the server to its destination
    assert not (tmp_path / "work" / "results" / "mlflow.db").exists()
    stored = {p.name for p in (tmp_path / "server-artifacts").rglob("*") if p.is_file()}
    assert {"config.yaml", "model.pt", "MLmodel", "input_example.json"} <= stored


def test_run_names_tell_the_jobs_of_a_grid_apart() -> None:
    from seqcomp.names import run_name

    spec = {"dataset": "ett", "model": "lstm", "lookback": 96, "horizon": 24, "seed": 2}
    assert run_name("train", spec) == "train/ett/lstm/L96-H24/seed2"
    assert run_name("evaluate", {**spec, "pass": "int8_dynamic"}) == "evaluate/ett/lstm/L96-H24/seed2/int8_dynamic"


def test_replaying_a_model_leaves_the_process_wide_store_as_it_was(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """MLflow's log_model needs its global URI set, which also sets $MLFLOW_TRACKING_URI: after the
    replay neither may point at the replayed store, or every later store of the process would be it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    journals = tmp_path / "results" / "tracking" / "journal"
    train_record(journals, tiny_data, tmp_path / "out")
    replay(journals, uri(tmp_path), final=True)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert resolve_uri("sqlite:///elsewhere.db").startswith("sqlite:///elsewhere.db")


def test_a_journal_that_cannot_start_leaves_no_file_and_one_cut_short_keeps_whole_lines(
        tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import errno

    from seqcomp.io import DiskFull

    full = OSError(errno.ENOSPC, "No space left on device")
    real_write_bytes = Path.write_bytes
    monkeypatch.setattr(Path, "write_bytes", lambda self, data: (real_write_bytes(self, data[:5]), (_ for _ in ()).throw(full)))
    with pytest.raises(DiskFull, match=r"\.jsonl: No space left on device"):
        Run.start(tmp_path / "j", EXP, "t", "train/a", {})
    assert [p for p in (tmp_path / "j").rglob("*") if p.is_file()] == []  # not even an empty journal
    monkeypatch.setattr(Path, "write_bytes", real_write_bytes)

    run = Run.start(tmp_path / "j", EXP, "t", "train/a", {})
    run.log_params({"a": 1})
    whole = run.path.read_bytes()

    class Full:  # the journal's file: a short write, then the disk is full
        def __init__(self, f) -> None:  # noqa: ANN001
            self.f, self.calls = f, 0

        def write(self, data) -> int:  # noqa: ANN001
            self.calls += 1
            if self.calls == 1:
                return self.f.write(data[:7])
            raise full

        def fileno(self) -> int:
            return self.f.fileno()

        def close(self) -> None:
            self.f.close()

    run._out = Full(run._out)
    with pytest.raises(ValueError, match="the job's own error"):  # not the journal's
        with tracked(run):
            raise ValueError("the job's own error")
    assert run.path.read_bytes() == whole  # the cut-off line is gone; the replayer reads whole lines


def test_the_replayer_removes_journals_without_a_first_line_once_their_writer_is_gone(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    import logging

    journals = tmp_path / "journal"
    old, fresh = journals / "train/a/01-old.jsonl", journals / "train/b/02-fresh.jsonl"
    for path, content in ((old, b""), (fresh, b'{"op": "sta')):
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    run = Run.start(journals, EXP, "t", "train/c", {})
    run.finish()
    with caplog.at_level(logging.WARNING, logger="seqcomp.tracking.replay"):
        assert replay(journals, uri(tmp_path)) == []
        assert not old.exists() and fresh.exists()  # a writer may still be at its first line
        assert replay(journals, uri(tmp_path), final=True) == []  # the workflow's end: every writer is gone
    assert not fresh.exists() and len(runs_of(uri(tmp_path))) == 1
    said = [r.getMessage() for r in caplog.records if "without a complete first line" in r.getMessage()]
    assert len(said) == 2 and "removed 1 journal(s)" in said[0] and str(old) in said[0]


def test_a_full_store_is_said_once_naming_the_store_not_once_per_journal(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    journals = tmp_path / "journal"
    for job in ("train/a", "train/b", "train/c"):
        Run.start(journals, EXP, "t", job, {}).finish()
    replayer = Replayer(journals, uri(tmp_path))
    tried = []

    def full(journal: Path, final: bool) -> None:
        tried.append(journal)
        raise RuntimeError("(sqlite3.OperationalError) database or disk is full\n[SQL: INSERT INTO runs ...]\n"
                           "(Background on this error at: https://sqlalche.me/e/20/e3q8)")

    monkeypatch.setattr(replayer, "replay_journal", full)
    (problem,) = replayer.replay()
    assert len(tried) == 1, "the other journals would fail the same way"
    assert problem.startswith(f"{tmp_path / 'mlflow.db'} (artifacts in {tmp_path / 'mlartifacts'}): the tracking store's "
                              "disk is full (No space left on device)")
    assert "\n" not in problem and "sqlalche" not in problem and replayer.replay() == [problem]  # the same line: said once


def test_track_on_a_folder_it_cannot_write_says_so_in_one_line(tmp_path: Path, monkeypatch, capfd) -> None:  # noqa: ANN001
    from seqcomp.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    journals = tmp_path / "results" / "x" / "tracking" / "journal"
    job(journals, "train", SPEC)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.W_OK and real_access(path, mode))
    assert main(["track", "--results", "results/x"]) == 2
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert line.startswith("seqcomp: error: results/x/tracking/journal: the journals' folder is not writable: "
                           "no write permission for you")
    assert not (journals / ".replay.lock").exists()


def test_a_job_whose_other_writer_fills_the_disk_names_that_file(tmp_path: Path, monkeypatch, capfd) -> None:  # noqa: ANN001
    """A writer outside seqcomp.io (Lightning moving a checkpoint from /tmp): the target it was writing."""
    import errno

    from seqcomp import cli

    def move(args) -> None:  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/tmpab12", None, "out/checkpoints/last.ckpt")

    monkeypatch.setattr(cli, "cmd_data", move)
    monkeypatch.chdir(tmp_path)  # the job's lock goes into its --out folder
    assert cli.main(["data", "--spec", '{"dataset": "d"}', "--out", "out"]) == 2
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert line.startswith("seqcomp: error: out/checkpoints/last.ckpt: No space left on device: the disk holding it")
