"""Uniform grids (uniform.py) through rtn_weight_sim: calibrations, asymmetric grids, exact bytes, errors."""

from __future__ import annotations

import pytest
import torch
from compress_testkit import rel_err, through_disk
from torch import nn

from seqcomp.compress import build_pass, compress, copy_model, load_compressed, pass_config, stored_size
from seqcomp.compress.quant.uniform import dequantize, quantize
from seqcomp.errors import ConfigError


def _heavy_tailed(rows: int = 64, cols: int = 256) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.distributions.Laplace(0.0, 0.02).sample((rows, cols))


def _weight_error(weight: torch.Tensor, **params) -> float:
    layer = nn.Sequential(nn.Linear(weight.shape[1], weight.shape[0], bias=False))
    with torch.no_grad():
        layer[0].weight.copy_(weight)
    compressed = compress("rtn_weight_sim", params, layer, None)[0]
    return rel_err(compressed[0].weight.detach(), weight)


@pytest.mark.parametrize("symmetric", [True, False])
def test_percentile_and_mse_beat_minmax_on_heavy_tails_at_3_bits(symmetric: bool) -> None:
    w = _heavy_tailed()
    minmax = _weight_error(w, bits=3, symmetric=symmetric)
    percentile = _weight_error(w, bits=3, symmetric=symmetric, calibration="percentile", percentile=99.0)
    mse = _weight_error(w, bits=3, symmetric=symmetric, calibration="mse")
    assert percentile < 0.9 * minmax
    assert mse < 0.9 * minmax
    assert mse <= percentile * 1.05  # the search includes ratios near the percentile clip


def test_mse_never_worse_than_minmax_per_group() -> None:
    w = torch.randn(16, 48)  # light tails: clipping helps little, the search must not hurt
    for bits in (2, 4, 8):
        assert _weight_error(w, bits=bits, calibration="mse") <= _weight_error(w, bits=bits) + 1e-7


def test_asymmetric_grid_fits_a_shifted_weight_better() -> None:
    torch.manual_seed(0)
    w = torch.rand(32, 64) + 0.5  # all positive: a symmetric grid wastes half its levels
    assert _weight_error(w, bits=4, symmetric=False) < 0.6 * _weight_error(w, bits=4)


def test_quantize_keeps_its_positional_signature_and_zero_is_exact() -> None:
    w = torch.tensor([[0.875, -0.5, 0.0, 0.3], [0.0, 0.0, 0.0, 0.0]])  # 0.875 / 7 = 0.125 is exact
    for symmetric in (True, False):
        qw = quantize(w, 4, None, torch.float16, symmetric=symmetric)
        back = dequantize(qw, 4, None)
        assert back[1].eq(0).all() and back[0, 2] == 0  # zero and all-zero rows exact
        assert (back[0] - w[0]).abs().max() <= qw.scales[0, 0].float() / 2 + 1e-7
        assert (qw.zeros is None) == symmetric
    assert dequantize(quantize(w, 4, None, torch.float16), 4, None)[0, :2].tolist() == [0.875, -0.5]


