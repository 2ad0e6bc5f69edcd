"""Compression passes: round trip through disk, honest reports, honest sizes, config errors.

The models here are small stand-ins written for these tests (an MLP, an LSTM, an SSM-like
block with tagged recurrent parameters and a Conv1d, an attention block), not seqcomp's own.
"""

from __future__ import annotations

import json

import pytest
import torch
from compress_testkit import rel_err, through_disk
from torch import nn

from seqcomp.compress import (
    PASSES,
    build_pass,
    compress,
    copy_model,
    fp32_model_bytes,
    load_compressed,
    pass_config,
    stored_size,
)
from seqcomp.compress.quant.bitpack import pack_bits, packed_nbytes, unpack_bits
from seqcomp.errors import ConfigError

# torch's own loader warns about TypedStorage when it rebuilds qint8 tensors.
pytestmark = pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")


def _tag(param: nn.Parameter) -> nn.Parameter:
    param._optim = {"lr": 1e-3, "weight_decay": 0.0}
    return param


class MLP(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, 8) -> (N, L, 4)
        return self.net(x)


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0])


class SSMBlock(nn.Module):
    """Diagonal recurrence with tagged A / log_dt, a tagged input projection, conv and norm."""

    def __init__(self, d: int = 8, n: int = 4):
        super().__init__()
        self.log_dt = _tag(nn.Parameter(torch.rand(d) - 3))
        self.A = _tag(nn.Parameter(-torch.rand(d, n)))
        self.B = nn.Linear(8, d)
        _tag(self.B.weight)  # a Linear weight tagged as recurrent must stay fp32 too
        self.conv = nn.Conv1d(d, d, 3, padding=1)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, 8)
        u = self.conv(self.B(x).transpose(1, 2)).transpose(1, 2)  # (N, L, d)
        decay = torch.exp(self.A * self.log_dt.exp()[:, None]).mean(-1)  # (d,)
        h, states = torch.zeros_like(u[:, 0]), []
        for t in range(u.shape[1]):
            h = decay * h + u[:, t]
            states.append(h)
        return self.out(self.norm(torch.stack(states, 1)))


class AttnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return self.head(self.attn(h, h, h, need_weights=False)[0])


