"""mixed_precision_sim: measured/Hessian sensitivities, the ILP's choice, budgets, exact sizes,
sequential GPTQ, selection on labeled validation windows."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
from compress_testkit import SHAPE, TINY, TwoBranch, output_mse, registry_model, round_trip, windows
from torch import nn

from seqcomp.compress import build_pass, compress, pass_config, stored_size
from seqcomp.compress.quant.bitpack import packed_nbytes
from seqcomp.compress.passes import mixed_precision_sim as mixed_precision
from seqcomp.compress.passes.mixed_precision_sim import choose_bits, paired_p_value
from seqcomp.compress.quant.common import task_loss
from seqcomp.errors import ConfigError
from seqcomp.models import build_model



CALIB = torch.randn(128, 16, generator=torch.Generator().manual_seed(1))
HELD_OUT = torch.randn(512, 16, generator=torch.Generator().manual_seed(2))
CAL = {"select_on": "calibration"}  # the tests that give no labeled val windows choose on calibration
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
    params = {"avg_bits": UNIFORM_3, "sensitivity": sensitivity, **CAL}
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
        s: compress(
            "mixed_precision_sim", {"avg_bits": 8.0, "sensitivity": s, "bits": [2, 4], **CAL}, model, CALIB
        )[2]["layers"]
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
    compressed, stored, _ = compress("mixed_precision_sim", {"uniform_bits": 3, **CAL}, model, calib)
    rtn3, rtn3_stored, _ = compress("rtn_weight_sim", {"bits": 3}, model, None)
    sizes = stored_size(stored), stored_size(rtn3_stored)
    assert sizes[0]["weights_bytes"] + sizes[0]["scales_bytes"] <= sizes[1]["weights_bytes"] + sizes[1]["scales_bytes"]
    assert output_mse(compressed, model, calib) <= output_mse(rtn3, model, calib)


def test_a_choice_that_measures_worse_than_uniform_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The measured check, with the ILP replaced by a bad but affordable choice."""
    bad = np.array([0, 0, 1])  # inp and head at 2 bits, side at 3: cheaper than uniform 3-bit
    monkeypatch.setattr(mixed_precision, "choose_bits", lambda *args: bad)
    model = TwoBranch().eval()
    compressed, _, report = compress("mixed_precision_sim", {"uniform_bits": 3, **CAL}, model, CALIB)
    assert report["achieved"]["chosen_by"] == "uniform int3"
    ilp = next(cand for cand in report["selection"]["candidates"] if cand["name"].startswith("ilp"))
    assert ilp["calib_mse"] == ilp["score"] > 2 * report["achieved"]["calib_mse"]
    rtn3 = compress("rtn_weight_sim", {"bits": 3}, model, None)[0]
    assert output_mse(compressed, model, CALIB) == output_mse(rtn3, model, CALIB)


def test_hessian_through_the_chunked_scan_matches_the_sequential_one() -> None:
    """Mamba's chunked scan has a first-order-only backward; the traces need no more."""
    def traces_with(scan: str) -> list[float]:
        torch.manual_seed(0)
        model = build_model("mamba", {**TINY["mamba"], "scan": scan}, SHAPE).eval()
        params = {"uniform_bits": 4, "sensitivity": "hessian", "hutchinson_samples": 4, **CAL}
        layers = compress("mixed_precision_sim", params, model, windows(8))[2]["layers"]
        return [row["hessian_trace"] for row in layers if "hessian_trace" in row]

    traces = {scan: traces_with(scan) for scan in ("chunked", "sequential")}
    assert len(traces["chunked"]) > 3 and all(np.isfinite(traces["chunked"]))
    largest = max(map(abs, traces["chunked"]))
    assert traces["chunked"] == pytest.approx(traces["sequential"], rel=1e-2, abs=1e-6 * largest)


