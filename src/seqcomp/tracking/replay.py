"""Journals -> MLflow: the one process that talks to the tracking store.

``Replayer.replay`` applies every journal under a journal folder (``seqcomp.tracking.Run``
writes them) to the store at ``uri``, in the order the runs started, and keeps going where it
left off: beside each journal, ``<id>.jsonl.replayed`` holds the MLflow run id and the byte
offset of the lines applied so far. It is idempotent:

- a crash between creating a run and recording its id: the run is found by its
  ``seqcomp.journal`` tag (the journal id) before one is created;
- a crash between applying a line and recording the offset: the line is applied again, which
  MLflow takes as a no-op (same params, tags and artifacts; a metric with the same key, step,
  time and value is stored once; a logged model is looked up by run and name first).

A child's parent is the newest run of the parent's job key that started before the child; a
child whose parent has no run yet waits (its parent's journal may not be visible yet on a
shared file system) unless the replay is ``final``. Journals are taken under an exclusive lock
(``<journal dir>/.replay.lock``), so the live thread of a workflow and a ``python -m seqcomp
track`` beside it never apply the same line twice.

``live`` runs ``replay`` every couple of seconds in a daemon thread of the Snakemake main
process (``onstart``), ``drain`` stops it and replays what is left (``onsuccess``/``onerror``).

A full disk: a store that cannot take more ("database or disk is full", ENOSPC) ends the pass
with one line naming the store (the live thread says it once and keeps trying quietly, so a
freed disk lets it go on); a journal without a complete first line (jobs create journals whole,
so only an older job that failed writing it leaves one) is removed, saying so once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from seqcomp.io import DiskFull, atomic_path, disk_full
from seqcomp.tracking import FILES_SUFFIX, quiet_loggers, redact, resolve_uri, sqlite_folder

log = logging.getLogger(__name__)
T = TypeVar("T")
STATE_SUFFIX = ".replayed"
LIVE_INTERVAL_S = 2.0
STALE_START_S = 60.0  # a journal still without its first line this long after its last write has no writer


def retry(fn: Callable[[], T], attempts: int = 5, transient: tuple[str, ...] = ("locked", "busy")) -> T:
    """Retry a tracking call on transient store errors (a locked SQLite file, a busy server):
    errors whose message contains one of ``transient``."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - mlflow wraps store errors in several types
            if i == attempts - 1 or not any(word in str(exc).lower() for word in transient):
                raise
            time.sleep(0.5 * 2**i)
    raise AssertionError("unreachable")


def client(uri: str):  # noqa: ANN201 - mlflow imported lazily: it costs seconds
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def ensure_experiment(c: Any, uri: str, name: str) -> str:
    """Get or create the experiment; with SQLite, artifacts go beside the store, under results/."""
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifacts = None
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///").split("?")[0])
        artifacts = (db.parent / "mlartifacts").resolve().as_uri()
    try:
        return c.create_experiment(name, artifact_location=artifacts)
    except Exception:  # noqa: BLE001 - another process created it first
        found = c.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@dataclass
class Progress:
    """What the store holds of one journal: its run and the bytes of the journal applied."""

    run_id: str | None = None
    offset: int = 0
    finished: bool = False

    @classmethod
    def load(cls, journal: Path) -> "Progress":
        state = journal.with_name(journal.name + STATE_SUFFIX)
        return cls(**json.loads(state.read_text())) if state.is_file() else cls()

    def save(self, journal: Path) -> None:
        state = journal.with_name(journal.name + STATE_SUFFIX)
        with atomic_path(state) as tmp:
            tmp.write_text(json.dumps(self.__dict__))


def store_full(uri: str, journal_dir: Path) -> str:
    """The line that says the tracking store's disk is full, the same every time (said once)."""
    where = redact(uri)
    if (folder := sqlite_folder(uri)) is not None:
        where = f"{folder / Path(uri.split('?')[0]).name} (artifacts in {folder / 'mlartifacts'})"
    return (f"{where}: the tracking store's disk is full (No space left on device); the journals are kept: free "
            f"space there, then rerun the same command or `python -m seqcomp track --results {journal_dir.parent.parent}`")


class WaitingForParent(Exception):
    """The parent job has no run in the store yet: try this journal again later."""


