"""vq_sim: k-means codebooks of weight sub-vectors, packed indices, exact sizes and skips."""

from __future__ import annotations

import pytest
import torch
from compress_testkit import TINY, registry_model, rel_err, round_trip, windows
from torch import nn

from seqcomp.compress import compress, pass_config, stored_size
from seqcomp.errors import ConfigError


@pytest.mark.parametrize("kind", sorted(TINY))
def test_round_trip_on_every_model(kind: str) -> None:
    _, _, report = round_trip("vq_sim", {"codebook_size": 16, "dim": 2}, lambda s: registry_model(kind, s), windows(3))
    assert report["simulated"] is True
    assert all(row["bits_per_weight"] < 32 for row in report["layers"] if row["action"] != "kept fp32")


def _layer(out: int = 128, inp: int = 64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(inp, out, bias=False))


@pytest.mark.parametrize(("group_size", "books"), [(None, 1), (32, 2), (24, 3)])
def test_stored_bytes_and_bits_per_weight(group_size: int | None, books: int) -> None:
    params = {"codebook_size": 16, "dim": 4, "group_size": group_size}
    _, stored, report = compress("vq_sim", params, _layer(), None)
    assert stored["0.weight.codebook"].shape == (books, 16, 4) and stored["0.weight.codebook"].dtype == torch.float16
    size = stored_size(stored)
    assert size["weights_bytes"] == 128 * 64 // 4 * 4 // 8  # 2048 indices of 4 bits
    assert size["scales_bytes"] == books * 16 * 4 * 2  # fp16 codebooks
    assert size["bytes"] == size["weights_bytes"] + size["scales_bytes"] + 16  # + int64 shape
    bits = 8 * (size["weights_bytes"] + size["scales_bytes"]) / (128 * 64)
    assert report["layers"][0]["bits_per_weight"] == pytest.approx(bits, abs=1e-4) and report["bits_per_weight"] == report["layers"][0]["bits_per_weight"]


def test_recovers_clustered_weights_and_more_centroids_help() -> None:
    torch.manual_seed(0)
    prototypes = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-4.0, 0.25], [2.0, 2.0]])  # exact in fp16
    layer = nn.Sequential(nn.Linear(32, 64, bias=False))
    with torch.no_grad():
        layer[0].weight.copy_(prototypes[torch.randint(0, 4, (64 * 16,))].reshape(64, 32))
    compressed = compress("vq_sim", {"codebook_size": 4, "dim": 2}, layer, None)[0]
    assert torch.equal(compressed[0].weight, layer[0].weight)
    errors = [
        rel_err(compress("vq_sim", {"codebook_size": k, "dim": 4}, _layer(), None)[0][0].weight, _layer()[0].weight)
        for k in (4, 16, 64)
    ]
    assert errors[0] > errors[1] > errors[2]


def test_seeded_and_deterministic() -> None:
    first = compress("vq_sim", {"codebook_size": 16}, _layer(), None)[1]
    again = compress("vq_sim", {"codebook_size": 16}, _layer(), None)[1]
    other = compress("vq_sim", {"codebook_size": 16, "seed": 1}, _layer(), None)[1]
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["0.weight.codes"], other["0.weight.codes"])


def test_padding_and_layers_a_codebook_does_not_fit() -> None:
    model = nn.Sequential(nn.Linear(7, 200), nn.Linear(200, 3))  # rows of 7: padded to 8
    compressed, stored, report = compress("vq_sim", {"codebook_size": 256, "dim": 4}, model, None)
    rows = {row["name"]: row for row in report["layers"]}
    assert rows["0.weight"]["action"] == "vq 256x4 (simulated)" and stored["0.weight.codes"].numel() == 200 * 2
    assert "150 sub-vectors of 4 per codebook, not more than 256 centroids" in rows["1.weight"]["reason"]
    assert torch.equal(compressed[1].weight, model[1].weight)
    tiny = compress("vq_sim", {"codebook_size": 256, "dim": 8}, nn.Sequential(nn.Linear(8, 200)), None)[2]
    assert "not more than 256 centroids" in tiny["layers"][0]["reason"] and "skipped" in tiny


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"dim": 0}, "dim"),
        ({"codebook_size": 512}, "codebook_size"),
        ({"codebook_size": 1}, "codebook_size"),
        ({"dim": 4, "group_size": 6}, "group_size"),
        ({"iterations": 0}, "iterations"),
        ({"seed": 1.5}, "seed"),
        ({"groups": []}, "groups"),
        ({"k": 16}, "k"),
    ],
)
def test_config_errors_name_the_key(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"passes\.v(: .*|\.){key}"):
        pass_config("vq_sim", params, "passes.v")
