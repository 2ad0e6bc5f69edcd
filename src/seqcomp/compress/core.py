"""The compression stage's core: a trained model, its series and the job spec in; the stored
form and the report out. No paths, no tracking, no files: benchmarks, notebooks and tests
call this, and the stage (``compress/stage.py``) only loads, tracks and writes around it.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from seqcomp.compress import compress, fp32_model_bytes, stored_size
from seqcomp.compress.experts import expert_report
from seqcomp.compress.quant.groups import expert_layers, named_groups
from seqcomp.compress.quant.size import bytes_by_group
from seqcomp.data.windows import PreparedSeries, job_windows


def calibration_windows(series: PreparedSeries, spec: dict[str, Any]) -> torch.Tensor:
    """A seeded random sample of the spec's ``calibration.windows`` training windows (N, L, C):
    never val or test data."""
    train, n, seed = job_windows(series, spec, "train"), spec["calibration"]["windows"], spec["seed"]
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    return torch.stack([train[int(i)][0] for i in idx])


def compress_job(net: nn.Module, series: PreparedSeries, spec: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Run ``spec['pass']`` on ``net`` (left untouched): (stored form, report with exact sizes).

    The report is the honest account of the pass: what each layer became, whether it is
    simulated, and the stored size beside the fp32 size.
    """
    calib = calibration_windows(series, spec)
    # labeled val windows, given only to passes that choose among candidates on them (mixed precision)
    validation = job_windows(series, spec, "val").tensors()
    start = time.perf_counter()
    compressed, stored, report = compress(spec["pass_kind"], spec["pass_params"], net, calib, validation=validation)
    wall = time.perf_counter() - start
    size, baseline = stored_size(stored), fp32_model_bytes(net)
    groups = {name: group for name, _, _, _, group in named_groups(net)}
    report.update({
        "pass_name": spec["pass"],
        # the settings as configured, so the summary can tell a method (its settings) from its size
        "pass_params": spec["pass_params"],
        # the pass alone (calibration, coding, packing), not loading or writing: what a user of it waits
        "pass_wall_s": round(wall, 3),
        "size": size,
        "size_by_group": bytes_by_group(stored, groups),
        "fp32_bytes": baseline,
        # A parameter-free model (naive) stores nothing: no ratio to report.
        "compression_ratio": baseline / size["bytes"] if size["bytes"] else None,
    })
    if expert_layers(net):  # per-expert sensitivity (val) and routing (test): see compress/experts.py
        report["experts"] = expert_report(net, compressed, validation, job_windows(series, spec, "test").tensors()[0])
    return stored, report
