"""Evaluation stage: test-split MSE/MAE, stored size and CPU latency of one compressed model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqcomp.compress import load_compressed
from seqcomp.data.windows import PreparedSeries
from seqcomp.evaluate.metrics import forecast_errors, latency_ms
from seqcomp.io import read_json, write_json
from seqcomp.tracking import Run, tracked
from seqcomp.artifacts import load_model


def run_evaluate(
    spec: dict[str, Any], train_model: Path, compressed_dir: Path, data_dir: Path, out_path: Path, run: Run
) -> dict:
    """Write metrics.json for one (dataset, model, lookback, horizon, seed, pass)."""
    report = read_json(compressed_dir / "report.json")
    stored = torch.load(compressed_dir / "model.pt", map_location="cpu", weights_only=True)
    model = load_compressed(spec["pass_kind"], spec["pass_params"], load_model(train_model), stored).eval()
    series = PreparedSeries.load(data_dir)
    test = series.windows("test", spec["lookback"], spec["horizon"])
    ev = spec["evaluate"]
    with tracked(run):
        run.log_params(spec)
        errors = forecast_errors(model, test, batch_size=ev["batch_size"])
        latency = {}
        for b in ev["latency_batch_sizes"]:
            example = torch.stack([test[i % len(test)][0] for i in range(b)])  # (b, L, C)
            latency[f"b{b}"] = latency_ms(model, example, ev["latency_warmup"], ev["latency_repeats"], ev["latency_threads"])
        metrics = {
            key: spec[key] for key in ("dataset", "model", "kind", "lookback", "horizon", "seed", "pass", "pass_kind")
        }
        metrics.update(
            {
                "split": "test",
                "mse": errors["mse"],
                "mae": errors["mae"],
                "n_windows": errors["n_windows"],
                "mse_per_step": errors["mse_per_step"],
                "simulated": report["simulated"],
                "kernels": report.get("kernels"),
                # share of the weights the pass actually compressed (S4D's FFT path stays fp32, ...)
                "quantized_layers": report.get("quantized_layers"),
                "quantized_fraction": report["quantized_numel"] / report["total_numel"] if report.get("total_numel") else 0.0,
                "size_bytes": report["size"]["bytes"],
                "file_bytes": report["file_bytes"],
                "fp32_bytes": report["fp32_bytes"],
                "compression_ratio": report["compression_ratio"],
                "latency": latency,
                "latency_device": "cpu",
                "run_id": run.run_id,
            }
        )
        flat = {"test/mse": errors["mse"], "test/mae": errors["mae"], "size_bytes": metrics["size_bytes"]}
        flat.update({f"latency_ms/{k}": v["median_ms"] for k, v in latency.items()})
        run.log_metrics(flat)
        run.set_tags({"seqcomp.simulated": str(report["simulated"]).lower()})
        write_json(out_path, metrics)
    return metrics
