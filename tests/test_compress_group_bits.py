"""Per-group bit-widths (``group_bits``) and the ``other`` group on the uniform-grid passes."""

from __future__ import annotations

import re

import pytest
import torch
from compress_testkit import registry_model, round_trip, through_disk, windows
from torch import nn

from seqcomp.compress import compress, load_compressed, pass_config, stored_size
from seqcomp.errors import ConfigError


class NormedLinear(nn.Module):
    """A 2-D LayerNorm over (L, C), as TSMixer's, then a Linear over C."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.norm = nn.LayerNorm((3, 5))  # weight, bias (3, 5): group other
        self.proj = nn.Linear(5, 6)  # weight (6, 5): linear; bias (6,): other
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.2, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 5) -> (B, 3, 6)
        return self.proj(self.norm(x))


def _rows(report: dict) -> dict[str, dict]:
    return {row["name"]: row for row in report["layers"]}


def test_other_at_8_bits_byte_count_by_hand() -> None:
    params = {"bits": 4, "groups": ["linear", "other"], "group_bits": {"other": 8}}
    x = torch.randn(4, 3, 5)
    compressed, stored, report = round_trip("rtn_weight_sim", params, NormedLinear, x)
    rows = _rows(report)
    assert {name: row["bits"] for name, row in rows.items()} == {
        "norm.weight": 8, "norm.bias": 8, "proj.weight": 4, "proj.bias": 8,
    }
    assert rows["norm.weight"]["action"] == "int8 rtn per-tensor (simulated)"
    assert rows["proj.weight"]["action"] == "int4 rtn per-channel (simulated)"
    assert report["group_bits"] == {"other": 8}
    # elementwise parameters are coded as one flattened row: one scale per tensor
    assert stored["norm.weight.scales"].shape == (1, 1) and stored["proj.weight.scales"].shape == (6, 1)
    assert [int(stored[f"{k}.bits"]) for k in ("norm.weight", "norm.bias", "proj.bias")] == [8, 8, 8]
    assert "proj.weight.bits" not in stored  # at the pass's own bits: no tag
    size = stored_size(stored)
    # codes: 15 + 15 + 6 bytes at 8 bits, 30 weights at 4 bits = 15 bytes
    assert size["weights_bytes"] == 15 + 15 + 6 + 15
    assert size["scales_bytes"] == 2 * (1 + 1 + 1 + 6)  # fp16 scales
    assert size["meta_bytes"] == 3 * 1 + 8 * (2 + 2 + 1 + 2)  # uint8 bit tags + int64 shapes
    assert size["fp32_bytes"] == 0
    with torch.no_grad():  # 8-bit per-tensor LayerNorm weights near 1: close, not exact
        step = float(NormedLinear().norm.weight.abs().max()) / 127
        assert (compressed.norm.weight - NormedLinear().norm.weight).abs().max() <= step / 2 + 1e-7


def test_group_size_applies_along_a_flattened_other_tensor() -> None:
    params = {"bits": 6, "groups": ["other"], "group_size": 4}
    _, stored, report = round_trip("rtn_weight_sim", params, NormedLinear, torch.randn(4, 3, 5))
    assert stored["norm.weight.scales"].shape == (1, 4)  # 15 elements in groups of 4
    assert "proj.weight.codes" not in stored
    assert _rows(report)["proj.weight"]["reason"] == "group 'linear' not selected; kept fp32"


def test_gptq_recurrent_at_8_bits_on_s4d_round_trips_and_counts_real_bits() -> None:
    params = {
        "bits": 4, "groups": ["recurrent", "ssm", "linear", "other"], "group_bits": {"recurrent": 8},
        "scale_dtype": "float8_e4m3", "keep_dtype": "float16",
    }
    make = lambda seed: registry_model("s4d", seed)  # noqa: E731
    _, stored, report = round_trip("gptq_weight_sim", params, make, windows(4), windows(32, seed=1))
    rows = _rows(report)
    for name in ("layers.0.A_log_re", "layers.0.A_im", "layers.0.log_dt"):
        numel = rows[name]["numel"]
        assert rows[name]["bits"] == 8 and rows[name]["group"] == "recurrent"
        assert int(stored[f"{name}.bits"]) == 8 and stored[f"{name}.codes"].numel() == numel
    assert rows["layers.0.C"]["bits"] == 4  # C: real (H, N/2, 2), two 4-bit codes a byte
    assert stored["layers.0.C.codes"].numel() == -(-rows["layers.0.C"]["numel"] // 2)
    assert "gptq fallback" not in rows["encoder.weight"]["action"] and rows["encoder.weight"]["bits"] == 4
    assert rows["norms.0.weight"]["bits"] == 4 and report["fp32_layers"] == 0
    assert stored_size(stored)["fp32_bytes"] == 0  # every parameter coded
    assert report["quantized_numel"] == report["total_numel"]


def test_a_stored_form_with_bit_tags_needs_the_same_group_bits() -> None:
    params = {"bits": 4, "groups": ["linear", "other"], "group_bits": {"other": 8}}
    _, stored, _ = compress("rtn_weight_sim", params, NormedLinear(), None)
    with pytest.raises(ValueError, match="not in group_bits"):
        load_compressed("rtn_weight_sim", {**params, "group_bits": {}}, NormedLinear(1), through_disk(stored))


def test_qat_trains_against_the_per_group_grid() -> None:
    params = {"bits": 3, "groups": ["linear", "other"], "group_bits": {"other": 8}, "epochs": 1, "lr": 1e-3}
    x = torch.randn(4, 3, 5)
    _, stored, report = round_trip("qat_sim", params, NormedLinear, x, torch.randn(32, 3, 5))
    assert _rows(report)["norm.weight"]["bits"] == 8 and _rows(report)["proj.weight"]["bits"] == 3
    assert int(stored["norm.weight.bits"]) == 8


@pytest.mark.parametrize(
    ("kind", "params", "key"),
    [
        ("rtn_weight_sim", {"group_bits": {"other": 8}}, "group_bits.other"),  # other not in groups
        ("rtn_weight_sim", {"groups": ["linear", "other"], "group_bits": {"norms": 8}}, "group_bits.norms"),
        ("gptq_weight_sim", {"group_bits": {"linear": 9}}, "group_bits.linear"),
        ("gptq_weight_sim", {"group_bits": {"linear": True}}, "group_bits.linear"),
        ("rtn_weight_sim", {"group_bits": [8]}, "group_bits"),
        ("rtn_weight_sim", {"groups": ["linear", "norm"]}, "groups"),
        ("prune_sim", {"groups": ["other"]}, "groups"),  # only the uniform-grid passes code other
        ("mixed_precision_sim", {"uniform_bits": 3, "group_bits": {"linear": 8}}, "group_bits"),
        ("int8_static_sim", {"group_bits": {"linear": 4}}, "group_bits"),
    ],
)
def test_config_errors_name_the_key(kind: str, params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^pass(: .*|\.){re.escape(key)}"):  # "pass.<key>: ..." from the type check
        pass_config(kind, params, "pass")
