"""Parameter groups (groups.py): detection on the SSM models, selection by config, complex tensors."""

from __future__ import annotations

import pytest
import torch
from compress_testkit import through_disk
from torch import nn

from seqcomp.compress import compress, load_compressed, stored_size
from seqcomp.compress.quant.groups import named_groups
from seqcomp.models import SeriesShape, build_model

SHAPE = SeriesShape(lookback=16, horizon=4, channels=3)
TINY = {
    "s4d": {"d_model": 8, "d_state": 4, "n_layers": 1},
    "mamba": {"d_model": 8, "d_state": 4, "n_layers": 1},
}


def _model(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(kind, TINY[kind], SHAPE).eval()


def _groups(model: nn.Module) -> dict[str, str]:
    return {name: group for name, _, _, _, group in named_groups(model)}


def _rows(report: dict) -> dict[str, dict]:
    return {row["name"]: row for row in report["layers"]}


def test_groups_of_s4d_and_mamba() -> None:
    s4d = _groups(_model("s4d"))
    assert {k: s4d[f"layers.0.{k}"] for k in ("log_dt", "A_log_re", "A_im", "C", "D")} == {
        "log_dt": "recurrent", "A_log_re": "recurrent", "A_im": "recurrent",
        "C": "ssm", "D": "ssm",
    }
    assert s4d["encoder.weight"] == s4d["mix.0.weight"] == s4d["head.time.weight"] == "linear"
    assert s4d["encoder.bias"] == s4d["norms.0.weight"] == "other"
    mamba = _groups(_model("mamba"))
    assert {mamba[f"mixers.0.{k}"] for k in ("A_log", "dt_bias", "D")} == {"recurrent"}
    assert mamba["mixers.0.in_proj.weight"] == mamba["mixers.0.conv.weight"] == "linear"


def test_recurrent_params_stay_fp32_by_default_and_are_quantized_on_request() -> None:
    model = _model("s4d")
    x = torch.randn(2, SHAPE.lookback, SHAPE.channels)
    default, _, report = compress("rtn_weight_sim", {"bits": 4}, model, None)
    rows = _rows(report)
    for name in ("layers.0.log_dt", "layers.0.A_log_re", "layers.0.A_im"):
        assert torch.equal(default.get_parameter(name), model.get_parameter(name))
        assert rows[name]["reason"] == "SSM recurrent parameter kept in fp32" and rows[name]["group"] == "recurrent"
    assert rows["layers.0.C"]["action"] == "int4 rtn per-channel (simulated)" and rows["layers.0.C"]["group"] == "ssm"
    assert report["groups"] == ["ssm", "linear", "experts", "shared_expert"]  # the MoE groups: none in S4D

    params = {"bits": 4, "groups": ["recurrent"]}
    only, stored, report = compress("rtn_weight_sim", params, model, None)
    rows = _rows(report)
    assert {name for name, row in rows.items() if row["action"] != "kept fp32"} == {
        "layers.0.log_dt", "layers.0.A_log_re", "layers.0.A_im",
    }
    assert not torch.equal(only.layers[0].A_im, model.layers[0].A_im)
    assert stored["layers.0.log_dt.scales"].shape == (1, 1)  # a 1-D parameter: one scale, not one per element
    assert rows["layers.0.C"]["reason"] == "group 'ssm' not selected; kept fp32"
    assert report["group_summary"]["recurrent"]["quantized_numel"] == report["group_summary"]["recurrent"]["numel"]
    assert report["group_summary"]["linear"]["quantized_numel"] == 0
    rebuilt = load_compressed("rtn_weight_sim", params, _model("s4d", seed=1), through_disk(stored))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), only(x))
        assert not torch.equal(only(x), model(x))


class ComplexSSM(nn.Module):
    """A diagonal SSM holding its output map as a true complex tensor."""

    def __init__(self, d: int = 6, n: int = 5):
        super().__init__()
        self.A = nn.Parameter(-torch.rand(d, n) - 0.1)
        self.A._optim = {"weight_decay": 0.0}
        self.C = nn.Parameter(torch.randn(d, n, dtype=torch.cfloat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, d) -> (B, L, d)
        kernel = (self.C[..., None] * torch.exp(self.A[..., None] * torch.arange(x.shape[1]))).sum(1).real  # (d, L)
        return torch.stack([(x[:, : t + 1].flip(1) * kernel[:, : t + 1].T).sum(1) for t in range(x.shape[1])], 1)


def test_complex_parameters_keep_their_imaginary_part() -> None:
    torch.manual_seed(0)
    model = ComplexSSM().eval()
    compressed, stored, report = compress("rtn_weight_sim", {"bits": 8}, model, None)
    assert _rows(report)["C"]["group"] == "ssm"
    assert stored["C.shape"].tolist() == [6, 5, 2]  # coded as real/imaginary pairs
    assert stored_size(stored)["weights_bytes"] == 6 * 5 * 2  # 8-bit codes for both parts
    new, old = compressed.C.detach(), model.C.detach()
    assert not torch.equal(new.imag, old.imag)
    assert float((new.imag - old.imag).abs().max()) < 0.02 * float(old.abs().max())
    assert torch.equal(compressed.A, model.A)
    torch.manual_seed(1)
    rebuilt = load_compressed("rtn_weight_sim", {"bits": 8}, ComplexSSM(), through_disk(stored))
    assert torch.equal(rebuilt.C, compressed.C)


@pytest.mark.parametrize("kind", ["rtn_weight_sim", "float_weight_sim"])
def test_selecting_an_absent_group_is_an_explicit_skip(kind: str) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    compressed, stored, report = compress(kind, {"groups": ["ssm"]}, model, None)
    assert report["quantized_layers"] == 0 and "no parameter of groups ['ssm']" in report["skipped"]
    assert _rows(report)["0.weight"]["reason"] == "group 'linear' not selected; kept fp32"
    assert stored_size(stored)["bytes"] == sum(4 * p.numel() for p in model.parameters())


def test_report_gives_each_groups_output_sensitivity() -> None:
    model = _model("s4d")
    calib = torch.randn(16, SHAPE.lookback, SHAPE.channels)
    params = {"bits": 3, "groups": ["recurrent", "ssm", "linear"]}
    _, _, report = compress("rtn_weight_sim", params, model, calib)
    errors = {g: report["group_summary"][g]["output_rel_err"] for g in ("recurrent", "ssm", "linear")}
    assert all(e > 0 for e in errors.values()) and report["output_rel_err"] > 0
    assert "output_rel_err" not in report["group_summary"]["other"]
    compressed = compress("rtn_weight_sim", {**params, "groups": ["ssm"]}, model, calib)
    with torch.no_grad():  # the 'ssm' entry is exactly the error of quantizing that group alone
        alone = float((compressed[0](calib) - model(calib)).norm() / model(calib).norm())
    assert alone == pytest.approx(errors["ssm"], rel=1e-4)
    assert "sensitivity" not in compress("rtn_weight_sim", params, model, None)[2]
