"""lowrank: truncated SVD factors as two Linears, real (not simulated), sizes and skips."""

from __future__ import annotations

import math

import pytest
import torch
from compress_testkit import TINY, registry_model, rel_err, round_trip, windows
from torch import nn

from seqcomp.compress import build_pass, compress, fp32_model_bytes, load_compressed, pass_config, stored_size
from seqcomp.compress.passes.lowrank import LowRankLinear, energy_rank
from seqcomp.errors import ConfigError


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 4)).eval()


@pytest.mark.parametrize("kind", sorted(TINY))
@pytest.mark.parametrize("params", [{"energy": 0.9}, {"rank_ratio": 0.25}], ids=["energy", "ratio"])
def test_round_trip_on_every_model(kind: str, params: dict) -> None:
    _, stored, report = round_trip("lowrank", params, lambda s: registry_model(kind, s), windows(3))
    assert report["simulated"] is False
    factored = [row for row in report["layers"] if row["action"] != "kept fp32"]
    assert all(f"{row['name']}.0.weight" in stored for row in factored)
    if "rank_ratio" in params:
        assert bool(factored) == (kind != "naive")  # every model but naive has a Linear worth it
    assert ("skipped" in report) == (not factored)


def test_factors_are_the_truncated_svd_and_size_counts_them() -> None:
    model = _mlp()
    compressed, stored, report = compress("lowrank", {"rank_ratio": 0.25}, model, None)
    first, second = compressed[0], compressed[2]
    assert isinstance(first, LowRankLinear) and first.rank == 12  # 0.25 * min(64, 48)
    assert isinstance(second, LowRankLinear) and second.rank == 1  # 0.25 * 4
    w = model[0].weight.detach().double()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    best = (u[:, :12] * s[:12]) @ vh[:12]  # Eckart-Young: the best rank-12 approximation
    approx = (first[1].weight @ first[0].weight).detach().double()
    torch.testing.assert_close(approx, best, rtol=0, atol=1e-5)
    rows = {row["name"]: row for row in report["layers"]}
    expected_err = math.sqrt(float((s[12:] ** 2).sum() / (s**2).sum()))
    assert rows["0"]["weight_rel_err"] == pytest.approx(expected_err, abs=1e-5)
    weights = 12 * 64 + 48 * 12 + 48 + 1 * 48 + 4 * 1 + 4  # factors + biases
    assert stored_size(stored)["bytes"] == 4 * weights < fp32_model_bytes(model)
    x = torch.randn(5, 64)
    with torch.no_grad():
        torch.testing.assert_close(compressed(x), first_second(compressed, x))


def first_second(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The factored model run by hand: four small matmuls, no (out, in) matrix anywhere."""
    h = torch.relu(x @ model[0][0].weight.T @ model[0][1].weight.T + model[0][1].bias)
    return h @ model[2][0].weight.T @ model[2][1].weight.T + model[2][1].bias


def test_energy_picks_the_smallest_rank_holding_that_share() -> None:
    s = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5])
    share = torch.cumsum(s**2, 0) / (s**2).sum()  # 0.768, 0.960, 0.990, 0.998, 1
    assert [energy_rank(s, e) for e in (0.5, 0.76, 0.9, 0.97, 0.995, 1.0)] == [1, 1, 2, 3, 4, 5]
    assert float(share[1]) < 0.97 <= float(share[2])
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(40, 5))
    v, _ = torch.linalg.qr(torch.randn(30, 5))
    layer = nn.Linear(30, 40)
    with torch.no_grad():
        layer.weight.copy_(u @ torch.diag(s) @ v.T)
    compressed, _, report = compress("lowrank", {"energy": 0.97}, nn.Sequential(layer), None)
    assert compressed[0].rank == 3 and report["layers"][0]["energy_kept"] == pytest.approx(float(share[2]), abs=1e-6)


def test_layers_that_would_not_shrink_or_cannot_be_factored_are_kept_and_reported() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.LSTM(8, 8, batch_first=True))
    model[0].weight._optim = {"lr": 1e-3}
    _, stored, report = compress("lowrank", {"rank_ratio": 0.5}, model, None)
    rows = {row["name"]: row for row in report["layers"]}
    assert rows["0"]["reason"] == "SSM recurrent parameter kept in fp32"
    assert "not a plain nn.Linear (LSTM)" in rows["1"]["reason"]
    square = nn.Sequential(nn.Linear(8, 8))
    compressed, stored, report = compress("lowrank", {"rank_ratio": 0.5}, square, None)
    assert "rank 4 of 8 stores 64 weights, not fewer than the 64" in report["layers"][0]["reason"]
    assert isinstance(compressed[0], nn.Linear) and "0.weight" in stored
    assert report["quantized_layers"] == 0
    attention = nn.MultiheadAttention(16, 2)
    rows = {r["name"]: r for r in compress("lowrank", {"rank_ratio": 0.1}, nn.Sequential(attention), None)[2]["layers"]}
    assert "NonDynamicallyQuantizableLinear" in rows["0.out_proj"]["reason"]


def test_unpack_checks_the_factor_shapes() -> None:
    _, stored, _ = compress("lowrank", {"rank_ratio": 0.25}, _mlp(), None)
    stored["0.1.weight"] = torch.zeros(48, 5)
    with pytest.raises(ValueError, match="do not factor"):
        load_compressed("lowrank", {"rank_ratio": 0.25}, _mlp(1), stored)
    lowrank = build_pass("lowrank", {"energy": 0.5})
    model, _ = lowrank.apply(_mlp(), None)
    assert rel_err(lowrank.unpack(_mlp(1), lowrank.pack(model))(torch.ones(2, 64)), model(torch.ones(2, 64))) == 0


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({}, "rank_ratio"),
        ({"rank_ratio": 0.5, "energy": 0.9}, "rank_ratio"),
        ({"rank_ratio": 0}, "rank_ratio"),
        ({"rank_ratio": True}, "rank_ratio"),
        ({"energy": 1.5}, "energy"),
        ({"energy": 0.9, "rank": 3}, "rank"),
    ],
)
def test_config_errors_name_the_key(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"passes\.lr(: .*|\.){key}"):
        pass_config("lowrank", params, "passes.lr")
