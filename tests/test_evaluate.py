"""Evaluation: window-averaged errors that do not depend on the batch size; latency timing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from seqcomp.data.windows import PreparedSeries
from seqcomp.evaluate.metrics import call_ms, forecast_errors, latency_ms


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
