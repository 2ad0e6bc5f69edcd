"""allocate_sim: formats from any coded pass, the program's choice, verification on val, the
stored form (round trip, exact bytes), config errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from compress_testkit import TwoBranch, registry_model, through_disk, windows
from torch import nn

from seqcomp.compress import build_pass, compress, load_compressed, pass_config, stored_size
from seqcomp.compress.passes.allocate_sim import TAG_SUFFIX, cheapest_within
from seqcomp.compress.quant.common import copy_model, window_losses
from seqcomp.compress.quant.groups import GRID_GROUPS
from seqcomp.errors import ConfigError
from seqcomp.models import SeriesShape, build_model



CALIB = torch.randn(128, 16, generator=torch.Generator().manual_seed(1))
X_VAL = torch.randn(256, 16, generator=torch.Generator().manual_seed(2))
GRIDS = {
    f"rtn{b}": {"kind": "rtn_weight_sim", "bits": b, "groups": ["recurrent", "ssm", "linear", "other"]}
    for b in (8, 4, 2)
}
SMALL = {**GRIDS, "vq16x2": {"kind": "vq_sim", "codebook_size": 16, "dim": 2}}


def labeled(model: nn.Module, x: torch.Tensor, noise: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): the model's own forecasts plus seeded noise, so the fp32 loss is near ``noise**2``."""
    with torch.no_grad():
        out = model(x)
    return x, out + noise * torch.randn(out.shape, generator=torch.Generator().manual_seed(3))


def loss(model: nn.Module, validation: tuple[torch.Tensor, torch.Tensor]) -> float:
    return float(window_losses(model, *validation).mean())


def allocate(model: nn.Module, budget: float, validation, candidates=SMALL, calib=None, **extra):
    params = {"budget": budget, "candidates": candidates, **extra}
    return (*compress("allocate_sim", params, model, calib, validation=validation), params)


@pytest.mark.parametrize("seed", range(4))
def test_program_finds_the_brute_force_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = [3, 2, 4, 3]
    owner = np.repeat(np.arange(4), counts)
    cost = rng.integers(1, 50, len(owner)).astype(float)
    sens = rng.random(len(owner)) * rng.random(len(owner))
    sens[np.r_[0, np.cumsum(counts)[:-1]]] = 0.0  # every owner's first option is free (fp32)
    proxy = float(sens.sum()) / 6
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    best = min(
        (sum(cost[starts[i] + j] for i, j in enumerate(combo)), combo)
        for combo in itertools.product(*(range(c) for c in counts))
        if sum(sens[starts[i] + j] for i, j in enumerate(combo)) <= proxy
    )
    chosen = cheapest_within(owner, cost, sens, proxy)
    assert sorted(owner[chosen]) == [0, 1, 2, 3] and sens[chosen].sum() <= proxy * (1 + 1e-9)
    assert cost[chosen].sum() == pytest.approx(best[0])


def test_budget_holds_on_validation_and_the_damped_branch_pays() -> None:
    model = TwoBranch().eval()
    validation = labeled(model, X_VAL)
    compressed, stored, report, _ = allocate(model, 0.01, validation)
    assert loss(compressed, validation) <= 1.01 * loss(model, validation)
    assert report["achieved"]["val_loss"] == pytest.approx(loss(compressed, validation), rel=1e-6)
    formats = {r["name"]: r["format"] for r in report["layers"]}
    assert formats["side.weight"] in ("rtn2", "vq16x2")  # damped 20x: the cheapest codes
    assert formats["inp.weight"] not in ("rtn2", "vq16x2", "fp32")  # sensitive: coded, but wider
    assert report["achieved"]["ratio"] > 4
    assert all(r["fits"] == (r["val_increase"] <= 0.01) for r in report["rounds"])
    # a looser budget never stores more
    looser = allocate(model, 0.1, validation)[2]
    assert looser["achieved"]["bytes"] <= report["achieved"]["bytes"]
    assert looser["achieved"]["val_increase"] <= 0.1


def test_zero_budget_never_raises_the_val_loss() -> None:
    model = TwoBranch().eval()
    validation = labeled(model, X_VAL, noise=0.01)  # fp32 is almost exact: most changes raise the loss
    compressed, _, report, _ = allocate(model, 0.0, validation)
    assert loss(compressed, validation) <= loss(model, validation)
    assert report["achieved"]["val_increase"] <= 0.0


@pytest.mark.parametrize("kind", ["lstm", "s4d"])
def test_round_trip_and_exact_bytes(kind: str) -> None:
    model = registry_model(kind)
    x = windows(96, 1)
    validation = labeled(model, x, noise=0.1)
    compressed, stored, report, params = allocate(model, 0.05, validation)
    rebuilt = load_compressed("allocate_sim", params, registry_model(kind, 1), through_disk(stored))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), compressed(x), rtol=0, atol=0)
    again = build_pass("allocate_sim", params).pack(rebuilt)
    assert again.keys() == stored.keys() and all(torch.equal(again[k], stored[k]) for k in stored)
    size = stored_size(stored)
    assert size["bytes"] == report["achieved"]["bytes"]
    rows = report["layers"] + report.get("buffers", [])
    coded = [r for r in rows if r["format"] not in ("fp32", "fp16")]
    assert coded and len([k for k in stored if k.endswith(TAG_SUFFIX)]) == len(coded)
    halves = [r["name"] for r in rows if r["format"] == "fp16"]
    assert all(stored[name].dtype == torch.float16 for name in halves)
    assert size["bytes"] == sum(r["bytes"] for r in rows) + sum(
        v.untyped_storage().nbytes() for k, v in model.state_dict().items() if not v.is_floating_point()
    )


