"""pv_tune_sim: P steps on scales and unquantized parameters, V steps on the codes, best val state kept."""

from __future__ import annotations

import pytest
import torch
from compress_testkit import SHAPE, registry_model, round_trip, windows
from torch import nn

from seqcomp.compress import compress, pass_config, stored_size
from seqcomp.compress.quant.common import task_loss
from seqcomp.compress.quant.rtn import quantized_weight
from seqcomp.compress.quant.coded import SHAPE_SUFFIX
from seqcomp.compress.quant.size import CODES_SUFFIX, SCALES_SUFFIX
from seqcomp.compress.quant.uniform import code_max, grid_codes
from seqcomp.errors import ConfigError


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 8)).eval()


CALIB = torch.randn(256, 16, generator=torch.Generator().manual_seed(1))
VAL_X = torch.randn(128, 16, generator=torch.Generator().manual_seed(2))
with torch.no_grad():
    VAL = (VAL_X, _mlp()(VAL_X) + 0.01 * torch.randn(128, 8, generator=torch.Generator().manual_seed(3)))


def _params(bits: int = 2, base: str = "rtn_weight_sim", **extra: object) -> dict:
    return {"base": {"kind": base, "bits": bits}, "epochs": 4, "lr": 1e-3, "scale_lr": 1e-2, "v_fraction": 0.02, **extra}


@pytest.fixture(scope="module")
def tuned() -> tuple[nn.Module, dict[str, torch.Tensor], dict]:
    """pv_tune_sim on RTN 2-bit codes of the MLP (computed once: several tests read it)."""
    return compress("pv_tune_sim", _params(), _mlp(), CALIB, validation=VAL)


@pytest.fixture(scope="module")
def rtn() -> tuple[nn.Module, dict[str, torch.Tensor], dict]:
    return compress("rtn_weight_sim", {"bits": 2}, _mlp(), CALIB)


def _tiny_validation() -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randn(12, SHAPE.horizon, SHAPE.channels, generator=torch.Generator().manual_seed(7))
    return windows(12, 5), y


@pytest.mark.parametrize("kind", ["linear", "transformer", "s4d"])
def test_round_trip_in_the_base_pass_stored_form(kind: str) -> None:
    params = {"base": {"kind": "gptq_weight_sim", "bits": 3}, "epochs": 1, "batch_size": 8}
    make = lambda s: registry_model(kind, s)  # noqa: E731
    _, stored, report = round_trip("pv_tune_sim", params, make, windows(3), windows(16, 1), _tiny_validation())
    _, base_stored, _ = compress("gptq_weight_sim", {"bits": 3}, make(0), windows(16, 1))
    assert set(stored) == set(base_stored) and stored_size(stored) == stored_size(base_stored)
    assert report["pass"] == "pv_tune_sim" and report["simulated"] is True
    assert report["pv_tune"]["val_loss_best"] <= report["pv_tune"]["val_loss_base"]


def test_codes_stay_on_the_grid_and_v_steps_move_some(tuned: tuple, rtn: tuple) -> None:
    (_, stored, report), (_, base_stored, _) = tuned, rtn
    record = report["pv_tune"]
    assert any(r["v"]["accepted"] for r in record["rounds"])  # some V step lowered the training loss
    assert record["codes_changed"] > 0 and record["best_round"] > 0
    changed = 0
    for key in (k[: -len(CODES_SUFFIX)] for k in stored if k.endswith(CODES_SUFFIX)):
        shape = torch.Size(stored[key + SHAPE_SUFFIX].tolist())
        parts = {s: stored[key + s] for s in (CODES_SUFFIX, SCALES_SUFFIX)}
        codes, _, _ = grid_codes(quantized_weight(parts, shape), 2, None)
        base_codes, _, _ = grid_codes(quantized_weight({s: base_stored[key + s] for s in parts}, shape), 2, None)
        assert 0 <= codes.min() and codes.max() <= code_max(2, symmetric=True)  # ternary: never the unused level
        changed += int((codes != base_codes).sum())
    assert changed == record["codes_changed"]


def test_val_loss_better_than_the_base_pass(tuned: tuple, rtn: tuple) -> None:
    (model, _, report), (base, _, _) = tuned, rtn
    assert task_loss(model, *VAL) == pytest.approx(report["pv_tune"]["val_loss_best"], rel=1e-6)
    assert task_loss(model, *VAL) < task_loss(base, *VAL)


def test_diverging_training_keeps_the_base_pass_state_bit_for_bit(rtn: tuple) -> None:
    """Best-state keeping: when no round beats the base pass on val, its stored form is returned."""
    params = {**_params(), "lr": 10.0, "scale_lr": 10.0, "v_fraction": 0.0, "patience": 1}
    _, stored, report = compress("pv_tune_sim", params, _mlp(), CALIB, validation=VAL)
    base_stored = rtn[1]
    assert report["pv_tune"]["best_round"] == 0 and report["pv_tune"]["stopped_early"]
    assert set(stored) == set(base_stored) and all(torch.equal(stored[k], base_stored[k]) for k in stored)


def test_seeded_and_deterministic(tuned: tuple) -> None:
    first = tuned[1]
    again = compress("pv_tune_sim", _params(), _mlp(), CALIB, validation=VAL)[1]
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_fp8_scales_float16_kept_tensors_and_group_bits_round_trip_on_s4d() -> None:
    base = {"kind": "rtn_weight_sim", "bits": 3, "scale_dtype": "float8_e4m3", "keep_dtype": "float16",
            "groups": ["recurrent", "ssm", "linear", "other"], "group_bits": {"recurrent": 6}}
    params = {"base": base, "epochs": 1, "batch_size": 4}
    make = lambda s: registry_model("s4d", s)  # noqa: E731
    _, stored, _ = round_trip("pv_tune_sim", params, make, windows(3), windows(8, 1), _tiny_validation())
    assert stored["layers.0.log_dt.bits"] == 6


def test_needs_calibration_and_validation() -> None:
    with pytest.raises(ValueError, match="val windows"):
        compress("pv_tune_sim", _params(), _mlp(), CALIB)
    with pytest.raises(ValueError, match="calibration windows"):
        compress("pv_tune_sim", _params(), _mlp(), None, validation=VAL)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"base": None}, "base"),
        ({"base": {"kind": "qat_sim", "bits": 3}}, "base"),
        ({"base": {"kind": "vq_sim"}}, "base"),
        ({"base": {"kind": "gptq_weight_sim", "bits": 9}}, "base: bits"),
        ({"epochs": 0}, "epochs"),
        ({"lr": 0}, "lr"),
        ({"scale_lr": -1.0}, "scale_lr"),
        ({"v_fraction": 1.5}, "v_fraction"),
        ({"patience": 0}, "patience"),
        ({"max_windows": 0}, "max_windows"),
        ({"batch_size": 2.5}, "batch_size"),
    ],
)
def test_bad_config_names_the_key(params: dict, key: str) -> None:
    full = {"base": {"kind": "rtn_weight_sim", "bits": 3}, **params}
    with pytest.raises(ConfigError, match=rf"passes\.pv(: |\.){key}"):
        pass_config("pv_tune_sim", full, "passes.pv")
