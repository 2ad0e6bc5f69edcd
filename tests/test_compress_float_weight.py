"""Float-format weights (passes/float_weight_sim.py): FP8 via torch casts, FP4 e2m1 grid, sizes, FP8 activations."""

from __future__ import annotations

import pytest
import torch
from compress_testkit import rel_err, through_disk
from torch import nn

from seqcomp.compress import compress, load_compressed, pass_config, stored_size
from seqcomp.compress.passes.float_weight_sim import e2m1_codes, e2m1_values
from seqcomp.errors import ConfigError


def test_e2m1_rounds_to_nearest_ties_to_even_and_saturates() -> None:
    x = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, -1.5, -0.2, 0.3, 100.0])
    expected = [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, -1.5, 0.0, 0.5, 6.0]
    assert e2m1_values(e2m1_codes(x)).tolist() == expected
    codes = torch.arange(16, dtype=torch.uint8)
    values = e2m1_values(codes)
    assert values.tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6]
    assert torch.equal(e2m1_codes(values)[1:8], codes[1:8]) and torch.equal(e2m1_codes(values)[9:], codes[9:])


def _layer(out: int = 32, inp: int = 64) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(inp, out, bias=False))


@pytest.mark.parametrize(("fmt", "code_bytes"), [("e4m3", 2048), ("e5m2", 2048), ("e2m1", 1024)])
def test_bytes_by_hand_and_round_trip(fmt: str, code_bytes: int) -> None:
    model = _layer()
    compressed, stored, report = compress("float_weight_sim", {"format": fmt}, model, None)
    size = stored_size(stored)
    assert size["weights_bytes"] == code_bytes and size["scales_bytes"] == 32 * 2
    assert size["bytes"] == code_bytes + 64 + 2 * 8  # + the shape
    assert report["layers"][0]["action"] == f"fp{8 if fmt != 'e2m1' else 4} {fmt} per-channel (simulated)"
    rebuilt = load_compressed("float_weight_sim", {"format": fmt}, _layer(), through_disk(stored))
    assert torch.equal(rebuilt[0].weight, compressed[0].weight)


def test_fp8_uses_torchs_casts_and_errors_rank_by_mantissa_bits() -> None:
    model = _layer()
    w = model[0].weight.detach()
    decoded = {fmt: compress("float_weight_sim", {"format": fmt, "scale_dtype": "float32"}, model, None)[0][0].weight.detach() for fmt in ("e4m3", "e5m2", "e2m1")}
    scale = w.abs().amax(dim=1, keepdim=True) / 448.0
    assert torch.equal(decoded["e4m3"], (w / scale).to(torch.float8_e4m3fn).float() * scale)
    errors = {fmt: rel_err(d, w) for fmt, d in decoded.items()}
    assert errors["e4m3"] < errors["e5m2"] < errors["e2m1"] < 0.2
    assert errors["e4m3"] < 0.04


def test_fp8_activations_round_trip_and_quantize_inputs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    calib = torch.randn(64, 8)
    params = {"format": "e4m3", "activations": True}
    compressed, stored, report = compress("float_weight_sim", params, model, calib)
    assert set(report["activation_ranges"]) == {"0", "2"} and "0.act_in0.scales" in stored
    weight_only = compress("float_weight_sim", {"format": "e4m3"}, model, calib)[0]
    torch.manual_seed(1)
    skeleton = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    rebuilt = load_compressed("float_weight_sim", params, skeleton, through_disk(stored))
    x = calib[:10]
    with torch.no_grad():
        assert torch.equal(rebuilt(x), compressed(x))
        both, weights = rel_err(compressed(x), model(x)), rel_err(weight_only(x), model(x))
    assert weights < both < 0.1  # 3 mantissa bits: a few % per rounding, on weights and inputs


@pytest.mark.parametrize(
    ("params", "key"),
    [({"format": "e3m4"}, "format"), ({"format": "e2m1", "activations": True}, "activations"),
     ({"group_size": 0}, "group_size"), ({"act_calibration": "mse"}, "act_calibration"), ({"bits": 8}, "bits"),
     ({"groups": ["ssm", "bias"]}, "groups")],
)
def test_config_errors_name_the_key(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        pass_config("float_weight_sim", params, "compress.passes.fp8")
