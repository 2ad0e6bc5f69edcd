"""GPTQ (passes/gptq_weight_sim.py, quant/gptq.py): lower output error than RTN on correlated inputs, RTN fallback, stored form."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from seqcomp.compress import compress, load_compressed, pass_config, stored_size
from seqcomp.compress.quant.gptq import GPTQSettings, gptq_quantize
from seqcomp.compress.quant.uniform import dequantize, quantize
from seqcomp.errors import ConfigError


def _correlated_inputs(n: int = 2048, dim: int = 64, seed: int = 0) -> torch.Tensor:
    """Inputs with a decaying spectrum and strong cross-feature correlation, like activations."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g) * torch.logspace(0, -2, dim)[:, None]  # (dim, dim)
    return torch.randn(n, dim, generator=g) @ mix + 0.1 * torch.randn(n, dim, generator=g)  # (n, dim)


def _output_error(w: torch.Tensor, q: torch.Tensor, x: torch.Tensor) -> float:
    return float((x @ (w - q).T).norm() / (x @ w.T).norm())


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize(("group_size", "act_order", "symmetric"), [(None, False, True), (16, False, False), (16, True, True)])
def test_gptq_beats_rtn_on_the_layer_output(bits: int, group_size: int | None, act_order: bool, symmetric: bool) -> None:
    torch.manual_seed(0)
    w = torch.randn(32, 64) * 0.1
    x = _correlated_inputs()
    h = 2 * x.double().T @ x.double() / len(x)
    settings = GPTQSettings(percdamp=0.01, act_order=act_order, block_size=16)  # several lazy blocks
    gptq = dequantize(gptq_quantize(w, h, bits, group_size, torch.float16, settings, symmetric), bits, group_size)
    rtn = dequantize(quantize(w, bits, group_size, torch.float16, symmetric=symmetric), bits, group_size)
    assert _output_error(w, gptq, x) < 0.8 * _output_error(w, rtn, x)
    assert _rel(gptq, w) > _rel(rtn, w)  # GPTQ trades weight error for output error


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 16)
        self.lstm = nn.LSTM(16, 16, batch_first=True)
        self.conv = nn.Conv1d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, 4)
        h = self.lstm(torch.relu(self.proj(x)))[0]
        return self.head(self.conv(h.transpose(1, 2)).transpose(1, 2))


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net().eval()


@pytest.mark.parametrize(
    "extra",
    [{}, {"scale_dtype": "float8_e4m3", "keep_dtype": "float16"}, {"rounding": "learned", "rounding_steps": 20}],
)
def test_gptq_pass_reports_fallbacks_and_round_trips(extra: dict) -> None:
    model, calib = _net(), torch.randn(40, 12, 4)
    params = {"bits": 3, "group_size": 8, "symmetric": False, **extra}
    compressed, stored, report = compress("gptq_weight_sim", params, model, calib)
    rows = {row["name"]: row for row in report["layers"]}
    assert rows["proj.weight"]["action"] == rows["head.weight"]["action"] == "int3 gptq group 8 asymmetric (simulated)"
    for name in ("lstm.weight_ih_l0", "lstm.weight_hh_l0", "conv.weight"):
        assert "gptq fallback" in rows[name]["action"] and rows[name]["action"].startswith("int3 rtn group 8")
    assert report["simulated"] is True and report["quantized_layers"] == 5
    assert stored_size(stored)["weights_bytes"] == sum(-(-n * 3 // 8) for n in (64, 1024, 1024, 768, 64))
    buffer = io.BytesIO()
    torch.save(stored, buffer)
    buffer.seek(0)
    rebuilt = load_compressed("gptq_weight_sim", params, _net(seed=1), torch.load(buffer, weights_only=True))
    x = torch.randn(3, 12, 4)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), compressed(x))


def test_gptq_model_output_closer_than_rtn() -> None:
    model, calib = _net(), torch.randn(64, 12, 4)
    x = calib[:16]
    with torch.no_grad():
        ref = model(x)
        errors = {kind: _rel(compress(kind, {"bits": 3}, model, calib)[0](x), ref) for kind in ("gptq_weight_sim", "rtn_weight_sim")}
    assert errors["gptq_weight_sim"] < errors["rtn_weight_sim"]


def test_gptq_needs_calibration() -> None:
    with pytest.raises(ValueError, match="calibration"):
        compress("gptq_weight_sim", {}, _net(), None)


@pytest.mark.parametrize(
    ("params", "key"),
    [({"bits": 1}, "bits"), ({"percdamp": 0}, "percdamp"), ({"act_order": 1}, "act_order"), ({"block_size": 0}, "block_size"), ({"groups": ["x"]}, "groups")],
)
def test_config_errors_name_the_key(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        pass_config("gptq_weight_sim", params, "compress.passes.w3_gptq")
