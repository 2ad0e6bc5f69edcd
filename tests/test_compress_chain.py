"""chain: passes in order, the last one's stored form plus replayable structure of the rest."""

from __future__ import annotations

import pytest
import torch
from compress_testkit import TINY, registry_model, round_trip, windows
from torch import nn

from seqcomp.compress import compress, fp32_model_bytes, pass_config, stored_size
from seqcomp.compress.passes.lowrank import LowRankLinear
from seqcomp.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")

LOWRANK_RTN = {"steps": [{"kind": "lowrank", "rank_ratio": 0.25}, {"kind": "rtn_weight_sim", "bits": 8}]}
LOWRANK_INT8 = {"steps": [{"kind": "lowrank", "rank_ratio": 0.25}, {"kind": "int8_dynamic"}]}
PRUNE_RTN = {"steps": [{"kind": "prune_sim", "sparsity": 0.5}, {"kind": "rtn_weight_sim", "bits": 4}]}


@pytest.mark.parametrize("kind", sorted(TINY))
@pytest.mark.parametrize("params", [LOWRANK_RTN, LOWRANK_INT8, PRUNE_RTN], ids=["lowrank-rtn", "lowrank-int8", "prune-rtn"])
def test_round_trip_on_every_model(kind: str, params: dict) -> None:
    _, _, report = round_trip("chain", params, lambda s: registry_model(kind, s), windows(3))
    assert [step["pass"] for step in report["steps"]] == [step["kind"] for step in params["steps"]]
    assert report["simulated"] == any(step["simulated"] for step in report["steps"])
    assert report["layers"] == report["steps"][-1]["layers"]


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 4)).eval()


def test_lowrank_then_rtn_stores_int8_factors_and_their_shapes() -> None:
    model = _mlp()
    compressed, stored, report = compress("chain", LOWRANK_RTN, model, None)
    assert isinstance(compressed[0], LowRankLinear) and report["simulated"] is True
    assert stored["0.0.weight.codes"].numel() == 12 * 64 and stored["0.1.weight.codes"].numel() == 48 * 12
    meta = {k: v.tolist() for k, v in stored.items() if k.startswith("__chain__.")}
    assert meta == {
        "__chain__.0.0.0.weight": [12, 64], "__chain__.0.0.1.weight": [48, 12], "__chain__.0.0.1.bias": [48],
        "__chain__.0.2.0.weight": [1, 48], "__chain__.0.2.1.weight": [4, 1], "__chain__.0.2.1.bias": [4],
    }
    codes = 12 * 64 + 48 * 12 + 1 * 48 + 4 * 1  # one byte per weight of every factor
    scales = 2 * (12 + 48 + 1 + 4)  # fp16, one per output row of every factor
    shapes = 8 * 2 * 4  # the int64 shape of each coded factor
    expected = codes + scales + shapes + 4 * (48 + 4) + 8 * (2 + 2 + 1 + 2 + 2 + 1)  # + fp32 biases + chain metadata
    assert stored_size(stored)["bytes"] == expected < fp32_model_bytes(model) / 5


def test_value_only_steps_store_no_metadata_and_int8_last_runs_real_kernels() -> None:
    _, stored, report = compress("chain", PRUNE_RTN, _mlp(), None)
    assert not any(k.startswith("__chain__.") for k in stored)
    assert report["kernels"].endswith("then fake-quant on fp32")
    compressed, _, report = compress("chain", LOWRANK_INT8, _mlp(), None)
    assert report["simulated"] is False and type(compressed[0][0]).__module__.startswith("torch.ao.nn.quantized")


def test_a_step_that_leaves_torch_ao_modules_must_be_last() -> None:
    params = {"steps": [{"kind": "int8_dynamic"}, {"kind": "rtn_weight_sim"}]}
    with pytest.raises(ValueError, match=r"steps\[0\] \(int8_dynamic\).*make it the last step"):
        compress("chain", params, _mlp(), None)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({}, "steps: must be a non-empty list"),
        ({"steps": []}, "steps: must be a non-empty list"),
        ({"steps": [{"kind": "lowrank", "energy": 0.9}, {"kind": "nope"}]}, r"steps\[1\]: unknown pass 'nope'"),
        ({"steps": [{"kind": "rtn_weight_sim", "bits": 1}]}, r"steps\[0\]: bits: must be"),
        ({"steps": [{"kind": "lowrank", "energy": 0.9}, {"kind": "prune_sim", "sparsty": 0.5}]}, r"steps\[1\]: unknown key\(s\) sparsty"),
        ({"steps": [{"bits": 4}]}, r"steps\[0\]: must be a mapping with a 'kind'"),
        ({"steps": [{"kind": "chain", "steps": [{"kind": "fp32"}]}]}, r"steps\[0\]: a chain cannot contain a chain"),
    ],
)
def test_config_errors_name_the_step(params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=rf"passes\.c: {match}"):
        pass_config("chain", params, "passes.c")