class Replayer:
    """Applies the journals under ``journal_dir`` to one store, opened once."""

    def __init__(self, journal_dir: str | Path, uri: str):
        self.journal_dir, self.uri = Path(journal_dir), uri
        self.client = client(uri)
        self._experiments: dict[str, str] = {}
        self._done: set[Path] = set()  # fully replayed journals: not read again by this process

    def journals(self) -> list[Path]:
        """Every journal not yet known to be fully replayed, oldest first (ids start with the time)."""
        found = [p for p in self.journal_dir.rglob("*.jsonl") if p not in self._done]
        return sorted(found, key=lambda p: p.name)

    def replay(self, final: bool = False) -> list[str]:
        """One pass over the journals; returns the problems (one line each) of journals left for later."""
        problems, removed = [], []
        with self._lock():
            for journal in self.journals():
                try:
                    if self.unstarted(journal, final, removed):
                        continue
                    self.replay_journal(journal, final)
                except WaitingForParent as exc:
                    problems.append(f"{journal}: {exc}")
                except DiskFull as exc:  # the journals' own disk: their progress files
                    problems.append(str(exc))
                    break
                except Exception as exc:  # noqa: BLE001 - one bad journal must not stop the others
                    log.debug("replaying %s failed", journal, exc_info=True)
                    if disk_full(exc):  # every other journal would fail the same way
                        problems.append(store_full(self.uri, self.journal_dir))
                        break
                    problems.append(f"{journal}: {type(exc).__name__}: {exc}")
        if removed:
            log.warning("seqcomp: tracking: removed %d journal(s) without a complete first line, left by jobs that "
                        "failed writing it (a full disk?), e.g. %s", len(removed), removed[0])
        return problems

    def unstarted(self, journal: Path, final: bool, removed: list[Path]) -> bool:
        """Whether ``journal`` has no complete first line (nothing to replay); such a journal is
        removed (added to ``removed``) once its writer is surely gone: at the ``final`` replay,
        or ``STALE_START_S`` after its last write (a job writes its first line within
        milliseconds; since journals are created whole, only an older job leaves one)."""
        with journal.open("rb") as f:
            if b"\n" in f.readline() or journal.with_name(journal.name + STATE_SUFFIX).exists():
                return False
        if final or time.time() - journal.stat().st_mtime > STALE_START_S:
            journal.unlink(missing_ok=True)
            shutil.rmtree(journal.with_suffix(FILES_SUFFIX), ignore_errors=True)
            removed.append(journal)
        return True

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        with open(self.journal_dir / ".replay.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def replay_journal(self, journal: Path, final: bool = False) -> None:
        """Apply the complete lines of ``journal`` past its recorded offset."""
        progress = Progress.load(journal)
        with journal.open("rb") as f:
            f.seek(progress.offset)
            data = f.read()
        lines = data.split(b"\n")[:-1]  # a last line without its newline is still being written
        files = journal.with_suffix(FILES_SUFFIX)
        for line in lines:
            record = json.loads(line)
            if record["op"] == "start":
                progress.run_id = self.start(record, final)
            else:
                self.apply(progress.run_id, record, files)
                progress.finished = record["op"] == "finish"
            progress.offset += len(line) + 1
            progress.save(journal)
        if progress.finished:
            shutil.rmtree(files, ignore_errors=True)  # the store holds them now
            self._done.add(journal)

    def experiment(self, name: str) -> str:
        if name not in self._experiments:
            self._experiments[name] = retry(lambda: ensure_experiment(self.client, self.uri, name))
        return self._experiments[name]

    def job_runs(self, exp_id: str, job: str) -> list[Any]:
        """The runs of job key ``job``, newest first."""
        runs = retry(lambda: self.client.search_runs([exp_id], f"tags.`seqcomp.job` = '{job}'", max_results=1000))
        return sorted(runs, key=lambda r: (r.info.start_time, r.data.tags.get("seqcomp.journal", "")), reverse=True)

    def start(self, record: dict[str, Any], final: bool) -> str:
        """The run of a journal's start line (found by journal id, else created); earlier runs of
        its job are marked superseded."""
        exp_id = self.experiment(record["experiment"])
        c = self.client
        found = retry(lambda: c.search_runs([exp_id], f"tags.`seqcomp.journal` = '{record['id']}'", max_results=1))
        if found:
            run_id = found[0].info.run_id
        else:
            tags = {**record["tags"], "seqcomp.journal": record["id"]}
            if record["parent"]:
                parent = self.parent(exp_id, record["parent"], record["time"], final)
                if parent is not None:
                    tags["mlflow.parentRunId"] = parent
            run_id = retry(lambda: c.create_run(exp_id, start_time=record["time"], tags=tags,
                                                run_name=record["run_name"])).info.run_id
        self.supersede(exp_id, record["job"])
        return run_id

    def parent(self, exp_id: str, job: str, started: int, final: bool) -> str | None:
        runs = self.job_runs(exp_id, job)
        earlier = [r for r in runs if r.info.start_time <= started]
        if earlier or runs:
            return (earlier or runs)[0].info.run_id
        if not final:
            raise WaitingForParent(f"parent job {job} has no run yet")
        log.warning("parent job %s has no run in %s: its child is logged without a parent", job, self.uri)
        return None

    def supersede(self, exp_id: str, job: str) -> None:
        """All but the newest run of ``job``: ``seqcomp.superseded=true``, and KILLED if still RUNNING
        (a killed job's run never finishes)."""
        for old in self.job_runs(exp_id, job)[1:]:
            if old.data.tags.get("seqcomp.superseded") != "true":
                retry(lambda: self.client.set_tag(old.info.run_id, "seqcomp.superseded", "true"))
            if old.info.status == "RUNNING":
                retry(lambda: self.client.set_terminated(old.info.run_id, "KILLED"))
                # its journal will never finish (older journals are replayed first): its files go now
                journal = self.journal_dir / job / f"{old.data.tags.get('seqcomp.journal')}.jsonl"
                shutil.rmtree(journal.with_suffix(FILES_SUFFIX), ignore_errors=True)
                self._done.add(journal)

    def apply(self, run_id: str, record: dict[str, Any], files: Path) -> None:
        from mlflow.entities import Metric, Param

        c, op = self.client, record["op"]
        if op == "params":
            items = [Param(k, v) for k, v in record["params"].items()]
            for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
                retry(lambda: c.log_batch(run_id, params=items[i : i + 100]))
        elif op == "metrics":
            items = [Metric(k, v, record["time"], record["step"]) for k, v in record["metrics"].items()]
            retry(lambda: c.log_batch(run_id, metrics=items))
        elif op == "artifact":
            retry(lambda: c.log_artifact(run_id, str(files / record["file"]), record["folder"]))
        elif op == "dict":
            retry(lambda: c.log_dict(run_id, record["obj"], record["name"]))
        elif op == "tags":
            for k, v in record["tags"].items():
                retry(lambda: c.set_tag(run_id, k, v))
        elif op == "input":
            self.log_input(run_id, record)
        elif op == "model":
            self.log_model(run_id, files / record["file"], files / record["example"], record["name"])
        elif op == "finish":
            retry(lambda: c.set_terminated(run_id, record["status"], end_time=record["time"]))
        else:
            raise ValueError(f"unknown journal operation {op!r}")

    def log_input(self, run_id: str, record: dict[str, Any]) -> None:
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        sha256 = record["sha256"]
        # MLflow caps a digest at 36 characters; the full hash goes into the profile.
        meta = MetaDataset(LocalArtifactDatasetSource(record["source"]), name=record["name"], digest=sha256[:32])
        d = meta.to_dict()
        entity = Dataset(d["name"], d["digest"], d["source_type"], d["source"], d.get("schema"),
                         json.dumps({"sha256": sha256, **record["profile"]}))
        inputs = [DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, record["context"])])]
        retry(lambda: self.client.log_inputs(run_id, datasets=inputs))

    def log_model(self, run_id: str, model_file: Path, example_file: Path, name: str) -> None:
        """The model of ``model_file`` (``seqcomp.artifacts.save_model``) as an MLflow pytorch model.

        Pickle serialization (loading needs seqcomp importable): pt2 would run torch.export
        (1.7 s for the smoke LSTM, 12 s for S4D on the loaded 2-core machine). Explicit pip
        requirements, pinned to this environment: MLflow would otherwise load the model in a
        subprocess to infer them, and its check that they match the environment (it maps every
        installed distribution's files, 1-2 s per model, twice) cannot fail, so it is skipped.
        An explicit logged-model entity: without one MLflow files it under the default experiment.
        """
        from unittest import mock

        import mlflow
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        from seqcomp.artifacts import load_model

        c = self.client
        experiment_id = retry(lambda: c.get_run(run_id)).info.experiment_id
        logged = retry(lambda: c.search_logged_models([experiment_id], f"source_run_id = '{run_id}'"))
        if any(m.name == name and str(m.status) in ("READY", "LoggedModelStatus.READY") for m in logged):
            return  # replayed before the offset was recorded
        net, example = load_model(model_file), np.load(example_file)
        with torch.no_grad():
            output = net(torch.from_numpy(example)).numpy()
        pytorch_flavour = import_mlflow_pytorch()
        model = retry(lambda: c.create_logged_model(experiment_id, name=name, source_run_id=run_id))
        requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]
        # log_model resolves the store from the process-wide URI, and setting it also sets
        # $MLFLOW_TRACKING_URI, which resolve_uri prefers: restored after, or every later store
        # of this process (another replayer, a job Snakemake starts) would be this one.
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.uri)
        # create=True: should a later MLflow rename these, logging still works (only slower).
        try:
            with (mock.patch("mlflow.utils.environment.warn_dependency_requirement_mismatches", create=True),
                  mock.patch("mlflow.pyfunc.warn_dependency_requirement_mismatches", create=True),
                  quiet_loggers("mlflow.pytorch")):
                retry(lambda: pytorch_flavour.log_model(
                    net, name=name, model_id=model.model_id, run_id=run_id, input_example=example,
                    signature=infer_signature(example, output), serialization_format="pickle",
                    pip_requirements=requirements,
                ))
        finally:
            mlflow.set_tracking_uri(previous)  # None unsets the variable again


