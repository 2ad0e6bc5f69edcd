"""vptq_sim: column vectors, Hessian-weighted codebooks, error feedback, exact sizes and errors."""

from __future__ import annotations

import pytest
import torch
from compress_testkit import TINY, output_mse, registry_model, round_trip, windows
from torch import nn

from seqcomp.compress import build_pass, compress, pass_config, stored_size
from seqcomp.errors import ConfigError

EVERY_PART = {"codebook_size": 8, "dim": 2, "residual_codebook_size": 4, "outlier_fraction": 0.1}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_round_trip_on_every_model(kind: str) -> None:
    _, _, report = round_trip("vptq_sim", EVERY_PART, lambda s: registry_model(kind, s), windows(3), windows(32, 1))
    assert report["simulated"] is True
    coded = [row for row in report["layers"] if row["action"] != "kept fp32"]
    assert all(row["bits_per_weight"] < 32 for row in coded)
    assert kind == "naive" or any("hessian-weighted k-means, error feedback" in row["action"] for row in coded)


def _layer(out: int = 128, inp: int = 64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(inp, out, bias=False))


def test_stored_bytes_and_bits_per_weight() -> None:
    params = {"codebook_size": 16, "dim": 4, "residual_codebook_size": 4, "outlier_fraction": 1 / 16}
    _, stored, report = compress("vptq_sim", params, _layer(), None)
    assert stored["0.weight.codebook"].shape == (16, 4) and stored["0.weight.codebook"].dtype == torch.float16
    assert stored["0.weight.outliers"].shape == (128, 4) and stored["0.weight.outliers"].dtype == torch.float16
    size = stored_size(stored)
    vectors = 128 // 4 * (64 - 4)  # 4 of 64 columns kept apart
    assert size["weights_bytes"] == vectors * 4 // 8 + vectors * 2 // 8  # 4-bit main + 2-bit residual indices
    assert size["scales_bytes"] == 16 * 4 * 2 + 4 * 4 * 2  # fp16 codebooks
    assert size["fp32_bytes"] == 128 * 4 * 2  # fp16 outlier columns
    assert size["meta_bytes"] == 4 * 4 + 16  # int32 column indices + int64 shape
    bits = 8 * (size["bytes"] - 16) / (128 * 64)
    row = report["layers"][0]
    assert row["bits_per_weight"] == pytest.approx(bits, abs=1e-4) and report["bits_per_weight"] == row["bits_per_weight"]
    assert row["codebook_bits_per_weight"] == pytest.approx(8 * size["scales_bytes"] / (128 * 64), abs=1e-4)
    assert report["nominal_bits_per_weight"] == 1.5 and row["outlier_columns"] == 4


def test_decode_is_self_contained_per_weight() -> None:
    model = registry_model("tsmixer")
    compressed, stored, _ = compress("vptq_sim", EVERY_PART, model, windows(64, 1))
    decoder = build_pass("vptq_sim", EVERY_PART)
    key = "blocks.0.time.0.weight"
    parts = {s: stored[key + s] for s in (".codes", ".codebook", ".residual.codes", ".residual.codebook",
                                          ".outliers", ".outlier_columns")}
    shape = torch.Size(stored[key + ".shape"].tolist())
    assert torch.equal(decoder.decode(parts, shape), compressed.get_parameter(key))
    with pytest.raises(ValueError, match="residual"):
        build_pass("vptq_sim", {**EVERY_PART, "residual_codebook_size": 0}).decode(parts, shape)


def test_outliers_are_kept_and_residual_helps() -> None:
    layer = _layer()
    with torch.no_grad():
        layer[0].weight[:, 5] *= 50  # one column far larger than the rest
    compressed = compress("vptq_sim", {"codebook_size": 16, "outlier_fraction": 0.02}, layer, None)[0]
    assert torch.equal(compressed[0].weight[:, 5], layer[0].weight[:, 5].half().float())  # no feedback without H
    errors = [
        float((compress("vptq_sim", p, _layer(), None)[0][0].weight - _layer()[0].weight).detach().norm())
        for p in ({"codebook_size": 16}, {"codebook_size": 16, "residual_codebook_size": 16})
    ]
    assert errors[1] < 0.8 * errors[0]


def _correlated(n: int, seed: int) -> torch.Tensor:
    """(n, 4, 32) inputs with very unequal, correlated input columns: where the Hessian matters."""
    mixing = torch.randn(32, 32, generator=torch.Generator().manual_seed(0)) * torch.logspace(1, -2, 32)[:, None]
    return torch.randn(n, 4, 32, generator=torch.Generator().manual_seed(seed)) @ mixing


