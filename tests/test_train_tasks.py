"""Classification tasks and models that take more than the values (a cycle's phases) through
train -> compress -> evaluate -> summary, and a small Mamba that learns selective copying (the
task an LTI model is expected to fail at long lengths)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from seqcomp.artifacts import load_model
from seqcomp.compress.stage import run_compress
from seqcomp.data.stage import run_data
from seqcomp.data.windows import PreparedSeries
from seqcomp.scores import classification_scores
from seqcomp.evaluate.stage import run_evaluate
from seqcomp.io import read_json
from seqcomp.models import SeriesShape, build_model
from seqcomp.tracking import Run
from seqcomp.train.stage import run_train
from seqcomp.train.module import token_cross_entropy

SETTINGS = {"max_epochs": 2, "patience": 2, "batch_size": 32, "lr": 0.01, "weight_decay": 0.0, "lr_decay": 1.0, "grad_clip": 1.0,
            "loss": "mse", "limit_train_batches": 3, "accelerator": "cpu", "precision": "auto"}
EVALUATE = {"batch_size": 64, "latency_batch_sizes": [2], "latency_warmup": 1, "latency_repeats": 2,
            "latency_threads": 1}
COPY = {"kind": "selective_copying", "length": 12, "n_tokens": 2, "vocab": 5, "n_train": 200, "n_val": 40, "n_test": 60}


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The journal folder of the module's runs (tracking itself is tested in test_tracking.py)."""
    return tmp_path_factory.mktemp("journal")


def _run(journal: Path, stage: str) -> Run:
    return Run.start(journal, "seqcomp/t", stage, stage, {})


def _pipeline(model: str, params: dict, data: Path, tmp_path: Path, journal: Path) -> tuple[dict, dict]:
    meta = read_json(data / "meta.json")
    spec = {"experiment": "seqcomp/t", "dataset": "copy", "model": model, "kind": model, "params": params,
            "train": SETTINGS, "lookback": meta["length"], "horizon": meta["targets"], "seed": 0}
    summary = run_train(spec, data, tmp_path / model / "train", _run(journal, "train"))
    passes = {"pass": "fp32", "pass_kind": "fp32", "pass_params": {}}
    base = {k: v for k, v in spec.items() if k != "train"}
    run_compress({**base, **passes, "calibration": {"windows": 8}}, tmp_path / model / "train" / "model.pt", data,
                 tmp_path / model / "fp32", _run(journal, "compress"))
    metrics = run_evaluate({**base, **passes, "evaluate": EVALUATE}, tmp_path / model / "train" / "model.pt",
                           tmp_path / model / "fp32", data, tmp_path / model / "metrics.json", _run(journal, "evaluate"))
    return summary, metrics


