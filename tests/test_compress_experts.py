"""Compression of a mixture-of-experts model: the experts / router / shared_expert groups
(quant/groups.py, declared by the model), their bits, and the report's per-expert sensitivity
and routing (compress/experts.py)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch
from compress_testkit import SHAPE, TINY, registry_model, round_trip, windows
from torch import nn

from seqcomp.compress import compress, pass_config
from seqcomp.compress.quant.bitpack import packed_nbytes, unpack_bits
from seqcomp.compress.quant.common import copy_model
from seqcomp.compress.quant.groups import expert_layers, named_groups
from seqcomp.errors import ConfigError
from seqcomp.models import build_model

MOE = {"d_model": 8, "n_heads": 2, "n_layers": 2, "d_ff": 16, "n_experts": 4, "top_k": 2}
ALL = ["linear", "experts", "router", "shared_expert"]


def _moe(seed: int = 0, **over: object) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("moe_transformer", {**MOE, **over}, SHAPE).eval()


def _groups(model: nn.Module) -> dict[str, str]:
    return {name: group for name, _, _, _, group in named_groups(model)}


def _rows(report: dict) -> dict[str, dict]:
    return {row["name"]: row for row in report["layers"]}


def test_an_moe_declares_its_experts_router_and_shared_expert() -> None:
    groups = _groups(_moe())
    for layer in range(2):
        moe = f"layers.{layer}.moe"
        weights = [f"{moe}.experts.{e}.{w}.weight" for e in range(4) for w in ("gate", "up", "down")]
        assert {groups[name] for name in weights} == {"experts"}
        assert groups[f"{moe}.router"] == "router"
        assert {groups[f"{moe}.shared.{w}.weight"] for w in ("gate", "up", "down")} == {"shared_expert"}
        assert groups[f"{moe}.shared_gate.weight"] == "shared_expert"
        assert groups[f"layers.{layer}.qkv.weight"] == "linear" and groups[f"layers.{layer}.qkv.bias"] == "other"
    assert groups["heads.0.weight"] == "linear"
    assert expert_layers(_moe()) == [[f"layers.{i}.moe.experts.{e}" for e in range(4)] for i in range(2)]
    # no shared expert: no such group; a centroid router is the router too; RevIN's wrapper keeps the groups
    plain = _groups(_moe(shared_expert=False, router="centroid"))
    assert "shared_expert" not in plain.values() and plain["layers.0.moe.router"] == "router"
    torch.manual_seed(0)
    wrapped = _groups(build_model("moe_transformer", {**MOE, "revin": True}, SHAPE))
    assert {g for n, g in wrapped.items() if ".experts." in n} == {"experts"}


# name -> group of every parameter of each non-MoE registry model, as it was before the MoE groups
# existed (sha256 of the sorted "name:group" lines): adding them changed no other model's groups.
GROUPS_BEFORE = {
    "naive": "e3b0c44298fc1c14", "linear": "d7546e8de6decb2a", "dlinear": "2b3317a55884ef8e",
    "lstm": "9cc8c1a7042a1759", "transformer": "44a3436969ed5d6b", "patchtst": "44a3436969ed5d6b",
    "tsmixer": "20e6557e751b2054", "s4d": "bbdc131f2fc9134f", "s4": "7cad6d6e77413295",
    "mamba": "5a0d23b94b0918d8", "smamba": "2d051501246d7b1f", "spacetime": "36ea23669266f17a",
    "ttm": "0e77cf4b5171d8f8",
}


def test_other_models_groups_are_unchanged() -> None:
    assert set(GROUPS_BEFORE) == set(TINY) - {"moe_transformer"}
    for kind, digest in GROUPS_BEFORE.items():
        model = registry_model(kind)
        assert expert_layers(model) == []
        lines = "\n".join(sorted(f"{name}:{group}" for name, group in _groups(model).items()))
        assert hashlib.sha256(lines.encode()).hexdigest()[:16] == digest, kind


def test_default_groups_code_the_experts_and_shared_expert_not_the_router() -> None:
    model = _moe()
    compressed, _, report = compress("rtn_weight_sim", {"bits": 4}, model, None)
    rows = _rows(report)
    assert rows["layers.0.moe.router"]["reason"] == "group 'router' not selected; kept fp32"
    assert torch.equal(compressed.layers[0].moe.router, model.layers[0].moe.router)
    assert rows["layers.1.moe.experts.3.down.weight"]["action"] == "int4 rtn per-channel (simulated)"
    assert rows["layers.1.moe.shared_gate.weight"]["action"] == "int4 rtn per-channel (simulated)"
    summary = report["group_summary"]
    assert summary["experts"]["quantized_numel"] == summary["experts"]["numel"] > summary["shared_expert"]["numel"] > 0
    assert summary["router"]["quantized_numel"] == 0


def _check_stored_bits(
    model: nn.Module, compressed: nn.Module, stored: dict, report: dict, bits: dict[str, int]
) -> None:
    """Every coded weight of each group holds codes of exactly its group's bits: packed size, tag,
    code range and the number of distinct values per row of the weight the model runs on."""
    groups, rows = _groups(model), _rows(report)
    seen = set()
    for name, group in groups.items():
        if group not in bits:
            continue
        b, param = bits[group], compressed.get_parameter(name)
        assert rows[name]["bits"] == b, name
        assert stored[f"{name}.codes"].numel() == packed_nbytes(param.numel(), b), name
        assert int(unpack_bits(stored[f"{name}.codes"], b, param.numel()).max()) < 2**b
        assert int(stored[f"{name}.bits"]) == b if b != report["bits"] else f"{name}.bits" not in stored
        assert max(len(row.unique()) for row in param.detach().reshape(param.shape[0], -1)) <= 2**b - 1, name
        assert not torch.equal(param, model.get_parameter(name))
        seen.add(group)
    assert seen == set(bits)


@pytest.mark.parametrize("kind", ["rtn_weight_sim", "gptq_weight_sim"])
def test_experts_router_and_shared_expert_get_their_own_bits(kind: str) -> None:
    params = {"bits": 4, "groups": ALL, "group_bits": {"experts": 2, "router": 8, "shared_expert": 3}}
    compressed, stored, report = round_trip(kind, params, _moe, windows(4), calib=windows(16))
    _check_stored_bits(_moe(), compressed, stored, report,
                       {"linear": 4, "experts": 2, "router": 8, "shared_expert": 3})
    assert report["group_bits"] == {"experts": 2, "router": 8, "shared_expert": 3}
    if kind == "gptq_weight_sim":  # GPTQ for the Linear experts, RTN for the bare router matrix
        rows = _rows(report)
        assert rows["layers.0.moe.experts.1.up.weight"]["action"] == "int2 gptq per-channel (simulated)"
        assert "gptq fallback" in rows["layers.0.moe.router"]["action"]


@pytest.mark.parametrize("kind", ["vq_sim", "prune_sim", "mixed_precision_sim", "qat_sim", "int8_static_sim"])
def test_every_grouped_pass_can_select_the_experts_alone(kind: str) -> None:
    model, x = _moe(), windows(16)
    y = torch.randn(16, SHAPE.horizon, SHAPE.channels)
    extra = {"vq_sim": {"dim": 2, "codebook_size": 8}, "qat_sim": {"epochs": 1}, "mixed_precision_sim": {"avg_bits": 4}}
    params = {"groups": ["experts"], **extra.get(kind, {})}
    compressed, _, report = compress(kind, params, model, x, validation=(x, y))
    coded = {row["name"] for row in report["layers"] if row["action"] != "kept fp32"}
    experts = {name for name, group in _groups(model).items() if group == "experts"}
    assert coded == experts
    if kind != "qat_sim":  # QAT fine-tunes every weight, coding only the selected ones
        assert torch.equal(compressed.layers[0].moe.shared.up.weight, model.layers[0].moe.shared.up.weight)


def test_group_bits_must_name_a_selected_expert_group() -> None:
    with pytest.raises(ConfigError, match="group_bits.experts"):
        pass_config("rtn_weight_sim", {"groups": ["linear"], "group_bits": {"experts": 2}}, "pass")
    with pytest.raises(ConfigError, match="groups"):
        pass_config("gptq_weight_sim", {"groups": ["linear", "expert"]}, "pass")


def _spec(kind: str, params: dict) -> dict:
    return {"dataset": "tiny", "model": "moe", "kind": "moe_transformer", "params": MOE, "lookback": SHAPE.lookback,
            "horizon": SHAPE.horizon, "seed": 0, "pass": "p", "pass_kind": kind, "pass_params": params,
            "calibration": {"windows": 16}}


def test_the_report_gives_each_experts_sensitivity_and_test_routing(tiny_data: Path) -> None:
    from seqcomp.compress.core import compress_job
    from seqcomp.data.windows import PreparedSeries, job_windows

    series = PreparedSeries.load(tiny_data)
    assert series.channels == SHAPE.channels
    net = _moe()
    spec = _spec("rtn_weight_sim", {"bits": 4, "groups": ALL, "group_bits": {"experts": 2}})
    _, report = compress_job(net, series, spec)
    experts = report["experts"]
    assert experts["layers"] == 2 and experts["experts_per_layer"] == [4, 4]
    assert net.routing_counts().sum() == 0  # the fp32 model was not run (a copy was)

    # routing: the fp32 model's counts over every test window, fractions summing to 1 per layer
    test_x, _ = job_windows(series, spec, "test").tensors()
    probe = copy_model(net)
    with torch.no_grad():
        probe(test_x)
    routing = experts["routing"]
    assert routing["split"] == "test" and routing["windows"] == len(test_x)
    assert routing["fp32"]["counts"] == probe.routing_counts().tolist()
    assert sum(routing["fp32"]["counts"][0]) == len(test_x) * series.channels * SHAPE.lookback * MOE["top_k"]
    for which in ("fp32", "compressed"):
        for counts, fractions in zip(routing[which]["counts"], routing[which]["fractions"]):
            assert sum(fractions) == pytest.approx(1, abs=1e-5)
            assert fractions == pytest.approx([c / sum(counts) for c in counts], abs=1e-6)

    # sensitivity: a finite val-loss increase for every expert; 2-bit experts move the loss
    sens = experts["sensitivity"]
    assert sens["split"] == "val" and sens["loss"] == "mse"
    assert sens["windows"] == len(job_windows(series, spec, "val"))
    assert [len(row) for row in sens["increase"]] == [4, 4]
    assert all(math.isfinite(v) for row in sens["increase"] for v in row)
    assert any(v != 0 for row in sens["increase"] for v in row)
    assert sens["loss_all_experts"] != sens["loss_fp32"]

    # a pass that leaves the experts fp32: every expert's sensitivity is exactly 0
    _, report = compress_job(net, series, _spec("rtn_weight_sim", {"bits": 2, "groups": ["linear"]}))
    sens = report["experts"]["sensitivity"]
    assert sens["increase"] == [[0.0] * 4] * 2 and sens["loss_all_experts"] == sens["loss_fp32"]
    assert sens["loss_compressed"] != sens["loss_fp32"]


def test_a_model_without_experts_has_no_experts_report(tiny_data: Path) -> None:
    from seqcomp.compress.core import compress_job
    from seqcomp.data.windows import PreparedSeries

    series = PreparedSeries.load(tiny_data)
    spec = {**_spec("rtn_weight_sim", {"bits": 4}), "kind": "linear", "params": {}}
    assert series.channels == SHAPE.channels
    net = build_model("linear", {}, SHAPE)
    _, report = compress_job(net, series, spec)
    assert "experts" not in report
    assert set(report["group_summary"]) == {"recurrent", "ssm", "linear", "other"}
