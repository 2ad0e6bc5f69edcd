"""Evaluation stage: test-split MSE/MAE (or accuracy), stored size and CPU latency of a compressed model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqcomp.compress import load_compressed
from seqcomp.data.windows import PreparedSeries, job_windows
from seqcomp.evaluate.examples import forecast_examples
from seqcomp.evaluate.metrics import HEADLINE, latency_ms, scores
from seqcomp.io import read_json, write_json
from seqcomp.tracking import Run, tracked
from seqcomp.artifacts import load_model


def run_evaluate(
    spec: dict[str, Any], train_model: Path, compressed_dir: Path, data_dir: Path, out_path: Path, run: Run
) -> dict:
    """Write metrics.json for one (dataset, model, lookback, horizon, seed, pass)."""
    report = read_json(compressed_dir / "report.json")
    stored = torch.load(compressed_dir / "model.pt", map_location="cpu", weights_only=True)
    trained = load_model(train_model)
    model = load_compressed(spec["pass_kind"], spec["pass_params"], trained, stored).eval()
    series = PreparedSeries.load(data_dir)
    test = job_windows(series, spec, "test")
    ev = spec["evaluate"]
    with tracked(run):
        run.log_params(spec)
        errors = scores(model, test, series.task, batch_size=ev["batch_size"])
        errors = task_scores(errors, series.meta, spec["horizon"])
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
                "task": series.task,
                **errors,
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
                "job": run.job,  # the MLflow run: tag seqcomp.job (its newest run)
            }
        )
        if series.task == "forecast":  # three fixed test windows of the last channel, for the forecast plot
            metrics["examples"] = forecast_examples(model, test, series.channels - 1, series.meta["channels"][-1])
        flat = {f"test/{k}": errors[k] for k in (*HEADLINE[series.task], "mse_over_optimal") if k in errors}
        # what the summary table needs, so it can be rebuilt from MLflow alone (notebooks/compare.ipynb)
        flat.update({k: metrics[k] for k in ("size_bytes", "fp32_bytes", "compression_ratio", "quantized_fraction")
                     if metrics[k] is not None})
        flat.update({f"latency_ms/{k}": v["median_ms"] for k, v in latency.items()})
        run.log_metrics(flat)
        run.set_tags({"seqcomp.simulated": str(report["simulated"]).lower()})
        write_json(out_path, metrics)
        # what a person browsing the run wants beside its numbers: the whole record and the forecasts
        run.log_artifact(out_path)
        if "examples" in metrics:
            run.log_dict(metrics["examples"], "forecast_examples.json")
    return metrics


def task_scores(errors: dict[str, Any], meta: dict[str, Any], horizon: int) -> dict[str, Any]:
    """The scores of the dataset's task for metrics.json.

    Forecasting: MSE/MAE, plus the true process's optimal MSE (mean and per step) over the same
    horizon and the ratio to it when the dataset knows it (AR data). Classification: accuracy and chance
    accuracy; ``mse``/``mae`` are None (not applicable), so tables keep one schema.
    """
    if "accuracy" in errors:
        return {"mse": None, "mae": None, **errors, "chance_accuracy": meta["chance_accuracy"]}
    optimal = meta.get("optimal_mse_per_step")
    if not optimal:
        return errors
    optimal_mse = sum(optimal[:horizon]) / horizon
    return {**errors, "optimal_mse": optimal_mse, "mse_over_optimal": errors["mse"] / optimal_mse,
            "optimal_mse_per_step": optimal[:horizon]}
