"""The sparse mixture-of-experts Transformer: top-k routing, the shared expert, the
load-balancing loss and its way into training, routing counts, tokens and output heads."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from seqcomp.errors import ConfigError
from seqcomp.models import SeriesShape, build_model
from seqcomp.models.moe_transformer import SparseMoE, load_balance_loss

TINY = {"d_model": 16, "n_heads": 2, "n_layers": 2, "d_ff": 32, "n_experts": 4, "top_k": 2, "dropout": 0.0}
SHAPE = SeriesShape(24, 6, 2)


def _moe(top_k: int, shared: bool, router: str = "linear", seed: int = 0) -> SparseMoE:
    torch.manual_seed(seed)
    return SparseMoE(d_model=8, n_experts=4, top_k=top_k, expert_ff=6, shared_ff=12 if shared else None, router=router)


def _dense_reference(moe: SparseMoE, x: torch.Tensor, k: int) -> torch.Tensor:
    """Every expert on every token, then all but each token's k most probable zeroed."""
    probs = torch.softmax(moe.router_logits(x), -1)  # (T, E)
    outputs = torch.stack([expert(x) for expert in moe.experts], 1)  # (T, E, D)
    keep = torch.zeros_like(probs).scatter(1, probs.topk(k, -1).indices, 1.0)
    assert torch.equal(keep.sum(1), torch.full((len(x),), float(k)))
    return ((probs * keep)[..., None] * outputs).sum(1)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("router", ["linear", "centroid"])
def test_each_token_uses_exactly_its_top_k_experts(k: int, router: str) -> None:
    moe = _moe(k, shared=False, router=router)
    x = torch.randn(50, 8)
    with torch.no_grad():
        out = moe(x)
        torch.testing.assert_close(out, _dense_reference(moe, x, k))
        assert not torch.allclose(out, _dense_reference(moe, x, k + 1))  # one more expert would change it
    assert int(moe.counts.sum()) == 50 * k


def test_centroid_router_sends_a_token_to_its_nearest_centroid() -> None:
    moe = _moe(1, shared=False, router="centroid")
    with torch.no_grad():
        moe(moe.router.detach()[[2, 0, 3]] + 0.01)  # tokens next to centroids 2, 0, 3
    assert moe.counts.tolist() == [1, 0, 1, 1]


def test_shared_expert_on_and_off() -> None:
    with_shared, without = _moe(2, shared=True), _moe(2, shared=False)
    assert without.shared is None and without.shared_gate is None
    missing, unexpected = without.load_state_dict(with_shared.state_dict(), strict=False)
    assert not missing and {k.split(".")[0] for k in unexpected} == {"shared", "shared_gate"}
    x = torch.randn(30, 8)
    with torch.no_grad():
        added = with_shared(x) - without(x)
        torch.testing.assert_close(added, torch.sigmoid(with_shared.shared_gate(x)) * with_shared.shared(x))
    assert added.abs().min() > 0  # always on: every token gets it
    n_shared = sum(p.numel() for p in with_shared.parameters()) - sum(p.numel() for p in without.parameters())
    assert n_shared == 3 * 8 * 12 + 8


