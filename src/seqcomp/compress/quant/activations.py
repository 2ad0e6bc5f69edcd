"""Static activation quantization at layer inputs: calibration, fake-quant hooks, stored form.

Every floating tensor passed positionally to a chosen module (a Linear's input, an LSTM's
input sequence, an SSM kernel's input u, each of attention's q/k/v) gets one per-tensor range
fixed from calibration windows (the train split), and a forward pre-hook fake-quantizes it on
every later call. Ranges come from ``minmax`` (over all calibration batches) or
``percentile`` (the clipping percentiles of each batch of 64 windows, averaged over batches;
Quamba clips the sensitive SSM input at a percentile). Activations computed inside a module (an LSTM's hidden state,
an SSM's state) are not quantized: the report says so.

Stored: ``<module>.act_in<i>.scales`` (fp32 (1,)) and, for integer formats, ``.zeros``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from seqcomp.compress.quant.common import run_calibration
from seqcomp.compress.quant.size import SCALES_SUFFIX, ZEROS_SUFFIX

ACT_CALIBRATIONS = ("minmax", "percentile")
_ATTR = "_seqcomp_act"  # on the model: {module name: {input index: parts}}
_KEY = re.compile(r"^(?:(?P<module>.*)\.)?act_in(?P<index>\d+)(?P<suffix>\.scales|\.zeros)$")
_QUANTILE_MAX = 1 << 24  # torch.quantile's input limit: larger tensors are subsampled

Parts = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ActFormat:
    """How a range becomes stored parts, and how parts fake-quantize a tensor."""

    name: str
    from_range: Callable[[float, float], Parts]
    fake: Callable[[torch.Tensor, Parts], torch.Tensor]


def _uint8_parts(lo: float, hi: float) -> Parts:
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero stays exact (padding, ReLU zeros)
    scale = torch.tensor([(hi - lo) / 255 if hi > lo else 1.0], dtype=torch.float32)
    zero = torch.round(-lo / scale).clamp(0, 255).to(torch.uint8)
    return {SCALES_SUFFIX: scale, ZEROS_SUFFIX: zero}


def _uint8_fake(x: torch.Tensor, parts: Parts) -> torch.Tensor:
    scale, zero = parts[SCALES_SUFFIX], parts[ZEROS_SUFFIX].float()
    return ((torch.round(x / scale) + zero).clamp(0, 255) - zero) * scale


UINT8 = ActFormat("uint8 asymmetric per-tensor", _uint8_parts, _uint8_fake)


def float_format(dtype: torch.dtype, fmax: float) -> ActFormat:
    """Per-tensor scaled float activations: x -> fp(x / s) * s with s = amax / fmax."""

    def from_range(lo: float, hi: float) -> Parts:
        amax = max(abs(lo), abs(hi))
        return {SCALES_SUFFIX: torch.tensor([amax / fmax if amax > 0 else 1.0], dtype=torch.float32)}

    def fake(x: torch.Tensor, parts: Parts) -> torch.Tensor:
        scale = parts[SCALES_SUFFIX]
        return (x / scale).clamp(-fmax, fmax).to(dtype).to(x.dtype) * scale

    return ActFormat(f"{dtype} per-tensor", from_range, fake)


def _floats(args: tuple[Any, ...]) -> list[int]:
    return [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()]


def _batch_range(x: torch.Tensor, calibration: str, percentile: float) -> tuple[float, float]:
    flat = x.detach().float().reshape(-1)
    if calibration == "minmax":
        return float(flat.min()), float(flat.max())
    flat = flat[:: -(-flat.numel() // _QUANTILE_MAX)]
    q = torch.tensor([1 - percentile / 100, percentile / 100])
    lo, hi = torch.quantile(flat, q).tolist()
    return lo, hi


def observe(
    model: nn.Module, names: list[str], calib: torch.Tensor, calibration: str, percentile: float
) -> dict[str, dict[int, tuple[float, float]]]:
    """(lo, hi) of every floating positional input of the named modules over ``calib`` (N, L, C)."""
    seen: dict[str, dict[int, list[tuple[float, float]]]] = {name: {} for name in names}

    def recorder(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            for i in _floats(args):
                seen[name].setdefault(i, []).append(_batch_range(args[i], calibration, percentile))

        return hook

    run_calibration(model, calib, [model.get_submodule(n).register_forward_pre_hook(recorder(n)) for n in names])
    ranges: dict[str, dict[int, tuple[float, float]]] = {}
    for name, inputs in seen.items():
        for i, batches in inputs.items():
            los, his = zip(*batches)
            if calibration == "minmax":
                ranges.setdefault(name, {})[i] = (min(los), max(his))
            else:
                ranges.setdefault(name, {})[i] = (sum(los) / len(los), sum(his) / len(his))
    return ranges


def install(model: nn.Module, quants: dict[str, dict[int, Parts]], fmt: ActFormat) -> None:
    """Fake-quantize the recorded inputs of each module at every call (forward pre-hooks)."""

    def quantizer(inputs: dict[int, Parts]) -> Callable[[nn.Module, tuple[Any, ...]], tuple[Any, ...]]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(fmt.fake(a, inputs[i]) if i in inputs and i in _floats(args) else a for i, a in enumerate(args))

        return hook

    for name, inputs in quants.items():
        model.get_submodule(name).register_forward_pre_hook(quantizer(inputs))
    setattr(model, _ATTR, quants)


def calibrate(
    model: nn.Module, names: list[str], calib: torch.Tensor | None, fmt: ActFormat, calibration: str, percentile: float
) -> dict[str, Any]:
    """Observe, fix and install static input ranges for ``names``; returns report entries."""
    if calib is None:
        raise ValueError("static activation quantization needs calibration windows (calib is None)")
    ranges = observe(model, names, calib, calibration, percentile)
    quants = {name: {i: fmt.from_range(*r) for i, r in inputs.items()} for name, inputs in ranges.items()}
    install(model, quants, fmt)
    return {
        "activations": f"{fmt.name}, static ranges from {len(calib)} training windows ({calibration}"
        + (f" {percentile}" if calibration == "percentile" else "")
        + "), at the positional inputs of every module with quantized parameters; activations "
        "inside a module (LSTM hidden state, SSM state, attention scores) stay fp32",
        "activation_ranges": {name: {str(i): [round(lo, 6), round(hi, 6)] for i, (lo, hi) in inputs.items()} for name, inputs in ranges.items()},
    }


def _key(name: str, index: int) -> str:
    return f"{name}.act_in{index}" if name else f"act_in{index}"


def to_stored(model: nn.Module) -> dict[str, torch.Tensor]:
    """The installed ranges as stored tensors."""
    quants: dict[str, dict[int, Parts]] = getattr(model, _ATTR, {})
    return {
        _key(name, i) + suffix: t.clone()
        for name, inputs in quants.items()
        for i, parts in inputs.items()
        for suffix, t in parts.items()
    }


def from_stored(skeleton: nn.Module, stored: dict[str, torch.Tensor], fmt: ActFormat) -> set[str]:
    """Install the stored ranges on ``skeleton``; returns the keys used."""
    quants: dict[str, dict[int, Parts]] = {}
    used = set()
    for key, tensor in stored.items():
        match = _KEY.match(key)
        if match:
            quants.setdefault(match["module"] or "", {}).setdefault(int(match["index"]), {})[match["suffix"]] = tensor
            used.add(key)
    install(skeleton, quants, fmt)
    return used
