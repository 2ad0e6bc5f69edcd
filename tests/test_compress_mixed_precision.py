"""mixed_precision_sim: measured/Hessian sensitivities, the ILP's choice, budgets, exact sizes."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
from compress_testkit import SHAPE, TINY, output_mse, registry_model, round_trip, windows
from torch import nn

from seqcomp.compress import compress, mixed_precision, pass_config, stored_size
from seqcomp.compress.bitpack import packed_nbytes
from seqcomp.compress.mixed_precision import choose_bits
from seqcomp.errors import ConfigError
from seqcomp.models import build_model


class TwoBranch(nn.Module):
    """Layers that differ in sensitivity: a big side branch whose output is damped 20x."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp, self.head, self.side = nn.Linear(16, 64), nn.Linear(64, 8), nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 16) -> (N, 8)
        h = torch.tanh(self.inp(x))
        return self.head(h) + 0.05 * self.side(h).view(-1, 8, 8).sum(-1)


CALIB = torch.randn(128, 16, generator=torch.Generator().manual_seed(1))
HELD_OUT = torch.randn(512, 16, generator=torch.Generator().manual_seed(2))
# per-channel fp16 scales: (numel * 3 + 16 * rows) bits over the 1024 + 512 + 4096 weights
UNIFORM_3 = (3 * (1024 + 512 + 4096) + 16 * (64 + 8 + 64)) / (1024 + 512 + 4096)


@pytest.mark.parametrize("seed", range(5))
def test_ilp_finds_the_brute_force_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sens = rng.random((5, 3)) * rng.random((5, 1)) * 10  # layers differ in scale
    cost = np.sort(rng.integers(1, 50, (5, 3)), axis=1).astype(float)
    budget = float(cost.sum(axis=0).mean())
    best = min(
        (sum(sens[i, c] for i, c in enumerate(combo)), combo)
        for combo in itertools.product(range(3), repeat=5)
        if sum(cost[i, c] for i, c in enumerate(combo)) <= budget
    )
    choice = choose_bits(sens, cost, budget)
    assert cost[np.arange(5), choice].sum() <= budget
    assert sens[np.arange(5), choice].sum() == pytest.approx(best[0], rel=1e-9)
    assert choose_bits(sens, cost, float(cost[:, 0].sum()) - 1) is None  # below the cheapest: infeasible


@pytest.mark.parametrize("sensitivity", ["measured", "hessian"])
def test_choice_respects_the_budget_and_beats_uniform_at_the_same_bits(sensitivity: str) -> None:
    model = TwoBranch().eval()
    params = {"avg_bits": UNIFORM_3, "sensitivity": sensitivity}
    compressed, stored, report = compress("mixed_precision_sim", params, model, CALIB)
    rows = {row["name"]: row for row in report["layers"]}
    bits = {name: rows[f"{name}.weight"]["bits"] for name in ("inp", "head", "side")}
    assert bits["side"] < 3 < min(bits["inp"], bits["head"])  # the damped branch pays for the others
    coded = sum(packed_nbytes(m.weight.numel(), bits[n]) + 2 * m.weight.shape[0] for n, m in model.named_children())
    assert report["achieved"]["avg_bits"] == pytest.approx(8 * coded / 5632) and 8 * coded <= UNIFORM_3 * 5632
    uniform3 = next(u for u in report["uniform"] if u["bits"] == 3)
    assert uniform3["avg_bits"] == pytest.approx(UNIFORM_3)
    assert report["achieved"]["predicted_mse"] <= uniform3["predicted_mse"]  # the ILP's own objective
    assert all(u["ilp_predicted_mse_at_same_bits"] <= u["predicted_mse"] for u in report["uniform"])  # Pareto points
    assert report["achieved"]["calib_mse"] < uniform3["calib_mse"]  # measured, not predicted
    rtn3 = compress("rtn_weight_sim", {"bits": 3}, model, None)[0]
    assert output_mse(compressed, model, HELD_OUT) < 0.5 * output_mse(rtn3, model, HELD_OUT)  # on unseen inputs
    assert stored_size(stored)["bytes"] == coded + 3 * (1 + 16) + 4 * (64 + 8 + 64)  # + bit tags, shapes, biases


def test_hessian_sensitivity_estimates_the_measured_one() -> None:
    model = TwoBranch().eval()
    tables = {
        s: compress("mixed_precision_sim", {"avg_bits": 8.0, "sensitivity": s, "bits": [2, 4]}, model, CALIB)[2]["layers"]
        for s in ("measured", "hessian")
    }
    for measured, hessian in zip(tables["measured"], tables["hessian"]):
        if "sensitivity" in measured:
            assert hessian["hessian_trace"] > 0
            for b, value in measured["sensitivity"].items():
                assert 0.5 < hessian["sensitivity"][b] / value < 2


@pytest.mark.parametrize("kind", sorted(set(TINY) - {"naive"}))
def test_never_worse_than_uniform_rtn_at_its_own_stored_bits(kind: str) -> None:
    """At uniform 3-bit RTN's exact stored bits (scales included), measured against that pass."""
    model, calib = registry_model(kind), windows(32)
    compressed, stored, _ = compress("mixed_precision_sim", {"uniform_bits": 3}, model, calib)
    rtn3, rtn3_stored, _ = compress("rtn_weight_sim", {"bits": 3}, model, None)
    sizes = stored_size(stored), stored_size(rtn3_stored)
    assert sizes[0]["weights_bytes"] + sizes[0]["scales_bytes"] <= sizes[1]["weights_bytes"] + sizes[1]["scales_bytes"]
    assert output_mse(compressed, model, calib) <= output_mse(rtn3, model, calib)