def test_load_balancing_loss_is_one_when_balanced_and_grows_as_routing_collapses() -> None:
    E, T = 4, 64
    uniform = torch.full((T, E), 1 / E)
    skewed_choice = torch.zeros(T, 1, dtype=torch.long)  # every token to expert 0
    # Uniform probabilities, or an even spread of the assignments: E * sum_i f_i P_i = 1.
    assert load_balance_loss(uniform, skewed_choice, E).item() == pytest.approx(1.0)
    even = torch.arange(T)[:, None] % E
    assert load_balance_loss(torch.softmax(torch.randn(T, E), -1), even, E).item() == pytest.approx(1.0)
    # Collapse: all probability and every token on one expert gives E.
    collapsed = F.one_hot(torch.zeros(T, dtype=torch.long), E).float()
    assert load_balance_loss(collapsed, skewed_choice, E).item() == pytest.approx(E)
    losses = []
    for a in torch.linspace(0, 1, 6):
        probs = (1 - a) * uniform + a * collapsed
        losses.append(load_balance_loss(probs, probs.topk(1, -1).indices, E).item())
    assert losses[0] == pytest.approx(1.0) and losses[-1] == pytest.approx(E)
    assert all(b > a for a, b in zip(losses[1:], losses[2:]))
    # Two experts per token, both always the same two: E / k.
    pair = torch.tensor([[0, 1]]).repeat(T, 1)
    two = torch.zeros(T, E)
    two[:, :2] = 0.5
    assert load_balance_loss(two, pair, E).item() == pytest.approx(E / 2)


def test_aux_loss_reaches_the_router_and_the_training_loss() -> None:
    from types import SimpleNamespace

    from seqcomp.train.module import Forecaster

    torch.manual_seed(0)
    x, y = torch.randn(4, 24, 2), torch.randn(4, 6, 2)
    net = build_model("moe_transformer", {**TINY, "ar_weight": 0.0, "revin": True}, SHAPE)  # wrapped: RevIN(net)
    moe = net.net
    moe(x)
    moe.aux_loss().backward()
    routers = [layer.moe.router for layer in moe.layers]
    assert all(r.grad is not None and r.grad.abs().sum() > 0 for r in routers)
    expected_aux = 0.02 * torch.stack([layer.moe.balance for layer in moe.layers]).mean()
    torch.testing.assert_close(moe.aux_loss(), expected_aux)
    # The training step adds it (through the RevIN wrapper) to the forecast loss.
    module = Forecaster(net, lr=1e-3, weight_decay=0.0)
    module.log = lambda *args, **kwargs: None
    module._trainer = SimpleNamespace(optimizers=[SimpleNamespace(param_groups=[{"lr": 1e-3}])])
    torch.manual_seed(1)
    loss = module.training_step((x, y), 0)
    torch.manual_seed(1)
    plain = F.mse_loss(net(x), y)
    torch.testing.assert_close(loss, plain + moe.aux_loss())
    assert moe.aux_loss() > 0
    # Evaluation adds nothing.
    net.eval()
    with torch.no_grad():
        net(x)
    assert moe.aux_loss() is None


def test_aux_weight_zero_leaves_the_router_to_the_forecast_loss() -> None:
    torch.manual_seed(0)
    model = build_model("moe_transformer", {**TINY, "aux_weight": 0.0, "ar_weight": 0.0}, SHAPE)
    model(torch.randn(4, 24, 2))
    model.aux_loss().backward()
    assert all(layer.moe.router.grad.abs().sum() == 0 for layer in model.layers)


def test_routing_counts_accumulate_and_reset() -> None:
    torch.manual_seed(0)
    for tokens, per_series in (("point", 24), ("patch", 3)):
        model = build_model("moe_transformer", {**TINY, "tokens": tokens, "patch_len": 8}, SHAPE).eval()
        with torch.no_grad():
            model(torch.randn(5, 24, 2))
            model(torch.randn(5, 24, 2))
        counts = model.routing_counts()
        assert counts.shape == (2, 4) and counts.sum(1).tolist() == [2 * 5 * 2 * per_series * 2] * 2
        model.reset_routing_counts()
        assert model.routing_counts().sum() == 0
        copy.deepcopy(model).routing_counts()  # deep copies (the compression stage's) keep working


