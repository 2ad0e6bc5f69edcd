"""Weight-only round-to-nearest (RTN) quantization, run as fake-quant on fp32 kernels.

Each weight matrix of nn.Linear, nn.Conv1d (flattened to (out, in*k)), nn.LSTM (every
2-D ``weight_*``) and nn.MultiheadAttention (its input projections, which are Linear weights
held as raw parameters; ``out_proj`` is a Linear) is split into rows, optionally into groups
of ``group_size`` consecutive input elements per row, and each row/group gets one scale:
``scale = max|w| / qmax`` with ``qmax = 2**(bits-1) - 1`` and codes
``q = clamp(round(w / scale), -qmax, qmax)``. The grid is symmetric and restricted (one of
the 2**bits levels is unused, e.g. ternary at 2 bits) so that zero is exact.

When ``group_size`` does not divide a row, the last group of each row is shorter (it is
zero-padded for the max, and the padding is never stored); a ``group_size`` at least the
row length is per-channel.

The model keeps running fp32 kernels on the dequantized weights, so this pass measures the
accuracy of b-bit weights and their true stored size, never a speed-up. Scales are rounded
to ``scale_dtype`` *before* rounding the weights, so the fp32 weights the model runs are
exactly ``codes * stored_scale``, and unpack reproduces them bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from seqcomp.compress.bitpack import pack_bits, unpack_bits
from seqcomp.compress.common import KEPT, entry, is_recurrent, param_modules, summary
from seqcomp.compress.size import CODES_SUFFIX, SCALES_SUFFIX
from seqcomp.registry import check

SHAPE_SUFFIX = ".shape"
_STATE_ATTR = "_seqcomp_rtn"  # on the model: {state-dict key: QuantizedWeight} from apply()
_SCALE_DTYPES = {"float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class QuantizedWeight:
    """One weight's stored form: packed codes (nbytes,) uint8, scales (out, groups)."""

    codes: torch.Tensor
    scales: torch.Tensor
    shape: torch.Size


def _grouped(rows: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """(out, K) -> (out, groups, size), zero-padding the ragged last group of each row."""
    width = rows.shape[1] if group_size is None else min(group_size, rows.shape[1])
    groups = -(-rows.shape[1] // width)
    return F.pad(rows, (0, groups * width - rows.shape[1])).view(rows.shape[0], groups, width)


def quantize(
    weight: torch.Tensor, bits: int, group_size: int | None, scale_dtype: torch.dtype
) -> QuantizedWeight:
    """Symmetric RTN codes of ``weight`` (out, ...), one scale per row or row group."""
    rows = weight.detach().float().reshape(weight.shape[0], -1)  # (out, K)
    groups = _grouped(rows, group_size)  # (out, G, width)
    qmax = 2 ** (bits - 1) - 1
    scales = (groups.abs().amax(dim=2) / qmax).clamp(max=torch.finfo(scale_dtype).max).to(scale_dtype)
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))  # all-zero group: codes are 0
    q = torch.round(groups / scales.float()[..., None]).clamp(-qmax, qmax)  # (out, G, width)
    codes = (q.reshape(rows.shape[0], -1)[:, : rows.shape[1]] + qmax).to(torch.uint8)  # (out, K)
    return QuantizedWeight(pack_bits(codes.reshape(-1), bits), scales, weight.shape)


def dequantize(qw: QuantizedWeight, bits: int, group_size: int | None) -> torch.Tensor:
    """fp32 weight of shape ``qw.shape`` from packed codes and scales."""
    out = qw.shape[0]
    width = qw.shape.numel() // out
    codes = unpack_bits(qw.codes, bits, out * width).view(out, width)
    groups = _grouped(codes.float() - (2 ** (bits - 1) - 1), group_size)  # (out, G, w)
    if qw.scales.shape != groups.shape[:2]:
        raise ValueError(
            f"scales of shape {tuple(qw.scales.shape)} do not match {tuple(groups.shape[:2])} "
            f"for a {tuple(qw.shape)} weight with group_size={group_size}: wrong pass config?"
        )
    weight = groups * qw.scales.float()[..., None]
    return weight.reshape(out, -1)[:, :width].reshape(qw.shape)


def _why_not(module: nn.Module, pname: str, param: nn.Parameter) -> str | None:
    """None when the parameter is quantized, else the reason it stays fp32."""
    if is_recurrent(param):
        return "SSM recurrent parameter kept in fp32"
    if param.dim() < 2:
        return "1-D parameter kept in fp32"
    if isinstance(module, (nn.Linear, nn.Conv1d)) and pname == "weight":
        return None
    if isinstance(module, nn.LSTM) and pname.startswith("weight_"):
        return None
    if isinstance(module, nn.MultiheadAttention) and pname.endswith("proj_weight"):
        return None  # in_proj_weight (or q/k/v_proj_weight): Linear weights held raw
    return f"not a Linear/Conv1d/LSTM/attention weight ({type(module).__name__}.{pname}); kept fp32"


