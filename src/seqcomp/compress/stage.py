"""Compression stage: load a trained model, run one pass, write the stored form and its report.

The report (report.json) is the honest account of the pass: what each layer became, whether
it is simulated, and the exact stored size beside the fp32 size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqcomp.compress import compress, fp32_model_bytes, stored_size
from seqcomp.data.windows import PreparedSeries, job_windows
from seqcomp.io import atomic_path, write_json
from seqcomp.tracking import Run, tracked
from seqcomp.artifacts import load_model


def calibration_windows(series: PreparedSeries, spec: dict[str, Any]) -> torch.Tensor:
    """A seeded random sample of the spec's ``calibration.windows`` training windows (N, L, C):
    never val or test data."""
    train, n, seed = job_windows(series, spec, "train"), spec["calibration"]["windows"], spec["seed"]
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    return torch.stack([train[int(i)][0] for i in idx])


def run_compress(spec: dict[str, Any], model_path: Path, data_dir: Path, out_dir: Path, run: Run) -> dict:
    """Compress the trained model at ``model_path`` with ``spec['pass']`` into ``out_dir``."""
    net = load_model(model_path)
    series = PreparedSeries.load(data_dir)
    calib = calibration_windows(series, spec)
    # labeled val windows, given only to passes that choose among candidates on them (mixed precision)
    validation = job_windows(series, spec, "val").tensors()
    with tracked(run):
        run.log_params(spec)
        _, stored, report = compress(spec["pass_kind"], spec["pass_params"], net, calib, validation=validation)
        with atomic_path(out_dir / "model.pt") as tmp:
            torch.save(stored, tmp)
        size = stored_size(stored)
        baseline = fp32_model_bytes(net)
        report.update(
            {
                "pass_name": spec["pass"],
                "size": size,
                "file_bytes": (out_dir / "model.pt").stat().st_size,
                "fp32_bytes": baseline,
                # A parameter-free model (naive) stores nothing: no ratio to report.
                "compression_ratio": baseline / size["bytes"] if size["bytes"] else None,
                "job": run.job,  # the MLflow run: tag seqcomp.job (its newest run)
            }
        )
        run.log_metrics({"size_bytes": size["bytes"], "fp32_bytes": baseline})
        run.set_tags({"seqcomp.simulated": str(report["simulated"]).lower(), "seqcomp.pass_kind": spec["pass_kind"]})
        write_json(out_dir / "report.json", report)
        run.log_artifact(out_dir / "report.json")
    return report
