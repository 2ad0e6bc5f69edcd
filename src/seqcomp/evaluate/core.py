"""The evaluation stage's core: the compressed model, the pass's report, the series and the job
spec in; the metrics record out (test errors, size, CPU latency, forecast examples). No paths,
no tracking, no files: the stage (``evaluate/stage.py``) loads, tracks and writes around it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from seqcomp.data.windows import PreparedSeries, job_windows
from seqcomp.evaluate.examples import forecast_examples
from seqcomp.evaluate.metrics import latency_ms
from seqcomp.scores import scores


def evaluate_job(model: nn.Module, report: dict[str, Any], series: PreparedSeries, spec: dict[str, Any]) -> dict:
    """metrics.json's record for one (dataset, model, lookback, horizon, seed, pass), less its run id."""
    test = job_windows(series, spec, "test")
    ev = spec["evaluate"]
    errors = task_scores(scores(model, test, series.task, batch_size=ev["batch_size"]), series.meta, spec["horizon"])
    latency = {}
    for b in ev["latency_batch_sizes"]:
        example = torch.stack([test[i % len(test)][0] for i in range(b)])  # (b, L, C)
        latency[f"b{b}"] = latency_ms(model, example, ev["latency_warmup"], ev["latency_repeats"], ev["latency_threads"])
    metrics = {key: spec[key] for key in ("dataset", "model", "kind", "lookback", "horizon", "seed", "pass", "pass_kind")}
    metrics.update({
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
    })
    if "transfer" in spec:  # a pre-trained model's variant: the summary's transfer table reads its regime here
        metrics["transfer"] = spec["transfer"]
    if series.task == "forecast":  # three fixed test windows of the last channel, for the forecast plot
        metrics["examples"] = forecast_examples(model, test, series.channels - 1, series.meta["channels"][-1])
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