def test_a_wrong_tag_or_wrong_parts_are_refused() -> None:
    model = TwoBranch().eval()
    _, stored, _, params = allocate(model, 0.05, labeled(model, X_VAL))
    tag = next(k for k in stored if k.endswith(TAG_SUFFIX))
    bad = {**stored, tag: torch.tensor(200, dtype=torch.uint8)}
    with pytest.raises(ValueError, match="names no candidate"):
        load_compressed("allocate_sim", params, TwoBranch(1), bad)
    fewer = {**params, "candidates": dict(list(SMALL.items())[:1])}
    if int(stored[tag]) >= 1:
        with pytest.raises(ValueError, match="names no candidate"):
            load_compressed("allocate_sim", fewer, TwoBranch(1), stored)


def test_a_candidate_storing_more_than_weight_parts_is_refused() -> None:
    model = TwoBranch().eval()
    with pytest.raises(ValueError, match="candidate 'w8a8' .int8_static_sim. stores"):
        allocate(model, 0.01, labeled(model, X_VAL), {"w8a8": {"kind": "int8_static_sim"}}, CALIB)


def test_needs_validation_windows() -> None:
    with pytest.raises(ValueError, match="val windows"):
        compress("allocate_sim", {"candidates": GRIDS}, TwoBranch().eval(), CALIB)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"budget": -0.01}, "budget"),
        ({"target_ratio": 1.0}, "target_ratio"),
        ({"budget": "1%"}, "budget"),
        ({"candidates": {}}, "candidates"),
        ({"candidates": {"fp16": {"kind": "rtn_weight_sim"}}}, "candidates.fp16"),
        ({"candidates": {"a": {"bits": 4}}}, "candidates.a"),
        ({"candidates": {"a": {"kind": "nope"}}}, "candidates.a"),
        ({"candidates": {"a": {"kind": "rtn_weight_sim", "bits": 9}}}, "candidates.a.bits"),
        ({"candidates": {"a": {"kind": "int8_dynamic"}}}, "candidates.a"),
        ({"candidates": {"a": {"kind": "allocate_sim"}}}, "candidates.a"),
        ({"sensitivity": "hessian"}, "sensitivity"),
        ({"rounds": 0}, "rounds"),
    ],
)
def test_config_errors_name_the_key(params: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        pass_config("allocate_sim", params, "allocate_sim")
    assert key in str(caught.value).replace(": ", ".")


def test_a_non_coded_pass_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="lowrank is not a coded pass"):
        pass_config("allocate_sim", {"candidates": {"lr": {"kind": "lowrank", "energy": 0.9}}}, "p")


def test_default_candidates_are_valid_and_cover_every_group() -> None:
    config = pass_config("allocate_sim", {}, "p")
    assert config.candidates is None and config.budget == 0.01
    allocator = build_pass("allocate_sim", {})
    groups = {g for p in allocator.passes for g in p.config.groups}
    assert groups == set(GRID_GROUPS)  # every group, an MoE's experts, router and shared expert too


def test_a_model_without_parameters_is_stored_as_is() -> None:
    """The naive forecaster has no tensor to choose a format for: nothing to allocate, no error."""
    model = build_model("naive", {}, SeriesShape(24, 8, 3))
    x = torch.randn(16, 24, 3)
    out, report = build_pass("allocate_sim", {}).apply(copy_model(model), x, (x, torch.randn(16, 8, 3)))
    assert torch.equal(out(x), model(x)) and report["layers"] == []


@pytest.mark.parametrize("seed", range(3))
def test_size_program_finds_the_brute_force_optimum(seed: int) -> None:
    from seqcomp.compress.passes.allocate_sim import most_accurate_within

    rng = np.random.default_rng(seed)
    owner = np.repeat(np.arange(3), [3, 2, 4])
    cost, sens = rng.integers(1, 50, len(owner)).astype(float), rng.random(len(owner))
    limit = 60.0
    feasible = [c for c in itertools.product(*[np.flatnonzero(owner == o) for o in range(3)])
                if cost[list(c)].sum() <= limit]
    best = min(feasible, key=lambda c: sens[list(c)].sum())
    assert sens[most_accurate_within(owner, cost, sens, limit)].sum() == pytest.approx(sens[list(best)].sum())
    assert most_accurate_within(owner, cost, sens, 0.5) is None  # below the cheapest options


def test_a_target_ratio_is_reached_as_accurately_as_the_program_can() -> None:
    model = registry_model("lstm")
    x = windows(96, 1)
    validation = labeled(model, x, noise=0.1)
    compressed, stored, report, params = allocate(model, 0.01, validation, target_ratio=6.0)
    achieved = report["achieved"]
    assert achieved["ratio"] >= 6.0 and stored_size(stored)["bytes"] == achieved["bytes"]
    assert report["target_ratio"] == 6.0 and report["budget"] is None and len(report["rounds"]) == 1
    rebuilt = load_compressed("allocate_sim", params, registry_model("lstm", 1), through_disk(stored))
    loose = allocate(model, 0.01, validation, target_ratio=3.0)[2]["achieved"]  # more bytes: no less accurate
    assert loose["predicted"] <= achieved["predicted"] and loose["ratio"] >= 3.0
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), compressed(x), rtol=0, atol=0)
