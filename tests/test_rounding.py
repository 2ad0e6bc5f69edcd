"""Learned rounding (quant/rounding.py, the ``rounding`` option of rtn_weight_sim and gptq_weight_sim)."""

from __future__ import annotations

import pytest
import torch
from compress_testkit import round_trip
from torch import nn

from seqcomp.compress import compress, pass_config, stored_size
from seqcomp.compress.quant.bitpack import unpack_bits
from seqcomp.compress.quant.gptq import DEFAULT_SETTINGS, gptq_quantize, hessian
from seqcomp.compress.quant.rounding import RoundingSettings, learn_rounding
from seqcomp.compress.quant.rtn import parts_of
from seqcomp.compress.quant.uniform import dequantize, quantize
from seqcomp.errors import ConfigError

SETTINGS = RoundingSettings(steps=300, lr=3e-2, reg=1.0, beta_start=20.0, beta_end=2.0, warmup=0.2)


def _correlated_inputs(n: int = 1024, dim: int = 64, seed: int = 0) -> torch.Tensor:
    """Inputs with a decaying spectrum and cross-feature correlation, like activations (n, dim)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g) * torch.logspace(0, -2, dim)[:, None]
    return torch.randn(n, dim, generator=g) @ mix + 0.1 * torch.randn(n, dim, generator=g)


def _output_error(w: torch.Tensor, q: torch.Tensor, x: torch.Tensor) -> float:
    return float((x @ (w - q).T).norm() / (x @ w.T).norm())


@pytest.mark.parametrize(("bits", "group_size", "symmetric"), [(2, None, True), (3, 16, False), (4, None, True)])
def test_learned_rounding_lowers_the_layer_error_on_the_same_grid(bits: int, group_size: int | None, symmetric: bool) -> None:
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(1)) * 0.1
    x = _correlated_inputs()
    start = quantize(w, bits, group_size, torch.float16, symmetric=symmetric)
    learned, info = learn_rounding(w, x.double().T @ x.double(), start, bits, group_size, symmetric, SETTINGS)
    q0, q1 = dequantize(start, bits, group_size), dequantize(learned, bits, group_size)
    assert _output_error(w, q1, x) < 0.9 * _output_error(w, q0, x)
    assert info["rounding_kept"] == "learned" and info["codes_changed"] > 0
    assert info["layer_output_rel_err_after"] == pytest.approx(_output_error(w, q1, x), rel=1e-3)
    # the same grid: same scales and zero points, codes of the same bits, each weight rounded up or down
    assert torch.equal(learned.scales, start.scales) and learned.codes.shape == start.codes.shape
    assert (learned.zeros is None) == symmetric and (symmetric or torch.equal(learned.zeros, start.zeros))
    step = (q0 - w).abs().max() * 2  # nearest is within half a step, a learned code within one
    assert ((q1 - w).abs() <= step + 1e-6).all()


def test_learned_rounding_keeps_the_start_when_it_cannot_do_better() -> None:
    """Starting from GPTQ's codes (which may leave floor/ceil), the kept codes are never worse."""
    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(2)) * 0.1
    x = _correlated_inputs(dim=32)
    h = 2 * x.double().T @ x.double() / len(x)
    start = gptq_quantize(w, h, 3, None, torch.float16, DEFAULT_SETTINGS)
    kept, info = learn_rounding(w, h, start, 3, None, True, RoundingSettings(5, 3e-2, 1.0, 20.0, 2.0, 0.2))
    assert _output_error(w, dequantize(kept, 3, None), x) <= _output_error(w, dequantize(start, 3, None), x) + 1e-7
    assert info["layer_output_rel_err_after"] <= info["layer_output_rel_err_before"]
    if info["rounding_kept"] != "learned":
        assert torch.equal(kept.codes, start.codes) and info["codes_changed"] == 0


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 16)
        self.lstm = nn.LSTM(16, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, 4)
        return self.head(self.lstm(torch.relu(self.proj(x)))[0])


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net().eval()


CALIB = torch.randn(32, 12, 4, generator=torch.Generator().manual_seed(3))


