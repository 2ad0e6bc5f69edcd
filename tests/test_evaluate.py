"""Evaluation: window-averaged errors that do not depend on the batch size; latency timing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from seqcomp.data.windows import PreparedSeries
from seqcomp.evaluate.metrics import call_ms, latency_ms
from seqcomp.scores import forecast_errors


class Shift(torch.nn.Module):
    """Forecast = last value + 0.1: known, non-trivial errors."""

    def __init__(self, horizon: int):
        super().__init__()
        self.horizon = horizon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1:, :].expand(-1, self.horizon, -1) + 0.1


def test_metrics_do_not_depend_on_batch_size(tiny_data: Path) -> None:
    test = PreparedSeries.load(tiny_data).windows("test", 24, 8)
    model = Shift(8)
    results = [forecast_errors(model, test, batch_size=b) for b in (1, 7, 32, 1000)]
    assert all(r["n_windows"] == len(test) for r in results)
    for r in results[1:]:
        assert r["mse"] == pytest.approx(results[0]["mse"], rel=1e-9)
        assert r["mae"] == pytest.approx(results[0]["mae"], rel=1e-9)


def test_metrics_equal_a_direct_computation(tiny_data: Path) -> None:
    test = PreparedSeries.load(tiny_data).windows("test", 24, 8)
    x, y = test.tensors()
    pred = Shift(8)(x)
    r = forecast_errors(Shift(8), test, batch_size=13)
    assert r["mse"] == pytest.approx(float(((pred - y) ** 2).double().mean()), rel=1e-6)
    assert r["mae"] == pytest.approx(float((pred - y).abs().double().mean()), rel=1e-6)
    assert len(r["mse_per_step"]) == 8


def test_latency_reports_median_with_fixed_threads() -> None:
    model = torch.nn.Linear(16, 16)
    out = latency_ms(model, torch.randn(4, 16), warmup=2, repeats=5, threads=1)
    assert out["min_ms"] <= out["median_ms"] <= out["max_ms"] and out["threads"] == 1 and out["repeats"] == 5


def test_the_timer_interleaves_paired_calls_and_stops_at_its_budget() -> None:
    order: list[str] = []
    times = call_ms([lambda: order.append("a"), lambda: order.append("b")], warmup=1, repeats=3)
    assert order == ["a", "b"] * 4 and [len(t) for t in times] == [3, 3] and min(times[0]) >= 0
    # each call sleeps >= 10 ms: past a 20 ms budget after at most 3 rounds, and at least 1 round runs
    (slept,) = call_ms([lambda: time.sleep(0.01)], warmup=0, repeats=100, budget_s=0.02)
    assert 1 <= len(slept) <= 3 and min(slept) >= 10
    assert len(call_ms([lambda: None], warmup=0, repeats=5, budget_s=-1.0)[0]) == 1


def test_forecast_examples_keep_fixed_windows_of_one_channel(tiny_data: Path) -> None:
    from seqcomp.evaluate.examples import example_indices, forecast_examples

    assert example_indices(11) == [0, 5, 10] and example_indices(2) == [0, 1] and example_indices(1) == [0]
    test = PreparedSeries.load(tiny_data).windows("test", 24, 8)
    ex = forecast_examples(Shift(8), test, -1, "c2")
    last = len(test) - 1
    x, y = test[last]
    assert ex["windows"][-1] == last and ex["channel"] == "c2"
    assert ex["context"][-1] == pytest.approx(x[:, -1].tolist(), abs=1e-4)
    assert ex["truth"][-1] == pytest.approx(y[:, -1].tolist(), abs=1e-4)
    assert ex["forecast"][-1] == pytest.approx([float(x[-1, -1]) + 0.1] * 8, abs=1e-4)


def test_the_stage_cores_need_no_files_or_tracking(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """compress_job and evaluate_job take a model, a series and a spec: what a benchmark or notebook calls."""
    from seqcomp.compress import load_compressed
    from seqcomp.compress.core import compress_job
    from seqcomp.data.windows import PreparedSeries, job_windows
    from seqcomp.evaluate.core import evaluate_job
    from seqcomp.models import SeriesShape, build_model

    series = PreparedSeries.load(tiny_data)
    monkeypatch.chdir(tmp_path / "data")  # nothing may be written anywhere: watch this folder
    before = sorted(p.name for p in Path.cwd().iterdir())
    spec = {"dataset": "tiny", "model": "lin", "kind": "linear", "params": {}, "lookback": 24, "horizon": 8, "seed": 0,
            "pass": "w8", "pass_kind": "rtn_weight_sim", "pass_params": {"bits": 8}, "calibration": {"windows": 16},
            "evaluate": {"batch_size": 64, "latency_batch_sizes": [1], "latency_warmup": 1, "latency_repeats": 2,
                         "latency_threads": 1}}
    net = build_model("linear", {}, SeriesShape(24, 8, series.channels))
    net.fit_closed_form(*job_windows(series, spec, "train").tensors())
    stored, report = compress_job(net, series, spec)
    assert report["simulated"] and report["size"]["bytes"] < report["fp32_bytes"]
    # the summary's inputs: the pass's own time, its settings, and where the stored bytes go
    assert report["pass_wall_s"] >= 0 and report["pass_params"] == {"bits": 8}
    by_group = report["size_by_group"]
    assert sum(by_group.values()) == report["size"]["bytes"]
    assert by_group["linear"] >= report["size"]["weights_bytes"] > 0  # the coded matrix's codes are the linear group's
    model = load_compressed("rtn_weight_sim", {"bits": 8}, build_model("linear", {}, SeriesShape(24, 8, series.channels)),
                            stored)
    metrics = evaluate_job(model.eval(), {**report, "file_bytes": 0}, series, spec)
    assert metrics["pass"] == "w8" and metrics["n_windows"] == len(job_windows(series, spec, "test"))
    assert 0 < metrics["mse"] < 2 and metrics["latency"]["b1"]["median_ms"] > 0
    assert sorted(p.name for p in Path.cwd().iterdir()) == before


@pytest.mark.parametrize("transfer", [None, {"pretrained": "ttm", "regime": "few_shot", "fraction": 0.05,
                                             "windows": "first", "tune": "head", "context": 24, "pretrain_horizon": 8,
                                             "corpus": ["synth"], "overlap": False}])
def test_metrics_carry_the_transfer_record_of_a_pretrained_variant(tiny_data: Path, transfer: dict | None) -> None:
    """A transfer variant's metrics.json holds its spec's ``transfer`` (the summary's transfer table
    reads the regime from it); any other model's record has no such key."""
    from seqcomp.compress.core import compress_job
    from seqcomp.data.windows import job_windows
    from seqcomp.evaluate.core import evaluate_job
    from seqcomp.models import SeriesShape, build_model

    series = PreparedSeries.load(tiny_data)
    spec = {"dataset": "tiny", "model": "lin", "kind": "linear", "params": {}, "lookback": 24, "horizon": 8, "seed": 0,
            "pass": "fp32", "pass_kind": "fp32", "pass_params": {}, "calibration": {"windows": 16},
            "evaluate": {"batch_size": 64, "latency_batch_sizes": [1], "latency_warmup": 0, "latency_repeats": 1,
                         "latency_threads": 1}}
    if transfer is not None:
        spec["transfer"] = transfer
    net = build_model("linear", {}, SeriesShape(24, 8, series.channels))
    net.fit_closed_form(*job_windows(series, spec, "train").tensors())
    _, report = compress_job(net, series, spec)
    metrics = evaluate_job(net.eval(), {**report, "file_bytes": 0}, series, spec)
    if transfer is None:
        assert "transfer" not in metrics
    else:
        assert metrics["transfer"] == transfer