@pytest.mark.slow
def test_classification_task_runs_through_every_stage(tmp_path: Path, journal: Path) -> None:
    data = tmp_path / "data"
    run_data(COPY, data, name="copy")
    summary, metrics = _pipeline("lstm", {"hidden": 8}, data, tmp_path, journal)
    history = pl.read_csv(tmp_path / "lstm" / "train" / "history.csv")
    assert {"train/loss", "val/ce", "val/accuracy"} <= set(history.columns) and "val/mse" not in history.columns
    assert summary["method"] == "sgd" and 0 <= summary["best_val_accuracy"] <= 1 and "best_val_mse" not in summary
    # the saved model is the checkpoint with the lowest validation cross-entropy
    val = PreparedSeries.load(data).windows("val", 12, 2)
    assert history["val/ce"].min() == pytest.approx(
        classification_scores(load_model(tmp_path / "lstm" / "train" / "model.pt"), val)["ce"], rel=1e-4)
    assert metrics["task"] == "classification" and metrics["mse"] is None and metrics["mae"] is None
    assert metrics["n_samples"] == 60 and metrics["chance_accuracy"] == pytest.approx(1 / 3)
    assert 0 <= metrics["seq_accuracy"] <= metrics["accuracy"] <= 1 and len(metrics["accuracy_per_step"]) == 2
    assert "examples" not in metrics
    assert json.loads((tmp_path / "lstm" / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]

    # a closed-form model fits one-hot targets by least squares: a linear classifier
    spec = {"experiment": "seqcomp/t", "dataset": "copy", "model": "linear", "kind": "linear", "params": {},
            "train": SETTINGS, "lookback": 12, "horizon": 2, "seed": 0}
    summary = run_train(spec, data, tmp_path / "linear", _run(journal, "train"))
    assert summary["method"] == "closed form" and 0 <= summary["best_val_accuracy"] <= 1


def test_ar_metrics_carry_the_optimal_error(tmp_path: Path, journal: Path) -> None:
    data = tmp_path / "data"
    run_data({"kind": "ar", "n_steps": 3000, "coefficients": [0.8], "seed": 1}, data, name="ar")
    meta = read_json(data / "meta.json")
    spec = {"experiment": "seqcomp/t", "dataset": "ar", "model": "linear", "kind": "linear", "params": {},
            "train": SETTINGS, "lookback": 16, "horizon": 4, "seed": 0}
    run_train(spec, data, tmp_path / "train", _run(journal, "train"))
    base = {k: v for k, v in spec.items() if k != "train"}
    passes = {"pass": "fp32", "pass_kind": "fp32", "pass_params": {}}
    run_compress({**base, **passes, "calibration": {"windows": 8}}, tmp_path / "train" / "model.pt", data,
                 tmp_path / "fp32", _run(journal, "compress"))
    m = run_evaluate({**base, **passes, "evaluate": EVALUATE}, tmp_path / "train" / "model.pt", tmp_path / "fp32", data,
                     tmp_path / "metrics.json", _run(journal, "evaluate"))
    assert m["optimal_mse_per_step"] == meta["optimal_mse_per_step"][:4]
    assert m["optimal_mse"] == pytest.approx(sum(meta["optimal_mse_per_step"][:4]) / 4)
    assert m["mse_over_optimal"] == pytest.approx(m["mse"] / m["optimal_mse"])
    # nothing beats the true process's forecast beyond sampling noise; this linear model, whose
    # window-mean normalisation forces its weights to sum to 1, cannot reach it (0.8^h != 1)
    assert 1.0 < m["mse_over_optimal"] < 1.5 and m["task"] == "forecast" and "accuracy" not in m


def test_summary_takes_accuracy_rows_beside_mse_rows(tmp_path: Path) -> None:
    from seqcomp.summary.stage import run_summary

    common = {"lookback": 12, "horizon": 2, "seed": 0, "pass": "fp32", "pass_kind": "fp32", "simulated": False,
              "size_bytes": 400, "file_bytes": 900, "fp32_bytes": 400, "compression_ratio": 1.0, "quantized_fraction": 0.0,
              "latency": {"b1": {"median_ms": 1.0}}}
    rows = [
        {**common, "dataset": "copy", "model": "mamba", "kind": "mamba", "task": "classification", "mse": None, "mae": None,
         "accuracy": 0.9, "seq_accuracy": 0.8, "chance_accuracy": 0.25, "n_samples": 10, "accuracy_per_step": [0.9, 0.9]},
        {**common, "dataset": "ar", "model": "mamba", "kind": "mamba", "task": "forecast", "mse": 1.1, "mae": 0.8,
         "optimal_mse": 1.0, "mse_over_optimal": 1.1, "n_windows": 5, "mse_per_step": [1.0, 1.2]},
    ]
    paths = []
    for i, row in enumerate(rows):
        paths.append(tmp_path / f"m{i}.json")
        paths[-1].write_text(json.dumps(row))
    table = run_summary([str(p) for p in paths], [], [], tmp_path / "summary", tmp_path / "plots")
    by_dataset = {r["dataset"]: r for r in table.iter_rows(named=True)}
    assert by_dataset["copy"]["accuracy"] == pytest.approx(0.9) and by_dataset["copy"]["mse"] is None
    assert by_dataset["ar"]["mse_over_optimal"] == pytest.approx(1.1) and by_dataset["ar"]["accuracy"] is None
    assert "accuracy" in (tmp_path / "summary" / "results.md").read_text()
    # and with classification rows only (no MSE anywhere)
    run_summary([str(paths[0])], [], [], tmp_path / "summary2", tmp_path / "plots2")


def test_small_mamba_learns_selective_copying() -> None:
    """Short sequences, two data tokens among noise: a 2-layer Mamba gets well above chance (1/4)
    in a few epochs. (Whether S4D fails at long lengths is a benchmark result, not tested here.)"""
    from seqcomp.data.selective_copying import SelectiveCopying, SelectiveCopyingConfig
    from seqcomp.data.windows import SampleDataset

    torch.manual_seed(0)
    task = SelectiveCopying(SelectiveCopyingConfig(length=16, n_tokens=2, vocab=6, n_train=1000, n_test=500))
    splits = {k: SampleDataset(*map(torch.from_numpy, v), 6) for k, v in task.samples().items()}
    net = build_model("mamba", {"d_model": 16, "d_state": 8, "n_layers": 2}, SeriesShape(16, 2, 6))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    x, y = splits["train"].tensors()
    for epoch in range(3):
        net.train()
        for idx in torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch)).split(32):
            opt.zero_grad()
            token_cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    accuracy = classification_scores(net, splits["test"])["accuracy"]
    assert accuracy > 2 * task.chance, f"accuracy {accuracy:.3f}, chance {task.chance:.3f}"


@pytest.mark.parametrize("model,params,pass_kind,pass_params", [
    ("linear", {"cycle": 12}, "int8_dynamic", {}),
    ("dlinear", {"cycle": 12, "revin": True}, "rtn_weight_sim", {"bits": 4}),
])
def test_cycle_model_gets_its_phases_in_every_stage(tmp_path: Path, journal: Path, model: str, params: dict,
                                                    pass_kind: str, pass_params: dict) -> None:
    data = tmp_path / "data"
    run_data({"kind": "synthetic", "n_steps": 600, "channels": 3, "seed": 1, "split": {"ratios": [0.6, 0.2, 0.2]}},
            data, name="syn")
    spec = {"experiment": "seqcomp/t", "dataset": "syn", "model": model, "kind": model, "params": params,
            "train": SETTINGS, "lookback": 24, "horizon": 8, "seed": 0}
    summary = run_train(spec, data, tmp_path / "train", _run(journal, "train"))
    base = {k: v for k, v in spec.items() if k != "train"}
    passes = {"pass": "p", "pass_kind": pass_kind, "pass_params": pass_params}
    run_compress({**base, **passes, "calibration": {"windows": 8}}, tmp_path / "train" / "model.pt", data,
                 tmp_path / "p", _run(journal, "compress"))
    m = run_evaluate({**base, **passes, "evaluate": EVALUATE}, tmp_path / "train" / "model.pt", tmp_path / "p", data,
                     tmp_path / "metrics.json", _run(journal, "evaluate"))
    # the evaluated model saw the phases: its error is the trained model's on the same windows
    trained = load_model(tmp_path / "train" / "model.pt").eval()
    x, y = PreparedSeries.load(data).windows("test", 24, 8, cycle=12).tensors()
    with torch.no_grad():
        direct = float((trained(x) - y).square().mean())
    assert m["mse"] == pytest.approx(direct, rel=0.1) and np.isfinite(summary["best_val_mse"])
    assert m["examples"]["channel"] == "ch2" and len(m["examples"]["context"][0]) == 24
