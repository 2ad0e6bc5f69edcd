"""MLflow record keeping across Snakemake jobs, each its own process.

Design (see ../shared/PITFALLS.md section 4-5): every job talks to MLflow through an explicit
``MlflowClient`` with an explicit tracking URI and run id (the fluent API keeps its run stack
per process, and Lightning's logger reads its default URI at import time). Nesting across
processes uses the ``mlflow.parentRunId`` tag; each stage logs into its own run because params
are write-once. The default store is SQLite with a busy timeout so parallel jobs wait for the
lock instead of failing; the experiment (and the database schema) is created once by the
``tracking_init`` rule before jobs fan out.

A training run also records its dataset (an MLflow input: sha256 and split sizes), the git
commit, the resolved config file and an MLflow model (``Run.log_input``, ``Run.log_model``).

Reruns: every run carries ``seqcomp.job`` (stage + wildcards). Starting a run marks earlier
runs of the same job ``seqcomp.superseded=true`` (and KILLED if a killed job left one
RUNNING), so the UI can hide stale duplicates.
"""

from __future__ import annotations

import hashlib
import json
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
    """Commit and dirtiness of the project checkout, for provenance tags.

    "unknown" for both outside a git checkout (an installed wheel, a copied tree) or without git:
    a clean status there would be a false claim.
    """
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
        except OSError:  # no git binary
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    dirty = "unknown" if status is None else str(bool(status))
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

    def log_input(self, name: str, path: Path, profile: dict[str, Any], context: str = "training") -> None:
        """Record a dataset file as the run's input: its sha256 as digest, no copy of the data.

        ``profile`` (split sizes, source identity) is shown with the dataset in the UI.
        """
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        sha256 = file_sha256(path)
        # MLflow caps a digest at 36 characters; the full hash goes into the profile.
        record = MetaDataset(LocalArtifactDatasetSource(str(Path(path).resolve())), name=name, digest=sha256[:32])
        d = record.to_dict()
        entity = Dataset(d["name"], d["digest"], d["source_type"], d["source"], d.get("schema"),
                         json.dumps({"sha256": sha256, **profile}))
        inputs = [DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, context)])]
        # Parallel jobs race to create the shared dataset row (MLflow checks, then inserts): the
        # loser's insert violates the unique key; on retry it finds the row and links to it.
        retry(lambda: self.client.log_inputs(self.run_id, datasets=inputs),
              transient=("locked", "busy", "unique constraint", "duplicate"))

    def log_model(self, net: Any, example: Any, name: str = "model") -> str:
        """Log a torch module as an MLflow model (pytorch flavour) of this run; returns its URI.

        ``example`` is one input batch (numpy, (1, L, C)); the signature comes from it.
        Pickle serialization (loading needs seqcomp importable): pt2 would run torch.export in
        every job (1.7 s for the smoke LSTM, 12 s for S4D on the loaded 2-core machine).
        Explicit pip requirements, pinned to this environment: MLflow would otherwise load the
        model in a subprocess to infer them, and its check that they match the environment (it
        maps every installed distribution's files, 1-2 s per job, twice: on saving, and on
        reloading the model to serve the example) cannot fail, so it is skipped. MLflow's
        ``log_model`` resolves its store from the process-wide URI, so it is set here: each job
        is its own process.
        """
        from unittest import mock

        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        net = net.cpu().eval()
        with torch.no_grad():
            output = net(torch.from_numpy(example)).numpy()
        mlflow.set_tracking_uri(self.uri)
        experiment_id = retry(lambda: self.client.get_run(self.run_id)).info.experiment_id
        # An explicit logged-model entity: without one MLflow files it under the default experiment.
        model = retry(lambda: self.client.create_logged_model(experiment_id, name=name, source_run_id=self.run_id))
        requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]
        # create=True: should a later MLflow rename these, logging still works (only slower).
        # Its warning about pickle serialization is about the choice explained above: not repeated per job.
        with (mock.patch("mlflow.utils.environment.warn_dependency_requirement_mismatches", create=True),
              mock.patch("mlflow.pyfunc.warn_dependency_requirement_mismatches", create=True),
              quiet_logger("mlflow.pytorch")):
            info = retry(lambda: mlflow.pytorch.log_model(
                net, name=name, model_id=model.model_id, run_id=self.run_id, input_example=example,
                signature=infer_signature(example, output), serialization_format="pickle",
                pip_requirements=requirements,
            ))
        return info.model_uri

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            retry(lambda: self.client.set_tag(self.run_id, k, v))

    def finish(self, status: str = "FINISHED") -> None:
        retry(lambda: self.client.set_terminated(self.run_id, status))


@contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Only errors from logger ``name`` while the body runs."""
    import logging

    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def tracked(run: Run) -> Iterator[Run]:
    """Mark the run FAILED (and re-raise) if the body raises, FINISHED otherwise."""
    try:
        yield run
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish("FINISHED")


def write_resolved_config(cfg: dict[str, Any], path: str | Path) -> None:
    """The resolved config as YAML, for training runs to log (``tracking_uri`` without credentials)."""
    import yaml

    from seqcomp.io import atomic_path

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