class EncoderNet(nn.Module):
    """nn.TransformerEncoderLayer: its eval-mode fused fast path reads ``linear1.weight``."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.proj(x)))


MODELS = {"mlp": MLP, "lstm": LSTMNet, "ssm": SSMBlock, "attn": AttnNet, "encoder": EncoderNet}
PASS_PARAMS = [
    ("fp32", {}),
    ("int8_dynamic", {}),
    ("rtn_weight_sim", {}),
    ("rtn_weight_sim", {"bits": 3, "group_size": 5, "scale_dtype": "float32"}),
]


def _trained(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name]().eval()


def _skeleton(name: str) -> nn.Module:
    torch.manual_seed(123)  # different "untrained" weights
    return MODELS[name]()


def _rows(report: dict) -> dict[str, dict]:
    return {row["name"]: row for row in report["layers"]}


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize(("kind", "params"), PASS_PARAMS)
def test_round_trip_through_disk(kind: str, params: dict, model_name: str) -> None:
    model = _trained(model_name)
    x = torch.randn(3, 12, 8)
    compressed, stored, report = compress(kind, params, model, None)
    assert all(isinstance(t, torch.Tensor) for t in stored.values())
    rebuilt = load_compressed(kind, params, _skeleton(model_name), through_disk(stored))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), compressed(x), rtol=0, atol=1e-6)
    assert report["pass"] == kind and report["simulated"] == PASSES.get(kind).simulated
    assert json.loads(json.dumps(report)) == report
    size = stored_size(stored)
    parts = ("weights_bytes", "scales_bytes", "fp32_bytes", "meta_bytes")
    assert size["bytes"] == sum(size[part] for part in parts)


def test_compress_leaves_the_model_alone_and_fp32_is_exact() -> None:
    model = _trained("ssm")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compressed, stored, report = compress("fp32", None, model, None)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert report["quantized_layers"] == 0
    assert {row["reason"] for row in report["layers"]} == {"baseline"}
    assert stored_size(stored)["bytes"] == fp32_model_bytes(model)
    # rtn 2-bit changes the copy only
    compress("rtn_weight_sim", {"bits": 2}, model, None)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_simulated_passes_say_so_in_their_name() -> None:
    """A pass on fake-quant or dense kernels is named *_sim, and only such a pass is."""
    for kind in PASSES.names():
        simulated = PASSES.get(kind).simulated
        if isinstance(simulated, bool):  # chain's is a property: simulated when one of its steps is
            assert simulated == kind.endswith("_sim"), kind


def test_copy_model_keeps_recurrent_tags() -> None:
    copied = copy_model(_trained("ssm"))
    assert all(hasattr(p, "_optim") for p in (copied.A, copied.log_dt, copied.B.weight))
    assert not copied.training


# ---- int8_dynamic -------------------------------------------------------------------


def test_int8_converts_linear_and_lstm_and_stays_close() -> None:
    model = _trained("lstm")
    x = torch.randn(4, 20, 8)
    compressed, _, report = compress("int8_dynamic", {}, model, None)
    assert report["quantized_layers"] == 2 and report["kernels"].startswith("int8 dynamic")
    assert {row["action"] for row in report["layers"]} == {"int8 dynamic"}
    assert type(compressed.lstm).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert type(compressed.head).__module__.startswith("torch.ao.nn.quantized.dynamic")
    with torch.no_grad():
        assert rel_err(compressed(x), model(x)) < 0.05


def test_int8_reports_what_stayed_fp32_and_why() -> None:
    rows = _rows(compress("int8_dynamic", {}, _trained("ssm"), None)[2])
    assert "SSM recurrent parameter" in rows[""]["reason"]  # the block owns A and log_dt
    assert "SSM recurrent parameter" in rows["B"]["reason"]  # a Linear, but its weight is tagged
    assert rows["out"]["action"] == "int8 dynamic"
    assert rows["conv"]["action"] == "kept fp32" and "no int8 kernel" in rows["conv"]["reason"]
    assert rows["norm"]["action"] == "kept fp32"
    rows = _rows(compress("int8_dynamic", {}, _trained("attn"), None)[2])
    assert rows["proj"]["action"] == "int8 dynamic"
    assert "NonDynamicallyQuantizableLinear" in rows["attn.out_proj"]["reason"]
    assert "in_proj" in rows["attn"]["reason"]


def test_int8_transformer_encoder_layer_runs() -> None:
    model = _trained("encoder")
    x = torch.randn(3, 12, 8)
    compressed, _, report = compress("int8_dynamic", {}, model, None)
    rows = _rows(report)
    assert rows["layer.linear1"]["action"] == rows["layer.linear2"]["action"] == "int8 dynamic"
    assert report["fast_path_disabled"] == ["layer"]
    with torch.no_grad():
        assert rel_err(compressed(x), model(x)) < 0.05


def test_int8_with_nothing_to_quantize_says_so() -> None:
    model = nn.Sequential(nn.Conv1d(4, 4, 3), nn.BatchNorm1d(4)).eval()
    _, _, report = compress("int8_dynamic", {}, model, None)
    assert report["quantized_layers"] == 0 and report["kernels"].startswith("fp32")
    _, _, report = compress("int8_dynamic", {"layers": ["lstm"]}, _trained("mlp"), None)
    assert report["quantized_layers"] == 0
    assert all("not selected" in row["reason"] for row in report["layers"])


def test_int8_size_of_a_big_linear_is_a_quarter() -> None:
    model = nn.Sequential(nn.Linear(512, 512))
    _, stored, report = compress("int8_dynamic", {}, model, None)
    size = stored_size(stored)
    assert size["weights_bytes"] == 512 * 512 and size["scales_bytes"] == 16
    assert size["fp32_bytes"] == 512 * 4  # bias
    assert 3.9 < fp32_model_bytes(model) / size["bytes"] <= 4.0
    assert report["quantized_layers"] == 1


def test_bytes_by_group_sums_to_the_stored_size_and_names_each_part() -> None:
    from seqcomp.compress.quant.size import UNASSIGNED, bytes_by_group

    model = nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64))
    groups = {"0.weight": "linear", "0.bias": "other", "1.weight": "other", "1.bias": "other"}
    _, stored, _ = compress("rtn_weight_sim", {"bits": 4}, model, None)
    by_group = bytes_by_group(stored, groups)
    size = stored_size(stored)
    assert sum(by_group.values()) == size["bytes"] and UNASSIGNED not in by_group
    assert by_group["linear"] == size["weights_bytes"] + size["scales_bytes"] + size["meta_bytes"]  # codes, scales, shape
    assert by_group["other"] == (64 + 64 + 64) * 4  # bias and norm left fp32
    _, int8, _ = compress("int8_dynamic", {}, model, None)  # a qint8 weight: its scale and zero point count too
    assert bytes_by_group(int8, groups)["linear"] == 64 * 64 + 16 and sum(bytes_by_group(int8, groups).values()) == \
        stored_size(int8)["bytes"]
    assert bytes_by_group({"step": torch.zeros(1, dtype=torch.int64)}, groups) == {UNASSIGNED: 8}  # a buffer


# ---- rtn_weight_sim -----------------------------------------------------------------


def _rtn_weight_error(bits: int, group_size: int | None = None) -> float:
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(64, 64))
    original = layer[0].weight.detach().clone()
    compressed = compress("rtn_weight_sim", {"bits": bits, "group_size": group_size}, layer, None)[0]
    return rel_err(compressed[0].weight.detach(), original)


def test_rtn_error_grows_as_bits_drop() -> None:
    errors = {bits: _rtn_weight_error(bits) for bits in (2, 3, 4, 8)}
    assert errors[8] < 0.01
    assert errors[2] > errors[3] > errors[4] > errors[8]
    assert _rtn_weight_error(4, group_size=16) < errors[4]


def test_rtn_8_bit_is_nearly_lossless() -> None:
    model = _trained("lstm")
    x = torch.randn(4, 20, 8)
    compressed, _, report = compress("rtn_weight_sim", {"bits": 8}, model, None)
    with torch.no_grad():
        assert rel_err(compressed(x), model(x)) < 0.01
    assert all(row["weight_rel_err"] < 0.01 for row in report["layers"] if "weight_rel_err" in row)


@pytest.mark.parametrize("bits", range(2, 9))
def test_bit_packing_round_trips(bits: int) -> None:
    generator = torch.Generator().manual_seed(bits)
    for count in (0, 1, 7, 8, 9, 1000, 4099):
        codes = torch.randint(0, 1 << bits, (count,), generator=generator, dtype=torch.uint8)
        packed = pack_bits(codes, bits)
        assert packed.dtype == torch.uint8
        assert packed.numel() == packed_nbytes(count, bits) == -(-count * bits // 8)
        assert torch.equal(unpack_bits(packed, bits, count), codes)
    assert pack_bits(torch.tensor([1, 2, 15, 0], dtype=torch.uint8), 4).tolist() == [0x21, 0x0F]
    with pytest.raises(ValueError, match="uint8"):
        pack_bits(torch.tensor([0], dtype=torch.int32), bits)
    if bits < 8:
        with pytest.raises(ValueError, match="does not fit"):
            pack_bits(torch.tensor([1 << bits], dtype=torch.uint8), bits)


def test_rtn_4_bit_size() -> None:
    model = nn.Sequential(nn.Linear(256, 256))
    _, stored, _ = compress("rtn_weight_sim", {"bits": 4}, model, None)
    size = stored_size(stored)
    assert size["weights_bytes"] == 256 * 256 // 2
    assert size["scales_bytes"] == 256 * 2  # one fp16 scale per output channel
    assert size["fp32_bytes"] == 256 * 4  # bias
    assert fp32_model_bytes(model) / size["bytes"] >= 7
    big = nn.Sequential(nn.Linear(512, 512, bias=False))
    bytes_ = stored_size(compress("rtn_weight_sim", {}, big, None)[1])["bytes"]
    assert bytes_ == 512 * 512 * 4 // 8 + 512 * 2 + 2 * 8  # codes + scales + shape


def test_rtn_keeps_recurrent_params_and_biases_and_reports_them() -> None:
    model = _trained("ssm")
    compressed, _, report = compress("rtn_weight_sim", {"bits": 2}, model, None)
    rows = _rows(report)
    for name in ("A", "log_dt", "B.weight"):
        assert torch.equal(compressed.get_parameter(name), model.get_parameter(name))
        assert rows[name]["reason"] == "SSM recurrent parameter kept in fp32"
    for name in ("B.bias", "conv.bias", "norm.weight", "out.bias"):
        assert torch.equal(compressed.get_parameter(name), model.get_parameter(name))
        assert rows[name]["reason"] == "1-D parameter kept in fp32"
    for name in ("conv.weight", "out.weight"):
        assert rows[name]["action"] == "int2 rtn per-channel (simulated)"
        assert not torch.equal(compressed.get_parameter(name), model.get_parameter(name))
    assert report["quantized_layers"] == 2 and report["simulated"] is True


def test_rtn_quantizes_attention_projections() -> None:
    rows = _rows(compress("rtn_weight_sim", {}, _trained("attn"), None)[2])
    assert rows["attn.in_proj_weight"]["action"] == "int4 rtn per-channel (simulated)"
    assert rows["attn.out_proj.weight"]["action"] == "int4 rtn per-channel (simulated)"
    assert rows["attn.in_proj_bias"]["reason"] == "1-D parameter kept in fp32"


@pytest.mark.parametrize(("group_size", "groups"), [(16, 4), (24, 3), (64, 1), (1000, 1)])
def test_rtn_group_sizes(group_size: int, groups: int) -> None:
    model = nn.Sequential(nn.Linear(64, 10))
    compressed, stored, report = compress("rtn_weight_sim", {"group_size": group_size}, model, None)
    assert stored["0.weight.scales"].shape == (10, groups)
    assert report["layers"][0]["action"] == f"int4 rtn group {group_size} (simulated)"
    skeleton = nn.Sequential(nn.Linear(64, 10))
    rebuilt = load_compressed("rtn_weight_sim", {"group_size": group_size}, skeleton, stored)
    assert torch.equal(rebuilt[0].weight, compressed[0].weight)


def test_rtn_pack_refuses_stale_codes_and_unpack_checks_keys() -> None:
    rtn = build_pass("rtn_weight_sim", {})
    model, _ = rtn.apply(copy_model(_trained("mlp")), None)
    stored = rtn.pack(model)
    with torch.no_grad():
        model.net[0].weight.add_(1.0)
    with pytest.raises(ValueError, match="changed after quantization"):
        rtn.pack(model)
    with pytest.raises(ValueError, match="wrong pass config"):
        build_pass("rtn_weight_sim", {"group_size": 4}).unpack(_skeleton("mlp"), stored)
    del stored["net.0.bias"]
    with pytest.raises(ValueError, match="missing"):
        rtn.unpack(_skeleton("mlp"), stored)


# ---- config errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "params", "key"),
    [
        ("rtn_weight_sim", {"bits": 1}, "bits"),
        ("rtn_weight_sim", {"bits": 9}, "bits"),
        ("rtn_weight_sim", {"bits": 4.0}, "bits"),
        ("rtn_weight_sim", {"group_size": 0}, "group_size"),
        ("rtn_weight_sim", {"scale_dtype": "bfloat16"}, "scale_dtype"),
        ("rtn_weight_sim", {"bitz": 4}, "bitz"),
        ("int8_dynamic", {"dtype": "quint4x2"}, "dtype"),
        ("int8_dynamic", {"layers": ["conv"]}, "layers"),
        ("int8_dynamic", {"layers": []}, "layers"),
        ("fp32", {"bits": 8}, "bits"),
    ],
)
def test_config_errors_name_the_key(kind: str, params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        pass_config(kind, params, "compress.passes[0]")
    with pytest.raises(ConfigError, match=r"compress\.passes\[0\]"):
        build_pass(kind, params, "compress.passes[0]")