def test_a_choice_that_measures_worse_than_uniform_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The measured check, with the ILP replaced by a bad but affordable choice."""
    bad = np.array([0, 0, 1])  # inp and head at 2 bits, side at 3: cheaper than uniform 3-bit
    monkeypatch.setattr(mixed_precision, "choose_bits", lambda *args: bad)
    model = TwoBranch().eval()
    compressed, _, report = compress("mixed_precision_sim", {"uniform_bits": 3}, model, CALIB)
    assert report["achieved"]["chosen_by"] == "uniform int3"
    assert report["achieved"]["ilp_calib_mse"] > 2 * report["achieved"]["calib_mse"]
    rtn3 = compress("rtn_weight_sim", {"bits": 3}, model, None)[0]
    assert output_mse(compressed, model, CALIB) == output_mse(rtn3, model, CALIB)


def test_hessian_through_the_chunked_scan_matches_the_sequential_one() -> None:
    """Mamba's chunked scan has a first-order-only backward; the traces need no more."""
    def traces_with(scan: str) -> list[float]:
        torch.manual_seed(0)
        model = build_model("mamba", {**TINY["mamba"], "scan": scan}, SHAPE).eval()
        params = {"uniform_bits": 4, "sensitivity": "hessian", "hutchinson_samples": 4}
        layers = compress("mixed_precision_sim", params, model, windows(8))[2]["layers"]
        return [row["hessian_trace"] for row in layers if "hessian_trace" in row]

    traces = {scan: traces_with(scan) for scan in ("chunked", "sequential")}
    assert len(traces["chunked"]) > 3 and all(np.isfinite(traces["chunked"]))
    largest = max(map(abs, traces["chunked"]))
    assert traces["chunked"] == pytest.approx(traces["sequential"], rel=1e-2, abs=1e-6 * largest)


def test_gptq_quantizer_codes_linear_weights_by_gptq_from_fp32_inputs() -> None:
    model = TwoBranch().eval()
    params = {"uniform_bits": 3, "bits": [3], "quantizer": "gptq"}
    compressed, _, report = compress("mixed_precision_sim", params, model, CALIB)
    gptq3 = compress("gptq_weight_sim", {"bits": 3}, model, CALIB)[0]
    assert torch.equal(compressed.inp.weight, gptq3.inp.weight)  # the first layer sees fp32 inputs in both
    assert not torch.equal(compressed.inp.weight, compress("rtn_weight_sim", {"bits": 3}, model, None)[0].inp.weight)
    assert {row["action"] for row in report["layers"] if "bits" in row} == {"int3 gptq (mixed precision) (simulated)"}


@pytest.mark.parametrize("quantizer", ["rtn", "gptq"])
@pytest.mark.parametrize("kind", sorted(TINY))
def test_round_trip_on_every_model(kind: str, quantizer: str) -> None:
    params = {"avg_bits": 5.0, "quantizer": quantizer}
    make = functools.partial(registry_model, kind)
    _, _, report = round_trip("mixed_precision_sim", params, make, windows(3), windows(8, 1))
    assert ("skipped" in report) == (kind == "naive")
    if kind != "naive":
        assert report["achieved"]["avg_bits"] <= 5.0


def test_fp8_scales_round_trip_and_are_counted_in_the_budget() -> None:
    params = {"avg_bits": 5.6, "bits": [4, 8], "scale_dtype": "float8_e4m3"}  # rows of 8: fp16 scales cost 2 bits
    _, stored, report = round_trip("mixed_precision_sim", params, lambda s: registry_model("lstm", s), windows(3), windows(8, 1))
    units = [k for k in stored if k.endswith(".scale_unit")]
    assert units and len(units) == report["quantized_layers"]
    assert all(stored[k.replace(".scale_unit", ".scales")].dtype == torch.float8_e4m3fn for k in units)
    assert report["achieved"]["avg_bits"] <= 5.6
    with pytest.raises(ConfigError, match="avg_bits: 5.6 .*is below"):
        compress("mixed_precision_sim", {**params, "scale_dtype": "float16"}, registry_model("lstm"), windows(8, 1))


def test_impossible_budget_and_missing_calibration_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match=r"avg_bits: 2.0 .*is below the smallest average .*: 2\.3864"):
        compress("mixed_precision_sim", {"avg_bits": 2.0}, TwoBranch().eval(), CALIB)
    with pytest.raises(ValueError, match="needs calibration windows"):
        compress("mixed_precision_sim", {"avg_bits": 4.0}, TwoBranch().eval(), None)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({}, "avg_bits"),
        ({"avg_bits": -1}, "avg_bits"),
        ({"avg_bits": 3, "uniform_bits": 3}, "avg_bits"),
        ({"uniform_bits": 1}, "uniform_bits"),
        ({"avg_bits": 3, "bits": [1, 4]}, "bits"),
        ({"avg_bits": 3, "bits": [4, 4]}, "bits"),
        ({"avg_bits": 3, "bits": []}, "bits"),
        ({"avg_bits": 3, "sensitivity": "fisher"}, "sensitivity"),
        ({"avg_bits": 3, "quantizer": "awq"}, "quantizer"),
        ({"avg_bits": 3, "hutchinson_samples": 0}, "hutchinson_samples"),
        ({"avg_bits": 3, "group_size": 0}, "group_size"),
        ({"avg_bits": 3, "scale_dtype": "bfloat16"}, "scale_dtype"),
        ({"avg_bits": 3, "budget": 3}, "budget"),
    ],
)
def test_config_errors_name_the_key(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"passes\.mp: .*{key}"):
        pass_config("mixed_precision_sim", params, "passes.mp")