def test_nearest_rounding_is_todays_codes() -> None:
    """rounding: nearest (the default) stores exactly the codes RTN and GPTQ stored before the option."""
    model = _net()
    params = {"bits": 3, "group_size": 8}
    _, stored, report = compress("rtn_weight_sim", {**params, "rounding": "nearest"}, model, CALIB)
    _, default, _ = compress("rtn_weight_sim", params, model, CALIB)
    assert stored.keys() == default.keys() and all(torch.equal(stored[k], default[k]) for k in stored)
    for name in ("proj.weight", "lstm.weight_ih_l0", "head.weight"):
        expected = parts_of(quantize(model.get_parameter(name), 3, 8, torch.float16))
        assert all(torch.equal(stored[name + suffix], part) for suffix, part in expected.items())
    assert report["rounding"] == "nearest" and all("rounding_kept" not in r for r in report["layers"])
    _, gptq_stored, _ = compress("gptq_weight_sim", params, model, CALIB)
    h = hessian(model, model.proj, CALIB)  # proj is the first layer: its inputs are the fp32 model's
    expected = parts_of(gptq_quantize(model.proj.weight, h, 3, 8, torch.float16, DEFAULT_SETTINGS))
    assert all(torch.equal(gptq_stored["proj.weight" + suffix], part) for suffix, part in expected.items())


@pytest.mark.parametrize("kind", ["rtn_weight_sim", "gptq_weight_sim"])
def test_learned_rounding_pass_round_trips_with_the_same_stored_size(kind: str) -> None:
    params = {"bits": 2, "rounding": "learned", "rounding_steps": 50}
    compressed, stored, report = round_trip(kind, params, _net, CALIB[:4], CALIB)
    _, nearest, _ = compress(kind, {"bits": 2}, _net(), CALIB)
    assert stored_size(stored) == stored_size(nearest)
    assert {k: v.shape for k, v in stored.items()} == {k: v.shape for k, v in nearest.items()}
    rows = {r["name"]: r for r in report["layers"]}
    for name in ("proj.weight", "head.weight"):
        assert rows[name]["rounding"] == "learned" and rows[name]["rounding_steps"] == 50
        assert rows[name]["layer_output_rel_err_after"] <= rows[name]["layer_output_rel_err_before"]
    assert rows["lstm.weight_ih_l0"]["rounding"].startswith("nearest (LSTM.weight_ih_l0 is not an nn.Linear")
    assert "rounding_kept" not in rows["proj.bias"]
    assert report["rounding"] == "learned" and report["rounding_steps"] == 50
    if kind == "rtn_weight_sim":  # learned on 2 bits moves some codes of a 16 x 16 layer
        assert sum(rows[n]["codes_changed"] for n in ("proj.weight", "head.weight")) > 0


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"rounding": "up"}, "rounding"),
        ({"rounding": "learned", "rounding_steps": 0}, "rounding_steps"),
        ({"rounding_steps": -3}, "rounding_steps"),
        ({"rounding_lr": 0.0}, "rounding_lr"),
        ({"rounding_reg": -1.0}, "rounding_reg"),
        ({"rounding_beta_start": 1.0, "rounding_beta_end": 2.0}, "rounding_beta_start"),
        ({"rounding_warmup": 1.0}, "rounding_warmup"),
    ],
)
@pytest.mark.parametrize("kind", ["rtn_weight_sim", "gptq_weight_sim"])
def test_bad_rounding_config_names_the_key(kind: str, params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        pass_config(kind, params, "pass")


def test_learned_rounding_without_calibration_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="rtn_weight_sim: rounding: learned needs calibration windows"):
        compress("rtn_weight_sim", {"rounding": "learned"}, _net(), None)


def test_codes_unpack_on_the_grid() -> None:
    """Learned codes are grid codes: within [0, 2 * qmax] on a 3-bit symmetric grid."""
    _, stored, _ = compress("rtn_weight_sim", {"bits": 3, "rounding": "learned", "rounding_steps": 30}, _net(), CALIB)
    codes = unpack_bits(stored["head.weight.codes"], 3, 64)
    assert int(codes.max()) <= 6