@pytest.mark.parametrize(
    "kind", ["twobranch", "lstm", "transformer", "patchtst", "tsmixer", "mamba", "s4d", "spacetime"]
)
def test_gptq_with_the_uniform_assignment_reproduces_uniform_gptq(kind: str) -> None:
    """The chosen assignment is quantized sequentially, as gptq_weight_sim does (not each layer
    on fp32 inputs): with one bit-width allowed, every weight equals uniform GPTQ's."""
    model, calib = (TwoBranch().eval(), CALIB) if kind == "twobranch" else (registry_model(kind), windows(32))
    params = {"uniform_bits": 3, "bits": [3], "quantizer": "gptq", **CAL}
    compressed, _, report = compress("mixed_precision_sim", params, model, calib)
    gptq3 = compress("gptq_weight_sim", {"bits": 3}, model, calib)[0]
    for (name, mine), theirs in zip(compressed.named_parameters(), gptq3.parameters()):
        assert torch.equal(mine, theirs), name
    rtn3 = compress("rtn_weight_sim", {"bits": 3}, model, None)[0]
    assert any(not torch.equal(a, b) for a, b in zip(compressed.parameters(), rtn3.parameters()))
    if kind == "twobranch":  # the sensitivity table's codes (each layer on fp32 inputs) differ
        actions = {row["action"] for row in report["layers"] if "bits" in row}
        assert actions == {"int3 gptq (mixed precision) (simulated)"}
        assert report["uniform"][0]["calib_mse"] != report["achieved"]["calib_mse"]


def _labeled(model: nn.Module, x: torch.Tensor, noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        y = model(x)
    return x, y + noise * torch.randn(y.shape, generator=torch.Generator().manual_seed(3))


def test_the_choice_follows_the_validation_loss() -> None:
    """Labels that the uniform 2-bit model fits exactly: on validation that candidate wins
    (loss 0), on calibration (output error vs fp32) the ILP's choice does."""
    model = TwoBranch().eval()
    rtn2 = compress("rtn_weight_sim", {"bits": 2}, model, None)[0]
    validation = _labeled(rtn2, HELD_OUT, noise=0.0)
    on = {s: compress("mixed_precision_sim", {"uniform_bits": 3, "select_on": s}, model, CALIB, validation=validation)
          for s in ("validation", "calibration")}
    report = on["validation"][2]
    assert report["achieved"]["chosen_by"] == "uniform int2" and report["selection"]["on"] == "validation"
    scores = {cand["name"]: cand["score"] for cand in report["selection"]["candidates"]}
    assert scores["uniform int2"] == 0.0 and min(scores.values()) == 0.0 and len(scores) >= 3
    assert any(name.startswith("ilp") for name in scores) and "uniform int3" in scores
    assert task_loss(on["validation"][0], *validation) == 0.0
    assert on["calibration"][2]["achieved"]["chosen_by"].startswith("ilp")


@pytest.mark.parametrize("quantizer", ["rtn", "gptq"])
@pytest.mark.parametrize("kind", ["lstm", "patchtst", "mamba", "s4d"])
def test_never_worse_on_validation_than_uniform_at_its_own_stored_bits(kind: str, quantizer: str) -> None:
    model, calib = registry_model(kind), windows(32)
    validation = _labeled(model, windows(64, 2))
    params = {"uniform_bits": 3, "quantizer": quantizer}
    mp = compress("mixed_precision_sim", params, model, calib, validation=validation)
    uniform = compress(f"{quantizer}_weight_sim", {"bits": 3}, model, calib)[0]
    assert task_loss(mp[0], *validation) <= task_loss(uniform, *validation)
    assert mp[2]["achieved"]["avg_bits"] <= mp[2]["achieved"]["budget_avg_bits"]


def test_validation_reaches_mixed_precision_inside_a_chain_and_no_other_pass() -> None:
    model = TwoBranch().eval()
    validation = _labeled(model, HELD_OUT)
    steps = [{"kind": "mixed_precision_sim", "uniform_bits": 3}]
    report = compress("chain", {"steps": steps}, model, CALIB, validation=validation)[2]
    assert report["steps"][0]["selection"]["on"] == "validation"
    compress("rtn_weight_sim", {"bits": 3}, model, None, validation=validation)  # not given to it: no error


def test_task_loss_is_mse_for_forecasts_and_cross_entropy_for_class_ids() -> None:
    model = nn.Linear(4, 6).eval()
    x = torch.randn(10, 3, 4)
    with torch.no_grad():
        out = model(x)  # (10, 3, 6): forecasts, or logits over 6 classes
    y = torch.randn(10, 3, 6)
    assert task_loss(model, x, y) == pytest.approx(float(((out - y) ** 2).mean()))
    ids = torch.randint(0, 6, (10, 3))
    expected = torch.nn.functional.cross_entropy(out.flatten(0, 1), ids.flatten())
    assert task_loss(model, x, ids) == pytest.approx(float(expected))


@pytest.mark.parametrize("quantizer", ["rtn", "gptq"])
@pytest.mark.parametrize("kind", sorted(TINY))
def test_round_trip_on_every_model(kind: str, quantizer: str) -> None:
    params = {"avg_bits": 5.0, "quantizer": quantizer, **CAL}
    make = functools.partial(registry_model, kind)
    _, _, report = round_trip("mixed_precision_sim", params, make, windows(3), windows(8, 1))
    assert ("skipped" in report) == (kind == "naive")
    if kind != "naive":
        assert report["achieved"]["avg_bits"] <= 5.0


def test_fp8_scales_round_trip_and_are_counted_in_the_budget() -> None:
    # rows of 8: fp16 scales cost 2 bits
    params = {"avg_bits": 5.6, "bits": [4, 8], "scale_dtype": "float8_e4m3", **CAL}
    _, stored, report = round_trip("mixed_precision_sim", params, lambda s: registry_model("lstm", s), windows(3), windows(8, 1))
    units = [k for k in stored if k.endswith(".scale_unit")]
    assert units and len(units) == report["quantized_layers"]
    assert all(stored[k.replace(".scale_unit", ".scales")].dtype == torch.float8_e4m3fn for k in units)
    assert report["achieved"]["avg_bits"] <= 5.6
    with pytest.raises(ConfigError, match="avg_bits: 5.6 .*is below"):
        compress("mixed_precision_sim", {**params, "scale_dtype": "float16"}, registry_model("lstm"), windows(8, 1))


def test_impossible_budget_and_missing_calibration_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match=r"avg_bits: 2.0 .*is below the smallest average .*: 2\.3864"):
        compress("mixed_precision_sim", {"avg_bits": 2.0, **CAL}, TwoBranch().eval(), CALIB)
    with pytest.raises(ValueError, match="needs calibration windows"):
        compress("mixed_precision_sim", {"avg_bits": 4.0}, TwoBranch().eval(), None)
    with pytest.raises(ValueError, match="select_on: validation needs the labeled val windows"):
        compress("mixed_precision_sim", {"avg_bits": 4.0}, TwoBranch().eval(), CALIB)


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
        ({"avg_bits": 3, "select_on": "test"}, "select_on"),
        ({"avg_bits": 3, "select_alpha": 0.0}, "select_alpha"),
        ({"avg_bits": 3, "ilp_budgets": []}, "ilp_budgets"),
        ({"avg_bits": 3, "ilp_budgets": [1.0, 1.1]}, "ilp_budgets"),
    ],
)
def test_config_errors_name_the_key(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"passes\.mp: .*{key}"):
        pass_config("mixed_precision_sim", params, "passes.mp")


