"""prune_sim: magnitude pruning (per layer, global, 2:4) with an honest sparse stored form."""

from __future__ import annotations

import pytest
import torch
from compress_testkit import TINY, registry_model, round_trip, windows
from torch import nn

from seqcomp.compress import build_pass, compress, copy_model, pass_config, stored_size
from seqcomp.errors import ConfigError

PARAMS = [
    {},
    {"scope": "global", "sparsity": 0.7},
    {"pattern": "2:4"},
]


@pytest.mark.parametrize("kind", sorted(TINY))
@pytest.mark.parametrize("params", PARAMS, ids=["layer", "global", "2:4"])
def test_round_trip_on_every_model(kind: str, params: dict) -> None:
    compressed, _, report = round_trip("prune_sim", params, lambda s: registry_model(kind, s), windows(3))
    assert report["simulated"] is True
    for row in report["layers"]:
        if row["action"] != "kept fp32":
            weight = compressed.get_parameter(row["name"])
            assert float((weight == 0).float().mean()) >= row["sparsity"] - 1e-6  # a kept weight may be 0 too
        elif row["group"] == "recurrent":
            original = registry_model(kind).get_parameter(row["name"])
            assert torch.equal(compressed.get_parameter(row["name"]), original)


def test_unstructured_keeps_the_largest_and_stores_mask_plus_values() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 64, bias=False))
    w = model[0].weight.detach().clone()
    compressed, stored, report = compress("prune_sim", {"sparsity": 0.5}, model, None)
    pruned = compressed[0].weight.detach()
    kept = pruned != 0
    assert int(kept.sum()) == 64 * 128
    assert float(w[kept].abs().min()) >= float(w[~kept].abs().max())
    assert torch.equal(pruned[kept], w[kept])
    size = stored_size(stored)
    assert size["meta_bytes"] == 256 * 64 // 8 + 2 * 8  # bitmask + int64 shape
    assert size["fp32_bytes"] == 64 * 128 * 4  # kept values
    assert size["bytes"] == 2048 + 16 + 32768 and size["weights_bytes"] == 0
    assert report["layers"][0]["sparsity"] == 0.5 and report["achieved_sparsity"] == 0.5


def test_two_of_four_keeps_two_largest_of_each_run_and_stores_2_bit_positions() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32, bias=False))
    w = model[0].weight.detach().clone()
    compressed, stored, _ = compress("prune_sim", {"pattern": "2:4"}, model, None)
    runs, original = compressed[0].weight.detach().view(32, 16, 4), w.view(32, 16, 4).abs()
    assert bool(((runs != 0).sum(-1) == 2).all())
    top2 = original.topk(2, dim=-1).values.min(-1).values  # (32, 16): the smaller kept magnitude
    assert torch.equal(runs.abs().amax(-1), original.amax(-1))
    assert bool((runs.abs().masked_fill(runs == 0, float("inf")).amin(-1) == top2).all())
    size = stored_size(stored)
    assert size["meta_bytes"] == 1024 * 2 // 8 + 16  # 1024 kept values, 2-bit positions, shape
    assert size["fp32_bytes"] == 1024 * 4


def test_global_scope_ranks_all_layers_together() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 32))
    with torch.no_grad():
        model[1].weight.mul_(10)  # the global threshold falls almost only on layer 0
    _, _, report = compress("prune_sim", {"sparsity": 0.5, "scope": "global"}, model, None)
    rows = {row["name"]: row for row in report["layers"]}
    assert rows["0.weight"]["sparsity"] > 0.9 > 0.1 > rows["1.weight"]["sparsity"]
    assert rows["0.weight"]["sparsity"] + rows["1.weight"]["sparsity"] == pytest.approx(1.0)


def test_forms_that_would_not_be_smaller_stay_dense_and_say_so() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 16), nn.Linear(16, 4))
    compressed, stored, report = compress("prune_sim", {"sparsity": 0.02}, model, None)
    assert all("not smaller than dense fp32" in row["reason"] for row in report["layers"] if row["group"] == "linear")
    assert "skipped" in report and torch.equal(compressed[0].weight, model[0].weight)
    assert set(stored) == set(model.state_dict())
    rows = {r["name"]: r for r in compress("prune_sim", {"pattern": "2:4"}, model, None)[2]["layers"]}
    assert "rows of 7 weights are not a multiple of 4" in rows["0.weight"]["reason"]
    assert rows["1.weight"]["action"] == "pruned 2:4 (layer) (simulated)"


def test_pack_refuses_changed_weights_and_unpack_checks_parts() -> None:
    prune = build_pass("prune_sim", {})
    model, _ = prune.apply(copy_model(nn.Sequential(nn.Linear(16, 16))), None)
    stored = prune.pack(model)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(ValueError, match="changed after compression"):
        prune.pack(model)
    del stored["0.weight.values"]
    with pytest.raises(ValueError, match="expected all of"):
        prune.unpack(nn.Sequential(nn.Linear(16, 16)), stored)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": 0}, "sparsity"),
        ({"pattern": "4:8"}, "pattern"),
        ({"pattern": "2:4", "sparsity": 0.7}, "sparsity"),
        ({"pattern": "2:4", "scope": "global"}, "scope"),
        ({"scope": "model"}, "scope"),
        ({"groups": ["weights"]}, "groups"),
        ({"amount": 0.5}, "amount"),
    ],
)
def test_config_errors_name_the_key(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"passes\.p: .*{key}"):
        pass_config("prune_sim", params, "passes.p")
