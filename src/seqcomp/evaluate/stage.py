"""Evaluation stage shell: load the trained and compressed models and the series, run the core,
write metrics.json and track the run (its metrics, the record and the forecast examples)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqcomp.artifacts import load_model
from seqcomp.compress import load_compressed
from seqcomp.data.windows import PreparedSeries
from seqcomp.evaluate.core import evaluate_job
from seqcomp.io import read_json, write_json
from seqcomp.scores import HEADLINE
from seqcomp.tracking import Run, tracked


def run_evaluate(
    spec: dict[str, Any], train_model: Path, compressed_dir: Path, data_dir: Path, out_path: Path, run: Run
) -> dict:
    """Write metrics.json for one (dataset, model, lookback, horizon, seed, pass)."""
    report = read_json(compressed_dir / "report.json")
    stored = torch.load(compressed_dir / "model.pt", map_location="cpu", weights_only=True)
    model = load_compressed(spec["pass_kind"], spec["pass_params"], load_model(train_model), stored).eval()
    series = PreparedSeries.load(data_dir)
    with tracked(run):
        run.log_params(spec)
        metrics = {**evaluate_job(model, report, series, spec), "job": run.job}
        errors = {k: metrics[k] for k in (*HEADLINE[series.task], "mse_over_optimal") if k in metrics}
        flat = {f"test/{k}": v for k, v in errors.items()}
        # what the summary table needs, so it can be rebuilt from MLflow alone (notebooks/compare.ipynb)
        flat.update({k: metrics[k] for k in ("size_bytes", "fp32_bytes", "compression_ratio", "quantized_fraction")
                     if metrics[k] is not None})
        flat.update({f"latency_ms/{k}": v["median_ms"] for k, v in metrics["latency"].items()})
        run.log_metrics(flat)
        run.set_tags({"seqcomp.simulated": str(report["simulated"]).lower()})
        write_json(out_path, metrics)
        # what a person browsing the run wants beside its numbers: the whole record and the forecasts
        run.log_artifact(out_path)
        if "examples" in metrics:
            run.log_dict(metrics["examples"], "forecast_examples.json")
    return metrics