def test_asymmetric_group_bytes_by_hand() -> None:
    model = nn.Sequential(nn.Linear(40, 10, bias=False))  # groups of 16: 16, 16, 8 per row
    params = {"bits": 3, "group_size": 16, "symmetric": False}
    _, stored, _ = compress("rtn_weight_sim", params, model, None)
    size = stored_size(stored)
    assert stored["0.weight.scales"].shape == (10, 3) and stored["0.weight.scales"].dtype == torch.float16
    assert size["weights_bytes"] == -(-400 * 3 // 8)  # 150: bit-packed 3-bit codes
    assert size["scales_bytes"] == 10 * 3 * 2 + -(-30 * 3 // 8)  # fp16 scales + 3-bit zero points
    assert size["bytes"] == 150 + 60 + 12 + 2 * 8  # + the int64 shape


def test_fp8_scales_bytes_by_hand() -> None:
    model = nn.Sequential(nn.Linear(40, 10))  # groups of 16: 16, 16, 8 per row
    params = {"bits": 3, "group_size": 16, "scale_dtype": "float8_e4m3", "keep_dtype": "float16"}
    _, stored, _ = compress("rtn_weight_sim", params, model, None)
    size = stored_size(stored)
    assert stored["0.weight.scales"].shape == (10, 3) and stored["0.weight.scales"].dtype == torch.float8_e4m3fn
    assert stored["0.weight.scale_unit"].shape == () and stored["0.weight.scale_unit"].dtype == torch.float32
    assert size["weights_bytes"] == 150  # bit-packed 3-bit codes
    assert size["scales_bytes"] == 10 * 3 * 1 + 4  # one byte per fp8 scale + the fp32 unit
    assert size["fp32_bytes"] == 10 * 2  # the bias, in fp16
    assert size["bytes"] == 150 + 34 + 20 + 2 * 8  # + the int64 shape


def test_fp8_scales_cost_little_error_and_small_rows_do_not_underflow() -> None:
    torch.manual_seed(0)
    w = torch.randn(64, 96) * torch.logspace(0, -3, 64)[:, None]  # rows 1000x apart in magnitude
    fp16, fp8 = (_weight_error(w, bits=4, scale_dtype=dtype) for dtype in ("float16", "float8_e4m3"))
    assert fp8 < 1.1 * fp16
    layer = nn.Sequential(nn.Linear(96, 64, bias=False))
    with torch.no_grad():
        layer[0].weight.copy_(w)
    back = compress("rtn_weight_sim", {"scale_dtype": "float8_e4m3"}, layer, None)[0][0].weight.detach()
    assert rel_err(back[-1], w[-1]) < 0.2  # the smallest row keeps its own (non-zero) scale


def _bn_net(complex_param: bool = False) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    net[1].running_mean.normal_()  # a float buffer; num_batches_tracked is an int64 one
    if complex_param:
        net[1].register_parameter("phase", nn.Parameter(torch.randn(8, dtype=torch.cfloat)))
    return net.eval()


def test_keep_float16_halves_the_kept_bytes_and_evaluates_what_it_stores() -> None:
    model = _bn_net(complex_param=True)
    sizes, stores = {}, {}
    for keep in ("float32", "float16"):
        compressed, stored, report = compress("rtn_weight_sim", {"keep_dtype": keep}, model, None)
        sizes[keep], stores[keep] = stored_size(stored), stored
        assert report["keep_dtype"] == keep
    kept = [k for k in model.state_dict() if not k.endswith(".weight") or k.startswith("1.")]
    assert sizes["float16"]["fp32_bytes"] * 2 == sizes["float32"]["fp32_bytes"]
    assert sizes["float16"]["weights_bytes"] == sizes["float32"]["weights_bytes"]
    stored = through_disk(stores["float16"])
    for key in kept:
        original = model.state_dict()[key]
        if original.is_floating_point():
            assert stored[key].dtype == torch.float16 and torch.equal(stored[key], original.half())
            assert torch.equal(compressed.state_dict()[key], original.half().float())  # evaluated = stored
        elif original.is_complex():
            assert stored[key].dtype == torch.complex32
        else:
            assert torch.equal(stored[key], original)  # the int64 step counter is left alone
    rebuilt = load_compressed("rtn_weight_sim", {"keep_dtype": "float16"}, _bn_net(complex_param=True), stored)
    assert all(torch.equal(v, compressed.state_dict()[k]) for k, v in rebuilt.state_dict().items())
    rows = {row["name"]: row for row in report["layers"]}
    assert rows["0.bias"]["stored_dtype"] == "float16" and "stored_dtype" not in rows["0.weight"]


def test_pack_refuses_a_kept_tensor_that_float16_would_change() -> None:
    rtn = build_pass("rtn_weight_sim", {"keep_dtype": "float16"})
    model = rtn.apply(copy_model(_bn_net()), None)[0]
    with torch.no_grad():
        model[0].bias[0] = 1 + 2**-20
    with pytest.raises(ValueError, match="0.bias is not exactly"):
        rtn.pack(model)


@pytest.mark.parametrize("scale_dtype", ["float16", "float8_e4m3"])
@pytest.mark.parametrize("calibration", ["minmax", "percentile", "mse"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_round_trip_is_bit_exact(calibration: str, symmetric: bool, scale_dtype: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 24), nn.ReLU(), nn.LSTM(24, 8, batch_first=True))
    params = {"bits": 3, "group_size": 5, "symmetric": symmetric, "calibration": calibration, "scale_dtype": scale_dtype}
    compressed, stored, _ = compress("rtn_weight_sim", params, model, None)
    torch.manual_seed(1)
    skeleton = nn.Sequential(nn.Linear(8, 24), nn.ReLU(), nn.LSTM(24, 8, batch_first=True))
    rebuilt = load_compressed("rtn_weight_sim", params, skeleton, through_disk(stored))
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        assert torch.equal(rebuilt(x)[0], compressed(x)[0])


@pytest.mark.parametrize("grid", [{"symmetric": False}, {"scale_dtype": "float8_e4m3"}])
def test_unpack_with_the_other_grid_refuses(grid: dict) -> None:
    model = nn.Sequential(nn.Linear(8, 4))
    rtn = build_pass("rtn_weight_sim", grid)
    stored = rtn.pack(rtn.apply(copy_model(model), None)[0])
    with pytest.raises(ValueError, match="wrong pass config"):
        build_pass("rtn_weight_sim", {}).unpack(nn.Sequential(nn.Linear(8, 4)), stored)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"bits": 1}, "bits"),
        ({"group_size": 0}, "group_size"),
        ({"calibration": "kl"}, "calibration"),
        ({"percentile": 30}, "percentile"),
        ({"symmetric": "yes"}, "symmetric"),
        ({"groups": ["attention"]}, "groups"),
        ({"groups": []}, "groups"),
        ({"groups": "linear"}, "groups"),
        ({"scale_dtype": "float8"}, "scale_dtype"),
        ({"keep_dtype": "bfloat16"}, "keep_dtype"),
    ],
)
def test_config_errors_name_the_key(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        pass_config("rtn_weight_sim", params, "compress.passes.w4")
