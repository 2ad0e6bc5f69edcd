"""Training stage shell: load the series, run the core, write model.pt (architecture + best
weights, loadable with ``weights_only=True``), history.csv (per-epoch metrics) and run.json
(the tracking job key, timings, best validation scores), all atomically, and track the run: params,
dataset input, per-epoch metrics as they come, artifacts and an MLflow model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from seqcomp.artifacts import save_model
from seqcomp.data.windows import PreparedSeries, cycle_origin, job_windows
from seqcomp.errors import SeqcompError
from seqcomp.io import atomic_path, write_json
from seqcomp.models import SeriesShape
from seqcomp.tracking import Run, tracked
from seqcomp.train.core import build_job_model, train_job

log = logging.getLogger("seqcomp.train")


def run_train(
    spec: dict[str, Any], data_dir: str | Path, out_dir: str | Path, run: Run, threads: int = 1,
    config_file: str | Path | None = None, pretrained: str | Path | None = None,
) -> dict:
    """Fit the model described by ``spec`` and write model.pt, history.csv and run.json.

    ``config_file``: the workflow's resolved config, logged with the run so it can be rerun.
    ``pretrained``: a transfer job's pre-trained model.pt, loaded before the fit (zero-shot: no fit).
    """
    torch.set_num_threads(threads)
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    series = PreparedSeries.load(data_dir)
    shape = SeriesShape(spec["lookback"], spec["horizon"], series.channels)
    net = build_job_model(series, spec)
    notes = transfer_notes(net, spec, pretrained, series.channels)
    n_params = sum(p.numel() for p in net.parameters())
    notes.update(data_notes(series, spec))  # before the fit: a cycle's warning heads the job's log
    with tracked(run):
        run.log_params({"n_params": n_params, **spec})
        run.log_dict(spec, "job_spec.json")
        if config_file is not None:
            run.log_artifact(config_file)
        run.log_input(spec["dataset"], data_dir / "series.parquet", dataset_profile(series, shape))
        start = fine_tune_start(net, series, spec)  # a fine-tuning job's pre-trained weights and their val scores
        result = train_job(net, series, spec, out_dir, on_epoch=lambda row: run.log_metrics(
            {k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"])))
        if start is not None:
            notes.update(start.keep_the_better(result))
        run.log_metrics({f"best_val/{k}": v for k, v in result.val.items()})
        summary = {"job": run.job, "n_params": n_params, **result.info,
                   **{f"best_val_{k}": v for k, v in result.val.items()}, **notes}
        save_model(net, spec["kind"], spec["params"], shape, out_dir / "model.pt")
        import polars as pl  # lazy: keeps the training module importable on a bare GPU machine

        with atomic_path(out_dir / "history.csv") as tmp:
            pl.DataFrame(result.history).write_csv(tmp)
        for name in ("model.pt", "history.csv"):
            run.log_artifact(out_dir / name)
        example = job_windows(series, spec, "val")[0][0][None].numpy()  # (1, L, C)
        run.log_model(out_dir / "model.pt", example)
        write_json(out_dir / "run.json", summary)
    return summary


def fine_tune_start(net: torch.nn.Module, series: PreparedSeries, spec: dict[str, Any]) -> Any:
    """Before a fine-tuning job's fit (few-shot, full): its start (seqcomp.train.transfer.Start)."""
    transfer = spec.get("transfer")
    if transfer is None or transfer["regime"] not in ("few_shot", "full"):
        return None
    from seqcomp.train.transfer import Start

    return Start.of(net, job_windows(series, spec, "val"), series.task)


def transfer_notes(net: torch.nn.Module, spec: dict[str, Any], pretrained: str | Path | None, channels: int) -> dict:
    """A transfer job's start (seqcomp.train.transfer): the pre-trained weights loaded (not for the
    from-scratch control), the head-only freeze, and what run.json records of them."""
    transfer = spec.get("transfer")
    if transfer is None:
        return {}
    from seqcomp.train.transfer import load_pretrained, tune_head_only

    notes: dict[str, Any] = {"transfer": transfer}
    if transfer["regime"] != "scratch":
        if pretrained is None:
            raise SeqcompError(f"{spec['model']}: a {transfer['regime']} transfer job needs --pretrained (a pretrain job's model.pt)")
        notes.update(load_pretrained(net, pretrained, spec, channels))
    if transfer["tune"] == "head":
        notes["tuned_modules"] = tune_head_only(net)
    log.info("%s: %s", spec["model"], ", ".join(f"{k} {v}" for k, v in transfer.items() if v is not None))
    return notes


def data_notes(series: PreparedSeries, spec: dict[str, Any]) -> dict[str, Any]:
    """run.json's notes on the series: the rows its ``gaps: fill`` inserted (the summary lists
    them) and, for a model with ``cycle: P``, what phase 0 is (``cycle_phase0``), with a warning
    line in the job's log when that is not the natural start of the period (hourly data not
    starting at midnight for P=24): the model is right, its phase labels shift."""
    if series.task != "forecast":
        return {}
    notes = {"inserted_rows": series.meta.get("inserted_rows", 0)}
    period = spec["params"].get("cycle")
    if period is not None:
        origin, warning = cycle_origin(series.meta, period)
        if warning:
            log.warning("warning: dataset %r: %s", spec["dataset"], warning)
        notes["cycle_phase0"] = origin
    return notes


def dataset_profile(series: PreparedSeries, shape: SeriesShape) -> dict[str, Any]:
    """Rows per split and this job's windows per split, plus the raw source's identity."""
    if series.task == "classification":  # independent samples: no rows, no channels
        samples = {s: len(series.windows(s, shape.lookback, shape.horizon)) for s in ("train", "val", "test")}
        return {"source": series.meta["source"], "classes": series.channels, "samples": samples}
    b = series.borders
    rows = {"train": b[0], "val": b[1] - b[0], "test": b[2] - b[1]}
    windows = {split: len(series.windows(split, shape.lookback, shape.horizon)) for split in rows}
    # rows a csv dataset's gaps: fill inserted and values its missing: ffill filled, apart: both change the data
    filled = {"inserted_rows": series.meta.get("inserted_rows", 0), "filled_values": series.meta.get("filled_values")}
    return {"source": series.meta["source"], "channels": series.meta["channels"], "rows": rows, "windows": windows,
            **filled}
