"""qat_sim: straight-through fine-tuning of RTN weights, label-free, deterministic, RTN's stored form."""

from __future__ import annotations

import pytest
import torch
from compress_testkit import TINY, output_mse, registry_model, round_trip, windows
from torch import nn

from seqcomp.compress import compress, pass_config, stored_size
from seqcomp.errors import ConfigError


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 8)).eval()


CALIB = torch.randn(256, 16, generator=torch.Generator().manual_seed(1))
HELD_OUT = torch.randn(512, 16, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("bits", [2, 3])
def test_qat_beats_rtn_on_unseen_inputs_with_rtns_stored_form(bits: int) -> None:
    model = _mlp()
    qat, stored, report = compress("qat_sim", {"bits": bits, "epochs": 4, "lr": 1e-3}, model, CALIB)
    rtn, rtn_stored, _ = compress("rtn_weight_sim", {"bits": bits}, model, None)
    assert output_mse(qat, model, HELD_OUT) < 0.7 * output_mse(rtn, model, HELD_OUT)
    assert report["qat"]["distill_mse_qat"] < report["qat"]["distill_mse_rtn"]
    assert report["qat"]["distill_mse_rtn"] == pytest.approx(output_mse(rtn, model, CALIB), rel=1e-5)  # starts at RTN
    assert set(stored) == set(rtn_stored) and stored_size(stored) == stored_size(rtn_stored)
    assert report["simulated"] is True and report["pass"] == "qat_sim"


def test_seeded_and_deterministic() -> None:
    params = {"bits": 3, "epochs": 2, "lr": 1e-3}
    first = compress("qat_sim", params, _mlp(), CALIB)[1]
    again = compress("qat_sim", params, _mlp(), CALIB)[1]
    other = compress("qat_sim", {**params, "seed": 1}, _mlp(), CALIB)[1]
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("kind", sorted(TINY))
def test_round_trip_on_every_model_keeps_recurrent_params(kind: str) -> None:
    compressed, _, report = round_trip("qat_sim", {"epochs": 1, "batch_size": 4}, lambda s: registry_model(kind, s), windows(3), windows(8, 1))
    original = registry_model(kind)
    for row in report["layers"]:
        if row.get("group") == "recurrent":
            assert torch.equal(compressed.get_parameter(row["name"]), original.get_parameter(row["name"]))
            assert "fine_tuned" not in row
    assert report["qat"]["epoch_loss"] or kind == "naive"


def test_fp8_scales_and_float16_kept_tensors_round_trip_on_s4d() -> None:
    params = {"epochs": 1, "batch_size": 4, "scale_dtype": "float8_e4m3", "keep_dtype": "float16"}
    _, stored, _ = round_trip("qat_sim", params, lambda s: registry_model("s4d", s), windows(3), windows(8, 1))
    assert stored["layers.0.log_dt"].dtype == torch.float16  # a recurrent parameter, kept (and not trained)


def test_needs_calibration_windows() -> None:
    with pytest.raises(ValueError, match="needs calibration windows"):
        compress("qat_sim", {}, _mlp(), None)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": "a"}, "seed"),
        ({"bits": 1}, "bits"),
        ({"group_size": 0}, "group_size"),
        ({"groups": ["x"]}, "groups"),
        ({"steps": 3}, "steps"),
    ],
)
def test_config_errors_name_the_key(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"passes\.q(: .*|\.){key}"):
        pass_config("qat_sim", params, "passes.q")