def test_a_model_copies_after_a_training_forward() -> None:
    """The compression stage deep-copies models; the last forward's losses (with their graph)
    stay behind, the weights and routing counts go along."""
    torch.manual_seed(0)
    model = build_model("moe_transformer", TINY, SHAPE)
    x = torch.randn(2, 24, 2)
    model(x)
    twin = copy.deepcopy(model)
    assert twin.aux_loss() is None and model.aux_loss() is not None
    assert torch.equal(twin.routing_counts(), model.routing_counts())
    with torch.no_grad():
        torch.testing.assert_close(twin.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_patch_tokens_need_a_lookback_that_is_a_multiple_of_the_patch() -> None:
    model = build_model("moe_transformer", {**TINY, "tokens": "patch", "patch_len": 8}, SHAPE)
    assert model.embed_gate.in_features == 8
    with pytest.raises(ConfigError, match="models.m: patch_len: the lookback 24 is not a multiple of the patch length 16"):
        build_model("moe_transformer", {**TINY, "tokens": "patch", "patch_len": 16}, SHAPE, "models.m")


def test_expert_width_follows_the_released_code_unless_set() -> None:
    model = build_model("moe_transformer", {**TINY, "d_ff": 32, "top_k": 2}, SHAPE)
    moe = model.layers[0].moe
    assert moe.experts[0].gate.out_features == 16 and moe.shared.gate.out_features == 32
    wide = build_model("moe_transformer", {**TINY, "expert_ff": 24}, SHAPE).layers[0].moe
    assert wide.experts[3].down.in_features == 24


def test_horizon_is_served_by_the_smallest_head_that_covers_it() -> None:
    torch.manual_seed(0)
    params = {**TINY, "horizons": [8, 4]}
    models = {h: build_model("moe_transformer", params, SeriesShape(24, h, 2)).eval() for h in (3, 4, 8, 20)}
    for model in models.values():  # the heads do not depend on the horizon served
        model.load_state_dict(models[3].state_dict())
    assert models[3].horizons == [4, 8] and [models[h].serving_head(h) for h in (3, 4, 8, 20)] == [0, 0, 1, 1]
    x = torch.randn(3, 24, 2)
    with torch.no_grad():
        y = {h: m(x) for h, m in models.items()}
    assert y[20].shape == (3, 20, 2)
    torch.testing.assert_close(y[3], y[4][:, :3], rtol=0, atol=0)  # head 4, truncated
    torch.testing.assert_close(y[20][:, :8], y[8], rtol=0, atol=0)  # rolled out from head 8's forecast
    # The rollout feeds the forecast back: the next 8 are head 8 run on the series extended by
    # them (rotary positions: the same weights read any context length).
    longer = build_model("moe_transformer", params, SeriesShape(32, 8, 2)).eval()
    longer.load_state_dict(models[3].state_dict())
    with torch.no_grad():
        torch.testing.assert_close(y[20][:, 8:16], longer(torch.cat([x, y[8]], 1)), rtol=1e-5, atol=1e-5)


def test_every_head_learns_inside_the_lookback() -> None:
    torch.manual_seed(0)
    model = build_model("moe_transformer", {**TINY, "horizons": [4, 8]}, SeriesShape(24, 8, 2))
    model(torch.randn(3, 24, 2)).square().mean().backward()
    assert model.heads[0].weight.grad is None  # the forecast loss reaches only the serving head
    model.zero_grad()
    model(torch.randn(3, 24, 2))
    model.aux_loss().backward()
    assert all(head.weight.grad.abs().sum() > 0 for head in model.heads)


@pytest.mark.parametrize(
    "params,key",
    [
        ({"top_k": 5}, "top_k"),
        ({"tokens": "word"}, "tokens"),
        ({"router": "hash"}, "router"),
        ({"d_model": 12, "n_heads": 4}, "n_heads"),  # heads of width 3: rotary codes need pairs
        ({"horizons": [8, 8]}, "horizons"),
        ({"horizons": [0]}, "horizons"),
        ({"aux_weight": -0.1}, "aux_weight"),
        ({"d_ff": 1, "top_k": 2}, "d_ff"),
    ],
)
def test_config_errors_name_the_key(params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"models.m: {key}") as info:
        build_model("moe_transformer", params, SHAPE, "models.m")
    assert key in str(info.value)
