"""MLflow record keeping across Snakemake jobs, each its own process.

Design (see ../shared/PITFALLS.md section 4-5): every job talks to MLflow through an explicit
``MlflowClient`` with an explicit tracking URI and run id (the fluent API keeps its run stack
per process, and Lightning's logger reads its default URI at import time). Nesting across
processes uses the ``mlflow.parentRunId`` tag; each stage logs into its own run because params
are write-once. The default store is SQLite with a busy timeout so parallel jobs wait for the
lock instead of failing; the experiment (and the database schema) is created once by the
``tracking_init`` rule before jobs fan out.

Reruns: every run carries ``seqcomp.job`` (stage + wildcards). Starting a run marks earlier
runs of the same job ``seqcomp.superseded=true`` (and KILLED if a killed job left one
RUNNING), so the UI can hide stale duplicates.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from seqcomp.config import PROJECT_ROOT

SQLITE_TIMEOUT_S = 120
T = TypeVar("T")


def resolve_uri(config_uri: str | None = None) -> str:
    """$MLFLOW_TRACKING_URI, else the config's ``tracking_uri``, else results/mlflow.db (SQLite) in the cwd."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or config_uri
    if not uri:
        uri = f"sqlite:///{(Path.cwd() / 'results' / 'mlflow.db').as_posix()}"
    if uri.startswith("sqlite:///") and "timeout=" not in uri:
        Path(uri.removeprefix("sqlite:///").split("?")[0]).parent.mkdir(parents=True, exist_ok=True)
        uri += ("&" if "?" in uri else "?") + f"timeout={SQLITE_TIMEOUT_S}"
    return uri


def experiment_name(cfg: dict[str, Any]) -> str:
    return f"seqcomp/{cfg['name']}"


def client(uri: str):  # noqa: ANN201 - mlflow imported lazily: it costs seconds
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def retry(fn: Callable[[], T], attempts: int = 5) -> T:
    """Retry a tracking call on transient store errors (a locked SQLite file, a busy server)."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - mlflow wraps store errors in several types
            if i == attempts - 1 or "locked" not in str(exc).lower() and "busy" not in str(exc).lower():
                raise
            time.sleep(0.5 * 2**i)
    raise AssertionError("unreachable")


def ensure_experiment(uri: str, name: str) -> str:
    """Get or create the experiment; artifacts go beside the SQLite store, under results/."""
    c = client(uri)
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


def git_state() -> dict[str, str]:
    """Commit and dirtiness of the project checkout, for provenance tags."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    return {"seqcomp.git_commit": commit or "unknown", "seqcomp.git_dirty": str(bool(git("status", "--porcelain")))}


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b.c": "value"} for MLflow params (values as strings, 6000-char cap)."""
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): str(obj)[:6000]}


class Run:
    """One MLflow run of one job: open it with ``Run.start``, log, then ``finish``."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id
        self.client = client(uri)

    @classmethod
    def start(
        cls, uri: str, experiment: str, run_name: str, job: str, tags: dict[str, str], parent: str | None = None
    ) -> "Run":
        c = client(uri)
        exp_id = retry(lambda: ensure_experiment(uri, experiment))
        all_tags = {"seqcomp.job": job, **git_state(), **tags}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        for old in retry(lambda: c.search_runs([exp_id], f"tags.`seqcomp.job` = '{job}'", max_results=1000)):
            if old.data.tags.get("seqcomp.superseded") != "true":
                retry(lambda: c.set_tag(old.info.run_id, "seqcomp.superseded", "true"))
            if old.info.status == "RUNNING":  # its process was killed: it will never finish
                retry(lambda: c.set_terminated(old.info.run_id, "KILLED"))
        run = retry(lambda: c.create_run(exp_id, run_name=run_name, tags=all_tags))
        return cls(uri, run.info.run_id)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            retry(lambda: self.client.log_batch(self.run_id, params=items[i : i + 100]))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        retry(lambda: self.client.log_batch(self.run_id, metrics=items))

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        retry(lambda: self.client.log_artifact(self.run_id, str(path), folder))

    def log_dict(self, obj: dict[str, Any], name: str) -> None:
        retry(lambda: self.client.log_dict(self.run_id, obj, name))

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            retry(lambda: self.client.set_tag(self.run_id, k, v))

    def finish(self, status: str = "FINISHED") -> None:
        retry(lambda: self.client.set_terminated(self.run_id, status))


@contextmanager
def tracked(run: Run) -> Iterator[Run]:
    """Mark the run FAILED (and re-raise) if the body raises, FINISHED otherwise."""
    try:
        yield run
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish("FINISHED")


def snakemake_tags(rule: str, wildcards: dict[str, Any]) -> dict[str, str]:
    return {"snakemake.rule": rule, **{f"snakemake.wildcard.{k}": str(v) for k, v in wildcards.items()}}
