"""PV-tuning-lite vs QAT vs GPTQ at 2 and 3 bits on the trained ETTh1 H96 models (CPU).

Usage: python bench/pv_tune_etth1.py RESULTS_DIR MODEL [MODEL ...] > out.jsonl
(``PV_PASSES=w2_pv_rtn,w3_pv_rtn`` runs only those passes.)
Loads each trained model as the compress stage does, draws the 256 seeded calibration windows
(compress/core.py), gives the passes that use it the val split, and scores test MSE as the
evaluate stage does (seqcomp.scores.forecast_errors). One JSON line per (model, pass), with its
wall time.
bench/results/pv_tune_etth1_cpu.jsonl: measured on the shared 2-core CPU box at 22:00 UTC on
2026-12-07 (other jobs running: wall times are upper bounds).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from seqcomp.artifacts import load_model
from seqcomp.compress import compress, fp32_model_bytes, stored_size
from seqcomp.compress.core import calibration_windows
from seqcomp.data.windows import PreparedSeries, job_windows
from seqcomp.scores import forecast_errors

PASSES = {
    "w2_gptq": {"kind": "gptq_weight_sim", "bits": 2},
    "w3_gptq": {"kind": "gptq_weight_sim", "bits": 3},
    "w2_qat": {"kind": "qat_sim", "bits": 2, "epochs": 3, "lr": 1.0e-4},
    "w3_qat": {"kind": "qat_sim", "bits": 3, "epochs": 3, "lr": 1.0e-4},
    "w2_pv_gptq": {"kind": "pv_tune_sim", "base": {"kind": "gptq_weight_sim", "bits": 2}},
    "w3_pv_gptq": {"kind": "pv_tune_sim", "base": {"kind": "gptq_weight_sim", "bits": 3}},
    # the same from RTN codes: QAT's starting point, to separate PV-tuning's share from GPTQ's
    "w2_pv_rtn": {"kind": "pv_tune_sim", "base": {"kind": "rtn_weight_sim", "bits": 2}},
    "w3_pv_rtn": {"kind": "pv_tune_sim", "base": {"kind": "rtn_weight_sim", "bits": 3}},
}


def main(results: Path, models: list[str]) -> None:
    torch.set_num_threads(1)
    only = os.environ.get("PV_PASSES")
    passes = {k: v for k, v in PASSES.items() if only is None or k in only.split(",")}
    series = PreparedSeries.load(results / "data" / "etth1")
    for kind in models:
        path = results / "train" / "etth1" / kind / "L96-H96" / "seed0" / "model.pt"
        net = load_model(path)
        params = torch.load(path, map_location="cpu", weights_only=True)["params"]
        spec = {"lookback": 96, "horizon": 96, "params": params, "seed": 0, "calibration": {"windows": 256}}
        calib = calibration_windows(series, spec)
        validation = job_windows(series, spec, "val").tensors()
        test = job_windows(series, spec, "test")
        fp32 = forecast_errors(net, test)["mse"]
        print(json.dumps({"model": kind, "pass": "fp32", "test_mse": fp32}), flush=True)
        for name, entry in passes.items():
            start = time.perf_counter()
            model, stored, report = compress(entry["kind"], {k: v for k, v in entry.items() if k != "kind"}, net, calib,
                                             validation=validation)
            wall = time.perf_counter() - start
            mse = forecast_errors(model, test)["mse"]
            pv = report.get("pv_tune", {})
            print(json.dumps({
                "model": kind, "pass": name, "test_mse": mse, "vs_fp32": mse / fp32 - 1, "wall_s": round(wall, 1),
                "ratio": fp32_model_bytes(net) / stored_size(stored)["bytes"],
                **{k: pv[k] for k in ("val_loss_base", "val_loss_best", "best_round", "codes_changed", "codes_total") if k in pv},
            }), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
