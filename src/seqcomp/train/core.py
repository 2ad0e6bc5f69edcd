"""The training stage's core: the series and the job spec in; the fitted model, its per-epoch
history and its validation scores out. No tracking, no files but an SGD fit's resumable
checkpoints under ``work_dir``: the stage (``train/stage.py``) loads, tracks and writes around it.

Gradient models go through Lightning with early stopping on ``val/mse`` (``val/ce`` for
classification tasks; :mod:`seqcomp.train.sgd`); closed-form models (``fit_closed_form``) and
parameter-free ones (naive) skip SGD, and Lightning's import, but are validated the same way.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqcomp.data.windows import PreparedSeries, job_windows
from seqcomp.errors import SeqcompError
from seqcomp.scores import HEADLINE, scores
from seqcomp.models import SeriesShape, build_model

EpochHook = Callable[[dict[str, float]], None]


@dataclass
class Trained:
    """A fitted model with what its fit produced."""

    net: nn.Module
    history: list[dict[str, float]]  # one row per epoch (a fit without epochs: one row of val scores)
    info: dict[str, Any]  # method, epochs, fit seconds, device and precision of an SGD fit
    val: dict[str, float]  # the returned weights' validation scores (mse, mae | accuracy, ...)


def build_job_model(series: PreparedSeries, spec: dict[str, Any]) -> nn.Module:
    """The spec's model for this series, its initial weights seeded by the spec's seed."""
    seed_everything(spec["seed"])
    shape = SeriesShape(spec["lookback"], spec["horizon"], series.channels)
    return build_model(spec["kind"], spec["params"], shape, where=f"models.{spec['model']}")


def train_job(net: nn.Module, series: PreparedSeries, spec: dict[str, Any], work_dir: Path,
              on_epoch: EpochHook | None = None) -> Trained:
    """Fit ``net`` (from :func:`build_job_model`) as its kind asks and score it on validation.

    ``work_dir`` holds an SGD fit's checkpoints while it runs (a killed job resumes from them);
    they are gone when this returns. ``on_epoch`` gets each epoch's metrics row as it ends.
    """
    if spec.get("transfer", {}).get("regime") == "zero_shot":  # scored as pre-trained: nothing to fit
        rows, info = [], {"method": "zero-shot (pre-trained weights, no training)", "fit_wall_s": 0.0, "epochs": 0}
    else:
        rows, info = fit(net, series, spec, work_dir, on_epoch)
    discard_checkpoints(work_dir)  # kept, a rerun of the same spec with new code would "resume" the old model
    val = scores(net.eval(), job_windows(series, spec, "val"), series.task)
    val = {k: val[k] for k in HEADLINE[series.task]}  # mse, mae | accuracy, seq_accuracy
    if not rows:
        rows = [{"epoch": 0, **{f"val/{k}": v for k, v in val.items()}}]
    return Trained(net, rows, info, val)


def fit(net, series, spec: dict[str, Any], out_dir: Path, on_epoch: EpochHook | None = None) -> tuple[list[dict], dict]:  # noqa: ANN001
    """Fit ``net`` on the train windows as its kind asks: closed form, nothing (no trainable
    parameters) or SGD (:func:`seqcomp.train.sgd.fit_sgd`, which calls ``on_epoch`` with each
    epoch's metrics row). Returns (history rows, info)."""
    train = train_windows(series, spec)
    if hasattr(net, "fit_closed_form"):
        start = time.perf_counter()
        x, y = train.tensors()
        if series.task == "classification":  # least squares on one-hot targets: a linear classifier
            y = torch.nn.functional.one_hot(y, series.channels).float()
        net.fit_closed_form(x, y)
        return [], {"method": "closed form", "fit_wall_s": time.perf_counter() - start, "epochs": 0}
    if not any(p.requires_grad for p in net.parameters()):
        return [], {"method": "no trainable parameters", "fit_wall_s": 0.0, "epochs": 0}
    from seqcomp.train.sgd import fit_sgd

    try:
        rows, info = fit_sgd(net, train, job_windows(series, spec, "val"), spec, spec["train"], out_dir, series.task,
                             on_epoch)
    except SeqcompError:
        discard_checkpoints(out_dir)  # a diverged run leaves nothing that looks like a result
        raise
    return rows, {**info, "method": "sgd"}


def train_windows(series: PreparedSeries, spec: dict[str, Any]) -> Any:
    """The windows a job fits on: the train split's, or a transfer job's fraction of them
    (few-shot fine-tuning and its from-scratch control)."""
    windows = job_windows(series, spec, "train")
    transfer = spec.get("transfer")
    if transfer and transfer["fraction"] is not None:
        from seqcomp.train.transfer import few_shot_windows

        windows = few_shot_windows(windows, transfer["fraction"], transfer["windows"])
    return windows


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's generators (CPU and CUDA), as Lightning's ``seed_everything``
    does, without importing Lightning."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def discard_checkpoints(out_dir: str | Path) -> None:
    """Remove Lightning's working checkpoints (after a failure or a finished fit): nothing stale
    may look like a result or be resumed by a later run of the same spec."""
    ckpt_dir = Path(out_dir) / "checkpoints"
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    ckpt_dir.with_name(ckpt_dir.name + ".spec.json").unlink(missing_ok=True)  # see sgd.resumable_checkpoint
