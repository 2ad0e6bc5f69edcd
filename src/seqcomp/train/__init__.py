"""Training stage: fit one model on one dataset for one (lookback, horizon, seed).

Outputs (all written atomically into ``out_dir``): ``model.pt`` (architecture + best weights,
loadable with ``weights_only=True``), ``history.csv`` (per-epoch metrics), ``run.json``
(MLflow run id for the later stages, timings). Gradient models go through Lightning with
early stopping on ``val/mse`` (``val/ce`` for classification tasks; :mod:`seqcomp.train.sgd`);
closed-form models (``fit_closed_form``) and parameter-free ones (naive) skip SGD, and
Lightning's import, but are validated the same way.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from seqcomp.artifacts import save_model
from seqcomp.data.windows import PreparedSeries, job_windows
from seqcomp.errors import SeqcompError
from seqcomp.evaluate.metrics import HEADLINE, scores
from seqcomp.io import atomic_path, write_json
from seqcomp.models import SeriesShape, build_model
from seqcomp.tracking import Run, redact, tracked

EpochHook = Callable[[dict[str, float]], None]


def fit(net, series, spec: dict[str, Any], out_dir: Path, on_epoch: EpochHook | None = None) -> tuple[list[dict], dict]:  # noqa: ANN001
    """Fit ``net`` on the train windows as its kind asks: closed form, nothing (no trainable
    parameters) or SGD (:func:`seqcomp.train.sgd.fit_sgd`, which calls ``on_epoch`` with each
    epoch's metrics row). Returns (history rows, info)."""
    if hasattr(net, "fit_closed_form"):
        start = time.perf_counter()
        x, y = job_windows(series, spec, "train").tensors()
        if series.task == "classification":  # least squares on one-hot targets: a linear classifier
            y = torch.nn.functional.one_hot(y, series.channels).float()
        net.fit_closed_form(x, y)
        return [], {"method": "closed form", "fit_wall_s": time.perf_counter() - start, "epochs": 0}
    if not any(p.requires_grad for p in net.parameters()):
        return [], {"method": "no trainable parameters", "fit_wall_s": 0.0, "epochs": 0}
    from seqcomp.train.sgd import fit_sgd

    try:
        rows, info = fit_sgd(net, series, spec, spec["train"], out_dir, on_epoch)
    except SeqcompError:
        discard_checkpoints(out_dir)  # a diverged run leaves nothing that looks like a result
        raise
    return rows, {**info, "method": "sgd"}


def train(
    spec: dict[str, Any], data_dir: str | Path, out_dir: str | Path, run: Run, threads: int = 1,
    config_file: str | Path | None = None,
) -> dict:
    """Fit the model described by ``spec`` and write model.pt, history.csv and run.json.

    ``config_file``: the workflow's resolved config, logged with the run so it can be rerun.
    """
    torch.set_num_threads(threads)
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    seed_everything(spec["seed"])  # the model's initial weights
    series = PreparedSeries.load(data_dir)
    shape = SeriesShape(spec["lookback"], spec["horizon"], series.channels)
    net = build_model(spec["kind"], spec["params"], shape, where=f"models.{spec['model']}")
    n_params = sum(p.numel() for p in net.parameters())
    with tracked(run):
        run.log_params({"n_params": n_params, **spec})
        run.log_dict(spec, "job_spec.json")
        if config_file is not None:
            run.log_artifact(config_file)
        run.log_input(spec["dataset"], data_dir / "series.parquet", dataset_profile(series, shape))
        rows, info = fit(net, series, spec, out_dir, on_epoch=lambda row: run.log_metrics(
            {k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"])))
        val = scores(net.eval(), job_windows(series, spec, "val"), series.task)
        val = {k: val[k] for k in HEADLINE[series.task]}  # mse, mae | accuracy, seq_accuracy
        if not rows:
            rows = [{"epoch": 0, **{f"val/{k}": v for k, v in val.items()}}]
        run.log_metrics({f"best_val/{k}": v for k, v in val.items()})
        summary = {"run_id": run.run_id, "tracking_uri": redact(run.uri), "n_params": n_params, **info,
                   **{f"best_val_{k}": v for k, v in val.items()}}
        save_model(net, spec["kind"], spec["params"], shape, out_dir / "model.pt")
        import polars as pl  # lazy: keeps the training module importable on a bare GPU machine

        with atomic_path(out_dir / "history.csv") as tmp:
            pl.DataFrame(rows).write_csv(tmp)
        for name in ("model.pt", "history.csv"):
            run.log_artifact(out_dir / name)
        example = job_windows(series, spec, "val")[0][0][None].numpy()  # (1, L, C)
        summary["model_uri"] = run.log_model(net, example)
        write_json(out_dir / "run.json", summary)
    # Checkpoints exist to resume a killed run. Kept after success, they would be "resumed" by
    # the rerun that a code change asks for (same spec, new code), returning the old model.
    discard_checkpoints(out_dir)
    return summary


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's generators (CPU and CUDA), as Lightning's ``seed_everything``
    does, without importing Lightning."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def dataset_profile(series: PreparedSeries, shape: SeriesShape) -> dict[str, Any]:
    """Rows per split and this job's windows per split, plus the raw source's identity."""
    if series.task == "classification":  # independent samples: no rows, no channels
        samples = {s: len(series.windows(s, shape.lookback, shape.horizon)) for s in ("train", "val", "test")}
        return {"source": series.meta["source"], "classes": series.channels, "samples": samples}
    b = series.borders
    rows = {"train": b[0], "val": b[1] - b[0], "test": b[2] - b[1]}
    windows = {split: len(series.windows(split, shape.lookback, shape.horizon)) for split in rows}
    return {"source": series.meta["source"], "channels": series.meta["channels"], "rows": rows, "windows": windows}


def discard_checkpoints(out_dir: str | Path) -> None:
    """Remove Lightning's working checkpoints (after a failure or a finished fit): nothing stale
    may look like a result or be resumed by a later run of the same spec."""
    ckpt_dir = Path(out_dir) / "checkpoints"
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    ckpt_dir.with_name(ckpt_dir.name + ".spec.json").unlink(missing_ok=True)  # see sgd.resumable_checkpoint