def import_mlflow_pytorch():  # noqa: ANN201 - the mlflow.pytorch module
    """``mlflow.pytorch`` without Lightning. Its optional Lightning-autologging module calls
    ``logging.basicConfig`` (a root handler: in the Snakemake process every Snakemake log line
    would be printed twice) and then imports pytorch_lightning (8-16 s of CPU here), inside a
    ``try/except ImportError``: the import is blocked and the root logger restored."""
    import importlib
    import sys

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    block = "pytorch_lightning" not in sys.modules
    if block:
        sys.modules["pytorch_lightning"] = None  # type: ignore[assignment] - makes its import raise ImportError
    try:
        return importlib.import_module("mlflow.pytorch")
    finally:
        if block:
            del sys.modules["pytorch_lightning"]
        root.handlers[:] = handlers
        root.setLevel(level)


class Live:
    """``Replayer.replay`` every ``interval_s`` in a daemon thread, until ``drain``."""

    def __init__(self, journal_dir: str | Path, config_uri: str | None, interval_s: float = LIVE_INTERVAL_S):
        self.journal_dir, self.config_uri, self.interval_s = journal_dir, config_uri, interval_s
        self.replayer: Replayer | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="seqcomp-tracking-replay", daemon=True)
        self._reported: set[str] = set()

    def _open(self) -> Replayer:
        if self.replayer is None:  # in the thread: importing MLflow takes seconds
            import mlflow  # noqa: F401 - it sets its loggers' levels on import; ours come after

            for name in ("mlflow", "alembic"):  # store creation and migration notes, on the workflow's console
                logging.getLogger(name).setLevel(logging.WARNING)
            self.replayer = Replayer(self.journal_dir, resolve_uri(self.config_uri))
        return self.replayer

    def _loop(self) -> None:
        while True:
            try:
                self._report(self._open().replay())
            except Exception as exc:  # noqa: BLE001 - the store may be down for a while: retry
                self._report([self.problem(exc)])
            if self.stop.wait(self.interval_s):
                return

    def problem(self, exc: Exception) -> str:
        """One line for an error opening or using the store (creating it on a full disk, say)."""
        if disk_full(exc):
            return store_full(resolve_uri(self.config_uri), Path(self.journal_dir))
        return f"{type(exc).__name__}: {exc}"

    def _report(self, problems: list[str]) -> None:
        for line in problems:
            if line not in self._reported and "has no run yet" not in line:
                self._reported.add(line)
                log.warning("seqcomp: tracking: %s (retried)", line)

    def drain(self) -> list[str]:
        """Stop the thread, then replay everything left, parents or not; returns what could not be replayed."""
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        return self._open().replay(final=True)


_live: Live | None = None


def start_live(journal_dir: str | Path, config_uri: str | None) -> Live:
    """Replay the journals under ``journal_dir`` from now on (called once by the workflow's ``onstart``)."""
    global _live
    _live = Live(journal_dir, config_uri)
    _live.thread.start()
    return _live


def drain_live() -> None:
    """The workflow's last replay (``onsuccess``/``onerror``): what fails is reported, not raised;
    ``python -m seqcomp track`` replays it later."""
    if _live is None:  # --no-hooks, or onstart did not run
        return
    try:
        problems = _live.drain()
    except Exception as exc:  # noqa: BLE001 - the results are written; only the record keeping lags
        problems = [_live.problem(exc)]
    for line in problems:
        if line not in _live._reported:  # said once already, by the live thread
            log.warning("seqcomp: tracking: not replayed: %s", line)
    if problems and not all("python -m seqcomp track" in line for line in problems):
        log.warning("seqcomp: tracking: replay the rest with `python -m seqcomp track --results %s`",
                    Path(_live.journal_dir).parent.parent)
