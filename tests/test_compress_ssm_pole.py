"""ssm_pole_sim: SSM recurrent parameters on per-pole grids shared across channels."""

from __future__ import annotations

import pytest
import torch
from compress_testkit import TINY, registry_model, round_trip, windows
from torch import nn

from seqcomp.compress import compress, load_compressed, pass_config, stored_size
from seqcomp.compress.quant.size import CENTERS_SUFFIX, CODES_SUFFIX, SCALES_SUFFIX
from seqcomp.errors import ConfigError
from seqcomp.models import SeriesShape, build_model

SSM_MODELS = ("s4d", "s4", "mamba", "smamba", "spacetime")


@pytest.mark.parametrize("kind", sorted(TINY))
def test_round_trip_on_every_model(kind: str) -> None:
    make = lambda seed: registry_model(kind, seed)  # noqa: E731
    _, stored, report = round_trip("ssm_pole_sim", {"bits": 3}, make, windows(3), windows(4, 1))
    coded = [row for row in report["layers"] if row["action"] != "kept fp32"]
    assert {row["group"] for row in coded} <= {"recurrent"}
    if kind in SSM_MODELS:
        assert coded and "skipped" not in report
        kernel_layers = {"s4d": ["layers.0"], "s4": ["layers.0"], "spacetime": ["layers.0"]}.get(kind)
        assert list(report.get("kernel_rel_err", {})) == (kernel_layers or [])  # Mamba's scan has no kernel
    else:  # no recurrent parameter: an explicit skip, everything stored as is
        assert not coded and "no parameter of groups ['recurrent']" in report["skipped"]
        assert not any(key.endswith(CODES_SUFFIX) for key in stored)


def _drifted(kind: str, d_model: int = 16, d_state: int = 16) -> nn.Module:
    """A small S4 / S4D whose channels moved apart from their common initialisation a little, as
    training moves them (a fresh model's pole columns are constant, which any grid codes exactly)."""
    torch.manual_seed(0)
    model = build_model(kind, {"d_model": d_model, "d_state": d_state, "n_layers": 1}, SeriesShape(32, 8, 3)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if hasattr(param, "_optim") and param.dim() > 1:
                param.add_(0.05 * torch.randn_like(param))
    return model


def test_stored_bytes_are_codes_centres_steps_and_values() -> None:
    model = _drifted("s4d")
    _, stored, _ = compress("ssm_pole_sim", {"bits": 3}, model, None)
    layer = "layers.0."
    centers = stored[layer + "A_im" + CENTERS_SUFFIX]
    assert centers.shape == (8,) and centers.dtype == torch.float16
    assert stored[layer + "A_im" + SCALES_SUFFIX].shape == (8,)
    assert stored[layer + "A_im" + CODES_SUFFIX].numel() == 16 * 8 * 3 // 8  # 128 codes of 3 bits
    assert stored[layer + "log_dt.values"].dtype == torch.float16 and stored[layer + "log_dt.values"].shape == (16,)
    parts = ("codes", "scales", "centers", "values")
    coded = {k: v for k, v in stored.items() if k.startswith(layer) and k.split(".")[-1] in parts}
    size = stored_size(coded)
    assert size["weights_bytes"] == 2 * 48  # A_log_re, A_im codes
    assert size["scales_bytes"] == 2 * (8 * 2 + 8 * 2)  # fp16 centre + step per column
    assert size["fp32_bytes"] == 16 * 2  # log_dt in fp16


@pytest.mark.parametrize("kind", ["s4d", "s4"])
def test_kernel_error_below_rtn_at_the_same_bits(kind: str) -> None:
    model, calib = _drifted(kind), torch.randn(4, 32, 3, generator=torch.Generator().manual_seed(1))
    pole = compress("ssm_pole_sim", {"bits": 4}, model, calib)[2]["kernel_rel_err"]
    rtn = compress("rtn_weight_sim", {"bits": 4, "groups": ["recurrent"]}, model, calib)[2]["kernel_rel_err"]
    assert set(pole) == set(rtn) == {"layers.0"}
    assert pole["layers.0"] < 0.5 * rtn["layers.0"]


def test_more_bits_less_kernel_error_and_constant_columns_kept() -> None:
    model, calib = _drifted("s4d"), torch.randn(4, 32, 3, generator=torch.Generator().manual_seed(1))
    errors = [
        compress("ssm_pole_sim", {"bits": b, "vector_dtype": "float32"}, model, calib)[2]["kernel_rel_err"]["layers.0"]
        for b in (2, 4, 8)
    ]
    assert errors[0] > errors[1] > errors[2]
    fresh = build_model("s4d", {"d_model": 16, "d_state": 16, "n_layers": 1}, SeriesShape(32, 8, 3))
    coded = compress("ssm_pole_sim", {"bits": 2, "vector_dtype": "float32"}, fresh, None)[0]
    for name in ("A_im", "A_log_re"):  # every channel holds the same poles (up to 98): a 2-bit grid keeps them
        original = fresh.get_parameter(f"layers.0.{name}")
        torch.testing.assert_close(coded.get_parameter(f"layers.0.{name}"), original, rtol=0, atol=1e-5)


def test_wrong_config_for_the_stored_form() -> None:
    model = _drifted("s4d")
    stored = compress("ssm_pole_sim", {"bits": 3}, model, None)[1]
    with pytest.raises(ValueError, match="float32"):
        load_compressed("ssm_pole_sim", {"bits": 3, "vector_dtype": "float32"}, _drifted("s4d"), stored)
    with pytest.raises(ValueError, match="at 4 bits"):
        load_compressed("ssm_pole_sim", {"bits": 4}, _drifted("s4d"), stored)


@pytest.mark.parametrize(
    ("params", "key"),
    [({"bits": 1}, "bits"), ({"bits": 4.0}, "bits"), ({"vector_dtype": "int8"}, "vector_dtype"),
     ({"groups": ["other"]}, "groups"), ({"keep_dtype": "bfloat16"}, "keep_dtype")],
)
def test_bad_config_names_the_key(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        pass_config("ssm_pole_sim", params, "pass")
