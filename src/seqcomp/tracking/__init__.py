"""Record keeping of one job: its MLflow calls, written as a journal that one process replays.

A job imports no MLflow (importing its client and store costs a small job most of its time,
see docs/design.md "Tracking: journals, replayed"). ``Run`` has the interface of an MLflow run
(params, metrics with steps, artifacts, a dataset input, a logged model, tags, a final status)
and appends each call as one JSON line to ``<journal dir>/<job key>/<journal id>.jsonl``; files
it logs are hard-linked (copied across file systems) beside the journal at that moment, so a
later rewrite of an output cannot change what the run holds. ``seqcomp.tracking.replay``
applies journals to the store (the Snakemake main process does it live, and
``python -m seqcomp track`` on demand).

A run names its parent by job key (``seqcomp.job``: stage + wildcards, ``seqcomp.names.job_key``),
not by MLflow run id, which does not exist yet when the job runs. Reruns: each attempt of a job
writes its own journal; replaying a newer one marks the job's earlier runs
``seqcomp.superseded=true`` (and KILLED if a killed job left one RUNNING), so the UI can hide
stale duplicates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seqcomp import PROJECT_ROOT
from seqcomp.io import DiskFull, atomic_path, check_writable, names_full_disk

SQLITE_TIMEOUT_S = 120
FILES_SUFFIX = ".files"  # beside <id>.jsonl: the files the journal's artifacts and model point to


def resolve_uri(config_uri: str | None = None) -> str:
    """$MLFLOW_TRACKING_URI, else the config's ``tracking_uri``, else results/mlflow.db (SQLite) in the cwd."""
    uri = _chosen_uri(config_uri)
    if uri.startswith("sqlite:///") and "timeout=" not in uri:
        sqlite_folder(uri).mkdir(parents=True, exist_ok=True)
        uri += ("&" if "?" in uri else "?") + f"timeout={SQLITE_TIMEOUT_S}"
    return uri


def _chosen_uri(config_uri: str | None) -> str:
    default = f"sqlite:///{(Path.cwd() / 'results' / 'mlflow.db').as_posix()}"
    return os.environ.get("MLFLOW_TRACKING_URI") or config_uri or default


def sqlite_folder(uri: str) -> Path | None:
    """The folder of a SQLite store (its database and, beside it, its artifacts); None for a server."""
    return Path(uri.removeprefix("sqlite:///").split("?")[0]).parent if uri.startswith("sqlite:///") else None


def check_writable_run(results: str | Path, config_uri: str | None) -> None:
    """Before a workflow runs any job: this user can write its results folder and a SQLite store's
    folder (a one-line SeqcompError naming the folder otherwise, rather than a traceback per job)."""
    check_writable(results)
    check_writable_store(config_uri)


def check_writable_store(config_uri: str | None) -> None:
    """The folder of the SQLite store ``resolve_uri(config_uri)`` names (if SQLite) can be written
    by this user; a one-line SeqcompError naming it otherwise."""
    if (store := sqlite_folder(_chosen_uri(config_uri))) is not None:
        check_writable(store, "the tracking store's folder")


def git_state() -> dict[str, str]:
    """Commit and dirtiness of the project checkout, for provenance tags: the publishing module's
    one git reader and one meaning of dirty (an uncommitted edit, or a new file, under the
    pipeline's code: ``seqcomp.publish.record.PIPELINE_CODE``), so a run's tags and a page's
    record agree. Untracked results, logs or notes elsewhere are not uncommitted code. "unknown"
    for both outside a git checkout (an installed wheel, a copied tree) or without git: a clean
    status there would be a false claim.
    """
    from seqcomp.publish.record import PIPELINE_CODE, code_dirty, git

    commit = git(PROJECT_ROOT, "rev-parse", "HEAD")
    dirty = code_dirty(PROJECT_ROOT, PIPELINE_CODE) if commit else "unknown"
    return {"seqcomp.git_commit": commit or "unknown", "seqcomp.git_dirty": dirty}


