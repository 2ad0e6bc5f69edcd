"""Static W8A8 fake-quant (passes/int8_static_sim.py + quant/activations.py): ranges, hooks, stored form."""

from __future__ import annotations

import pytest
import torch
from compress_testkit import rel_err, through_disk
from torch import nn

from seqcomp.compress import compress, load_compressed, pass_config, stored_size
from seqcomp.errors import ConfigError
from seqcomp.models import SeriesShape, build_model


SHAPE = SeriesShape(lookback=16, horizon=4, channels=3)
MODELS = {
    "s4d": {"d_model": 8, "d_state": 4, "n_layers": 1},
    "lstm": {"hidden": 8},
    "transformer": {"d_model": 8, "n_heads": 2, "d_ff": 16, "n_layers": 1},
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_w8a8_is_close_and_round_trips_bit_for_bit(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(kind, {**MODELS[kind], "revin": True}, SHAPE).eval()
    calib = torch.randn(48, 16, 3)
    x = calib[:8]  # inside the calibrated ranges: the error is rounding, not clipping
    compressed, stored, report = compress("int8_static_sim", {}, model, calib)
    assert report["simulated"] is True and report["quantized_layers"] > 0
    assert any(key.endswith(".act_in0.scales") for key in stored)
    torch.manual_seed(1)
    skeleton = build_model(kind, {**MODELS[kind], "revin": True}, SHAPE)
    rebuilt = load_compressed("int8_static_sim", {}, skeleton, through_disk(stored))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), compressed(x))
        assert rel_err(compressed(x), model(x)) < 0.02


def test_inputs_are_on_a_256_level_grid_and_bytes_by_hand() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))
    compressed, stored, report = compress("int8_static_sim", {}, model, torch.randn(100, 64))
    seen = []
    compressed[2].register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        compressed(torch.randn(50, 64) * 3)  # wider than the calibration range: clipped
    scale, zero = stored["2.act_in0.scales"], stored["2.act_in0.zeros"]
    codes = seen[0] / scale + zero.float()
    assert torch.allclose(codes, codes.round(), atol=1e-3) and codes.min() >= 0 and codes.max() <= 255
    assert zero == 0  # ReLU output: the range starts at 0
    size = stored_size(stored)
    assert size["weights_bytes"] == 64 * 32 + 32 * 2  # int8 codes
    assert size["scales_bytes"] == (32 + 2) * 2 + 2 * (4 + 1)  # fp16 per-channel + fp32 scale, uint8 zero per input
    assert set(report["activation_ranges"]) == {"0", "2"}


def test_percentile_ranges_are_inside_minmax_ones() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8))
    calib = torch.randn(256, 8)
    calib[0, 0] = 40.0  # one outlier
    ranges = {
        c: compress("int8_static_sim", {"act_calibration": c, "act_percentile": 99.0}, model, calib)[2]["activation_ranges"]["0"]["0"]
        for c in ("minmax", "percentile")
    }
    assert ranges["minmax"][1] == 40.0
    assert ranges["minmax"][0] < ranges["percentile"][0] < 0 < ranges["percentile"][1] < 5


def test_activation_passes_need_calibration() -> None:
    with pytest.raises(ValueError, match="calibration"):
        compress("int8_static_sim", {}, nn.Sequential(nn.Linear(2, 2)), None)


@pytest.mark.parametrize(
    ("params", "key"),
    [({"bits": 4}, "bits"), ({"act_calibration": "mse"}, "act_calibration"), ({"act_percentile": 10}, "act_percentile"),
     ({"calibration": "max"}, "calibration"), ({"groups": ["recurrent", "norms"]}, "groups")],
)
def test_config_errors_name_the_key(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        pass_config("int8_static_sim", params, "compress.passes.w8a8")
