"""GPTQ's rounding: second-order weight-only quantization of one layer from its inputs' Hessian.

Paper: "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers",
Elias Frantar, Saleh Ashkboos, Torsten Hoefler and Dan Alistarh, ICLR 2023 (arXiv:2210.17323).

For a Linear with weight W (out, in) and calibration inputs X (n, in), GPTQ minimises
||W X^T - Q X^T||^2 over grid points Q one input column at a time: quantize column j, then
spread its error onto the not-yet-quantized columns through the inverse Hessian
H^-1, H = 2 X^T X / n (+ ``percdamp`` * mean(diag H) on the diagonal, for stability). Using
the upper Cholesky factor U of H^-1 (H^-1 = U^T U) the update for column j is
``W[:, j:] -= (w_j - q_j) / U[j, j] * U[j, j:]``; ``block_size`` columns are updated eagerly and
the rest lazily in one matmul per block. ``act_order`` visits columns by decreasing diag(H).

The grid and stored form are RTN's (uniform.py): the same bits, groups and scale calibration,
so GPTQ and RTN differ only in how weights are rounded. Scales are fixed from the original
weights (per channel, or per group with ``act_order``, the "static groups" variant so groups
stay consecutive on disk); without ``act_order`` a group's scales are fitted when GPTQ reaches
its first column, on the weights as updated so far, as in the paper.

Shared by gptq_weight_sim (one bit-width) and mixed_precision_sim (one per layer), so that the
two quantize the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from seqcomp.compress.quant.coded import Parts, Target, real_view, write_back
from seqcomp.compress.quant.common import run_calibration
from seqcomp.compress.quant.uniform import (
    QuantizedWeight,
    as_rows,
    code_max,
    encode,
    fit_grid,
    offsets,
    round_to_grid,
    scale_unit,
    scale_values,
)


def hessian(model: nn.Module, layer: nn.Linear, calib: torch.Tensor) -> torch.Tensor:
    """H = 2 X^T X / n (in, in) in float64 from the inputs ``layer`` receives on ``calib``."""
    total = torch.zeros(layer.in_features, layer.in_features, dtype=torch.float64)
    count = 0

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        nonlocal total, count
        x = args[0].detach().reshape(-1, layer.in_features).double()  # (n, in)
        total += x.T @ x
        count += x.shape[0]

    run_calibration(model, calib, [layer.register_forward_pre_hook(hook)])
    if count == 0:
        raise ValueError("the layer was never called on the calibration windows")
    return 2 * total / count


def in_call_order(model: nn.Module, targets: list[Target], x: torch.Tensor) -> list[Target]:
    """``targets`` sorted by when their module is first called on ``x`` (never-called ones last)."""
    order: dict[int, int] = {}

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        order.setdefault(id(module), len(order))

    modules = {id(t.module): t.module for t in targets}.values()
    run_calibration(model, x, [m.register_forward_pre_hook(hook) for m in modules])
    return sorted(targets, key=lambda t: order.get(id(t.module), len(targets)))


def gptq_able(target: Target) -> bool:
    """Whether GPTQ can round ``target``: an nn.Linear weight, whose input is one tensor X."""
    return isinstance(target.module, nn.Linear) and target.pname == "weight"


def code_in_order(
    model: nn.Module,
    targets: list[Target],
    calib: torch.Tensor,
    code: Callable[[Target, torch.Tensor | None], tuple[Parts, str]],
    decode: Callable[[Parts, torch.Size], torch.Tensor],
) -> dict[str, tuple[Parts, str]]:
    """{name: (parts, action)}: ``targets`` coded in forward order, each decoded into the model
    before the next, so every layer's Hessian comes from the already coded layers upstream.

    ``code(target, h)`` gets the Hessian ``h`` of the target's inputs on ``calib`` when
    :func:`gptq_able`, else None. Shared by gptq_weight_sim (one bit-width) and mixed precision
    (one per layer), so that the two quantize the same way.
    """
    coded: dict[str, tuple[Parts, str]] = {}
    for t in in_call_order(model, targets, calib[:1]):
        coded[t.name] = code(t, hessian(model, t.module, calib) if gptq_able(t) else None)
        write_back(t.param, decode(coded[t.name][0], real_view(t.param).shape))
    return coded


@dataclass(frozen=True)
class GPTQSettings:
    percdamp: float  # dampening, as a fraction of mean(diag H)
    act_order: bool  # visit columns by decreasing diag(H)
    block_size: int  # columns updated eagerly before one lazy matmul


DEFAULT_SETTINGS = GPTQSettings(percdamp=0.01, act_order=False, block_size=128)


def gptq_quantize(
    weight: torch.Tensor,
    h: torch.Tensor,
    bits: int,
    group_size: int | None,
    scale_dtype: torch.dtype,
    settings: GPTQSettings,
    symmetric: bool = True,
    calibration: str = "minmax",
    percentile: float = 99.9,
) -> QuantizedWeight:
    """GPTQ codes of ``weight`` (out, in) given the Hessian ``h`` (in, in) of its inputs."""
    w = as_rows(weight).double().clone()  # (R, K)
    n_rows, k = w.shape
    h = h.double().clone()
    dead = torch.diagonal(h) == 0  # inputs that are always zero: any weight works, use 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    static = settings.act_order or group_size is None
    # fp8 scales: one unit for the tensor, from the original weights (a group fitted later on
    # updated weights that outgrew the range saturates at the fp8 max and clips)
    unit = scale_unit(w.float(), bits, symmetric, scale_dtype)
    grid = (scale_dtype, symmetric, calibration, percentile, unit)
    scales, zeros = fit_grid(w.float(), bits, group_size, *grid) if static else (None, None)
    if not static:
        n_groups = -(-k // group_size)
        scales = torch.empty(n_rows, n_groups, dtype=scale_dtype)
        zeros = None if symmetric else torch.empty(n_rows, n_groups)
    perm = torch.argsort(torch.diagonal(h), descending=True) if settings.act_order else torch.arange(k)
    w, h = w[:, perm], h[perm][:, perm]
    h += settings.percdamp * torch.diagonal(h).mean() * torch.eye(k, dtype=h.dtype)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)  # H^-1 = U^T U
    codes = torch.zeros(n_rows, k)
    top, width = code_max(bits, symmetric), group_size or k
    for b0 in range(0, k, settings.block_size):
        b1 = min(b0 + settings.block_size, k)
        block, errors = w[:, b0:b1].clone(), torch.zeros(n_rows, b1 - b0, dtype=w.dtype)
        for j in range(b1 - b0):
            col = int(perm[b0 + j])  # the column's index in the stored (natural) order
            g = col // width
            if not static and col % width == 0:  # first column of a group: fit it on current weights
                ahead = torch.cat([block[:, j:], w[:, b1:]], dim=1)[:, :width].float()
                s, z = fit_grid(ahead, bits, None, *grid)
                scales[:, g] = s[:, 0]
                if zeros is not None:
                    zeros[:, g] = z[:, 0]
            s, off = scale_values(scales[:, g], unit).double(), offsets(scales, zeros, bits)[:, g].double()
            c = round_to_grid(block[:, j], s, off, top)  # (R,)
            codes[:, col] = c.float()
            errors[:, j] = (block[:, j] - (c - off) * s) / u[b0 + j, b0 + j]
            block[:, j:] -= errors[:, j : j + 1] * u[b0 + j, b0 + j : b1][None, :]
        w[:, b1:] -= errors @ u[b0:b1, b1:]
    return encode(codes, scales, zeros, bits, weight.shape, unit)