def redact(uri: str) -> str:
    """The URI without user:password, for records written to files."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if not parts.password and not parts.username:
        return uri
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b.c": "value"} for MLflow params (values as strings, 6000-char cap)."""
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): str(obj)[:6000]}


def now_ms() -> int:
    return int(time.time() * 1000)


class Run:
    """One job's run, as a journal: open it with ``Run.start``, log, then ``finish`` (or use ``tracked``).

    ``job`` is the run's ``seqcomp.job`` key; ``path`` its journal file under ``journal_dir``.
    """

    def __init__(self, journal_dir: str | Path, job: str, journal_id: str):
        self.journal_dir, self.job = Path(journal_dir), job
        self.path = self.journal_dir / job / f"{journal_id}.jsonl"
        self.files = self.path.with_suffix(FILES_SUFFIX)
        self._n_files = 0
        self._out: Any = None  # the journal, opened for appending once its first line is written
        self._size = 0  # bytes of whole lines in the journal

    @classmethod
    def start(
        cls, journal_dir: str | Path, experiment: str, run_name: str, job: str, tags: dict[str, str],
        parent: str | None = None,
    ) -> "Run":
        """A new journal under ``journal_dir`` for job key ``job``; ``parent``: the parent job's key.

        The journal id starts with the time in ns, so sorting ids orders attempts of a job (and
        parents before children) without reading the files.
        """
        journal_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        run = cls(journal_dir, job, journal_id)
        run._write({"op": "start", "id": journal_id, "experiment": experiment, "run_name": run_name, "job": job,
                    "tags": {"seqcomp.job": job, **git_state(), **tags}, "parent": parent, "time": now_ms()})
        return run

    def _write(self, record: dict[str, Any]) -> None:
        """Append one line. The first one creates the journal whole (``atomic_path``): a job that
        cannot write it (a full disk) leaves no journal, rather than an empty one the replayer
        cannot use. Later lines are appended unbuffered; one that does not fit is cut off again,
        so the journal keeps whole lines only and a later line (the FAILED finish) can follow."""
        data = (json.dumps(record, default=str) + "\n").encode()
        if self._out is None:
            with atomic_path(self.path) as tmp:
                tmp.write_bytes(data)
            self._out = self.path.open("ab", buffering=0)
            self._size = len(data)
            return
        with names_full_disk(self.path):
            try:
                view = memoryview(data)
                while view:  # a write to a nearly full disk can be short before it fails
                    view = view[self._out.write(view):]
            except OSError:
                os.ftruncate(self._out.fileno(), self._size)  # frees space: cannot fail for room
                raise
        self._size += len(data)

    def _keep(self, path: str | Path) -> str:
        """Hard-link (or copy) ``path`` beside the journal; returns its name there, relative to ``files``."""
        name = f"{self._n_files}/{Path(path).name}"
        self._n_files += 1
        target = self.files / name
        with names_full_disk(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:  # another file system, or links not allowed
                shutil.copy2(path, target)
        return name

    def log_params(self, params: dict[str, Any]) -> None:
        self._write({"op": "params", "params": flatten(params)})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._write({"op": "metrics", "metrics": {k: float(v) for k, v in metrics.items()}, "step": step or 0,
                     "time": now_ms()})

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self._write({"op": "artifact", "file": self._keep(path), "folder": folder})

    def log_dict(self, obj: dict[str, Any], name: str) -> None:
        self._write({"op": "dict", "obj": obj, "name": name})

    def log_input(self, name: str, path: Path, profile: dict[str, Any], context: str = "training") -> None:
        """Record a dataset file as the run's input: its sha256 as digest, no copy of the data.

        ``profile`` (split sizes, source identity) is shown with the dataset in the UI.
        """
        self._write({"op": "input", "name": name, "source": str(Path(path).resolve()), "sha256": file_sha256(path),
                     "profile": profile, "context": context})

    def log_model(self, model_file: str | Path, example: Any, name: str = "model") -> None:
        """Log the model saved by ``seqcomp.artifacts.save_model`` at ``model_file`` as an MLflow
        model (pytorch flavour) of this run, when the journal is replayed.

        ``example`` is one input batch (numpy, (1, L, C)); the signature comes from it. The
        model's URI exists only after replay: find it through the run (its logged models).
        """
        import numpy as np

        example_file = self.files / f"{name}-example.npy"
        with names_full_disk(example_file):
            example_file.parent.mkdir(parents=True, exist_ok=True)
            np.save(example_file, np.asarray(example))
        self._write({"op": "model", "file": self._keep(model_file), "example": example_file.name, "name": name})

    def set_tags(self, tags: dict[str, str]) -> None:
        self._write({"op": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def finish(self, status: str = "FINISHED") -> None:
        try:
            self._write({"op": "finish", "status": status, "time": now_ms()})
        finally:
            if self._out is not None:
                self._out.close()


def current_runs(journal_dir: str | Path) -> list[dict[str, Any]]:
    """Each job's current run as its journals tell it, without the store (so without waiting for
    replay): the newest journal of each job key (a rerun's supersedes the earlier ones), with its
    stage, commit, start and end (ms since the epoch; ``end`` None while it runs or if it was
    killed) and status."""
    root, newest = Path(journal_dir), {}
    for path in sorted(root.rglob("*.jsonl"), key=lambda p: p.name):  # ids start with the time
        newest[path.parent.relative_to(root).as_posix()] = path
    runs = []
    for job, path in newest.items():
        lines = path.read_text(encoding="utf-8").split("\n")[:-1]  # complete lines only
        if not lines:
            continue  # a job killed while writing its first line
        start, last = json.loads(lines[0]), json.loads(lines[-1])
        finish = last if last["op"] == "finish" else {}
        runs.append({"job": job, "stage": start["tags"].get("seqcomp.stage"), "start": start["time"],
                     "end": finish.get("time"), "status": finish.get("status", "RUNNING"),
                     "commit": start["tags"].get("seqcomp.git_commit", "unknown")})
    return runs


@contextmanager
def quiet_loggers(*names: str, level: int = logging.ERROR) -> Iterator[None]:
    """Loggers ``names`` say only ``level`` and above while the body runs (libraries' notes that
    are not ours to act on: MLflow's, Lightning's), then as they were."""
    loggers = [logging.getLogger(name) for name in names]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, before):
            lg.setLevel(lvl)


@contextmanager
def tracked(run: Run) -> Iterator[Run]:
    """Mark the run FAILED (and re-raise) if the body raises, FINISHED otherwise.

    If the FAILED line does not fit either (a full disk), the body's error is the one raised:
    the journal then ends without a finish, as a killed job's does (a rerun supersedes it)."""
    try:
        yield run
    except BaseException:
        try:
            run.finish("FAILED")
        except DiskFull:
            pass
        raise
    run.finish("FINISHED")


def write_resolved_config(cfg: dict[str, Any], path: str | Path) -> None:
    """The resolved config as YAML, for training runs to log (``tracking_uri`` without credentials);
    without the model entries ``pretrain:`` generates, so that the file runs as a config again."""
    import yaml

    if "models" in cfg:
        cfg = {**cfg, "models": {k: v for k, v in cfg["models"].items() if "transfer" not in v}}
    if cfg.get("tracking_uri"):
        cfg = {**cfg, "tracking_uri": redact(cfg["tracking_uri"])}
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def snakemake_tags(rule: str, wildcards: dict[str, Any]) -> dict[str, str]:
    return {"snakemake.rule": rule, **{f"snakemake.wildcard.{k}": str(v) for k, v in wildcards.items()}}