class RTNWeightSim:
    """Weight-only b-bit RTN, stored bit-packed, evaluated as fake-quant on fp32 kernels."""

    @dataclass(frozen=True)
    class Config:
        bits: int = 4
        group_size: int | None = None
        scale_dtype: str = "float16"

        def __post_init__(self) -> None:
            check(
                type(self.bits) is int and 2 <= self.bits <= 8,
                "bits",
                f"must be an integer in 2..8, got {self.bits!r}",
            )
            check(
                self.group_size is None or (type(self.group_size) is int and self.group_size > 0),
                "group_size",
                f"must be null (per-channel) or a positive integer, got {self.group_size!r}",
            )
            check(
                self.scale_dtype in _SCALE_DTYPES,
                "scale_dtype",
                f"must be one of {sorted(_SCALE_DTYPES)}, got {self.scale_dtype!r}",
            )

    kind: ClassVar[str] = "rtn_weight_sim"
    simulated: ClassVar[bool] = True

    def __init__(self, config: Config):
        self.config = config

    @property
    def _action(self) -> str:
        c = self.config
        grouping = "per-channel" if c.group_size is None else f"group {c.group_size}"
        return f"int{c.bits} rtn {grouping} (simulated)"

    def _quantize_param(self, param: nn.Parameter) -> tuple[QuantizedWeight, float]:
        """Quantize, write the dequantized weight back in place; return codes and rel. error."""
        c = self.config
        qw = quantize(param, c.bits, c.group_size, _SCALE_DTYPES[c.scale_dtype])
        fake = dequantize(qw, c.bits, c.group_size)
        original = param.detach().float()
        error = float((fake - original).norm() / original.norm().clamp(min=1e-30))
        with torch.no_grad():
            param.copy_(fake)
        return qw, error

    def apply(self, model: nn.Module, calib: torch.Tensor | None) -> tuple[nn.Module, dict[str, Any]]:
        """Fake-quantize the eligible weights in place; one report row per parameter.

        ``calib`` is unused (RTN is data-free).
        """
        state: dict[str, QuantizedWeight] = {}
        layers = []
        for mod_name, module in param_modules(model):
            for pname, param in module.named_parameters(recurse=False):
                name = f"{mod_name}.{pname}" if mod_name else pname
                kind = type(module).__name__
                reason = _why_not(module, pname, param)
                if reason is not None:
                    layers.append(entry(name, kind, param.numel(), KEPT, reason))
                    continue
                state[name], error = self._quantize_param(param)
                row = entry(name, kind, param.numel(), self._action)
                layers.append({**row, "weight_rel_err": round(error, 6)})
        setattr(model, _STATE_ATTR, state)
        return model, {**self._header(), **summary(layers), "layers": layers}

    def _header(self) -> dict[str, Any]:
        c = self.config
        return {
            "pass": self.kind,
            "simulated": self.simulated,
            "kernels": "fake-quant on fp32",
            "note": f"fake-quant: weights stored as packed int{c.bits} codes + scales, "
            "computed in fp32; no speed-up claimed",
            "bits": c.bits,
            "group_size": c.group_size,
            "scale_dtype": c.scale_dtype,
        }

    def pack(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Packed codes, scales and shape per quantized weight; every other tensor as is."""
        state: dict[str, QuantizedWeight] | None = getattr(model, _STATE_ATTR, None)
        if state is None:
            raise ValueError("rtn_weight_sim.pack needs a model returned by apply() or unpack()")
        stored: dict[str, torch.Tensor] = {}
        for key, value in model.state_dict().items():
            if key not in state:
                stored[key] = value.detach().clone()
                continue
            qw = state[key]
            if not torch.equal(dequantize(qw, self.config.bits, self.config.group_size), value):
                raise ValueError(f"{key} changed after quantization; its codes no longer describe it")
            stored[key + CODES_SUFFIX] = qw.codes.clone()
            stored[key + SCALES_SUFFIX] = qw.scales.clone()
            stored[key + SHAPE_SUFFIX] = torch.tensor(qw.shape, dtype=torch.int64)
        return stored

    def unpack(self, skeleton: nn.Module, stored: dict[str, torch.Tensor]) -> nn.Module:
        """Dequantize every weight that has codes in ``stored``; load the rest as is."""
        state: dict[str, QuantizedWeight] = {}
        values: dict[str, torch.Tensor] = {}
        for key, value in skeleton.state_dict().items():
            if key + CODES_SUFFIX not in stored:
                values[key] = stored.get(key, value)  # a missing key is caught by the check below
                continue
            shape = torch.Size(stored[key + SHAPE_SUFFIX].tolist())
            if shape != value.shape:
                raise ValueError(f"{key}: stored shape {tuple(shape)} != model's {tuple(value.shape)}")
            state[key] = QuantizedWeight(stored[key + CODES_SUFFIX], stored[key + SCALES_SUFFIX], shape)
            values[key] = dequantize(state[key], self.config.bits, self.config.group_size)
        expected = set(values) - set(state)
        expected |= {key + end for key in state for end in (CODES_SUFFIX, SCALES_SUFFIX, SHAPE_SUFFIX)}
        if expected != set(stored):
            raise ValueError(
                f"stored form does not match the model: missing {sorted(expected - set(stored))}, "
                f"unexpected {sorted(set(stored) - expected)}"
            )
        skeleton.load_state_dict(values)
        setattr(skeleton, _STATE_ATTR, state)
        return skeleton.eval()