def test_hessian_and_error_feedback_lower_the_output_error_at_the_same_size() -> None:
    layer = _layer(out=64, inp=32)
    calib, held_out = _correlated(256, 1), _correlated(256, 2)
    params = {"codebook_size": 16, "dim": 4}
    vptq = compress("vptq_sim", params, layer, calib)
    plain = compress("vptq_sim", params, layer, None)  # same column vectors, plain k-means, no feedback
    vq = compress("vq_sim", params, layer, None)  # rows' sub-vectors, plain k-means
    assert stored_size(vptq[1]) == stored_size(plain[1]) == stored_size(vq[1])
    assert "hessian-weighted" in vptq[2]["layers"][0]["action"] and "no calibration" in plain[2]["layers"][0]["action"]
    no_refit = compress("vptq_sim", {**params, "refit": False}, layer, calib)  # k-means centroids kept
    runs = (("vptq", vptq), ("no_refit", no_refit), ("plain", plain), ("vq", vq))
    mse = {name: output_mse(out[0], layer, held_out) for name, out in runs}
    assert mse["vptq"] < mse["no_refit"] < 0.7 * min(mse["plain"], mse["vq"]), mse


def test_padding_small_layers_keep_dtype_and_other_weights() -> None:
    model = nn.Sequential(nn.Linear(64, 7), nn.Linear(7, 4))
    params = {"codebook_size": 16, "dim": 2, "keep_dtype": "float16"}
    compressed, stored, report = round_trip("vptq_sim", params, lambda s: _mlp(s), torch.randn(3, 5, 64), torch.randn(8, 10, 64))
    rows = {row["name"]: row for row in report["layers"]}
    assert rows["0.weight"]["padded_rows"] == 1 and stored["0.weight.codes"].numel() == 4 * 64 * 4 // 8
    assert rows["1.weight"]["reason"] == "14 vectors of 2, not more than the 16 entries of a codebook; kept"
    assert rows["1.weight"]["stored_dtype"] == "float16" and stored["1.weight"].dtype == torch.float16
    assert torch.equal(compressed[1].weight, _mlp(0)[1].weight.half().float())
    lstm = registry_model("lstm")
    report = compress("vptq_sim", {"codebook_size": 8, "dim": 2}, lstm, windows(64))[2]
    actions = {row["name"]: row["action"] for row in report["layers"]}
    assert "LSTM.weight_hh_l0 is not an nn.Linear weight" in actions["lstm.weight_hh_l0"]


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 7), nn.Linear(7, 4)).eval()


def test_data_dependent_errors_name_pass_layer_and_numbers() -> None:
    model = _mlp(0)
    with pytest.raises(ValueError, match=r"vptq_sim: 0\.weight \(7, 64\): dim=2 does not divide its 7 rows"):
        compress("vptq_sim", {"codebook_size": 16, "dim": 2, "pad": False}, model, None)
    with pytest.raises(ValueError, match=r"vptq_sim: 1\.weight \(4, 7\): 14 vectors of 2, not more than the 16"):
        compress("vptq_sim", {"codebook_size": 16, "dim": 2, "small_layers": "error"}, model, None)
    too_small = r"vptq_sim: 0\.weight: calibration set too small .* 40 input vectors from 2 windows, fewer than "
    with pytest.raises(ValueError, match=too_small + r"min_calibration_ratio=1\.0 x its 64 input columns"):
        compress("vptq_sim", {"codebook_size": 16, "dim": 2, "min_calibration_ratio": 1.0}, model, torch.randn(2, 20, 64))
    report = compress("vptq_sim", {"codebook_size": 16, "dim": 2}, model, torch.randn(2, 20, 64))[2]  # 40 >= 0.05 x 64
    assert report["layers"][0]["calibration_vectors"] == 40


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"dim": 0}, "dim"),
        ({"codebook_size": 512}, "codebook_size"),
        ({"residual_codebook_size": 1}, "residual_codebook_size"),
        ({"outlier_fraction": 0.5}, "outlier_fraction"),
        ({"iterations": 0}, "iterations"),
        ({"percdamp": 0}, "percdamp"),
        ({"pad": 1}, "pad"),
        ({"refit": "yes"}, "refit"),
        ({"min_calibration_ratio": -1}, "min_calibration_ratio"),
        ({"small_layers": "drop"}, "small_layers"),
        ({"keep_dtype": "bfloat16"}, "keep_dtype"),
        ({"groups": ["other"]}, "groups"),
        ({"k": 16}, "k"),
    ],
)
def test_config_errors_name_the_key(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"passes\.v(: .*|\.){key}"):
        pass_config("vptq_sim", params, "passes.v")