def test_paired_p_value_blocks_overlapping_windows() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(960, generator=g)
    noise = 0.01 * torch.randn(960, generator=g)
    assert paired_p_value(base - 0.05 + noise, base, block=96) < 1e-6  # clearly lower in every block
    assert paired_p_value(base + 0.05 + noise, base, block=96) > 0.99  # clearly higher: no evidence
    assert paired_p_value(base, base, block=96) == 1.0  # no spread
    assert paired_p_value(base - 0.05, base, block=600) == 1.0  # one block: no test possible
    # a gain that one block carries alone is not significant once windows are blocked
    lucky = base.clone()
    lucky[:96] -= 0.5
    assert paired_p_value(lucky, base, block=1) < 0.05 and paired_p_value(lucky, base, block=96) > 0.05


def test_validation_leaves_the_uniform_incumbent_only_on_significant_evidence() -> None:
    mp = build_pass("mixed_precision_sim", {"uniform_bits": 3}, "pass")
    g = torch.Generator().manual_seed(0)
    base = torch.rand(480, generator=g) + 1.0
    y = torch.zeros(480, 48, 1)  # forecasts of horizon 48: blocks of 48 windows, 10 blocks

    def cand(name: str, losses: torch.Tensor) -> dict:
        return {"name": name, "score": float(losses.mean()), "losses": losses}

    slightly = cand("ilp", base - 0.001 + 0.05 * torch.randn(480, generator=g))
    uniform = cand("uniform int3", base)
    chosen, test = mp._select([slightly, uniform], "uniform int3", (None, y))
    assert slightly["score"] < uniform["score"] and chosen is uniform and test["p_value"] >= 0.05
    clearly = cand("ilp", base - 0.2 + 0.01 * torch.randn(480, generator=g))
    chosen, test = mp._select([clearly, uniform], "uniform int3", (None, y))
    assert chosen is clearly and test["p_value"] < 0.05 and test["incumbent"] == "uniform int3"
    # calibration: the lowest score, no test
    cal = build_pass("mixed_precision_sim", {"uniform_bits": 3, "select_on": "calibration"}, "pass")
    assert cal._select([slightly, uniform], "uniform int3", None)[0] is slightly
