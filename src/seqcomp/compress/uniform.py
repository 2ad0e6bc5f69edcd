"""Uniform integer grids for weights: scale calibration, rounding, bit-packed stored form.

A weight (out, ...) is viewed as rows (out, K) (a 0-D/1-D tensor is one row), each row
optionally cut into groups of ``group_size`` consecutive elements (a ragged last group is
padded for the statistics, and the padding is never stored); each row/group gets one scale.

- symmetric: codes ``c = clamp(round(w / s), -qmax, qmax) + qmax`` with
  ``qmax = 2**(bits-1) - 1``: a restricted grid (one of the 2**bits levels is unused, e.g.
  ternary at 2 bits) so that zero is exact and no zero point is stored;
- asymmetric: all 2**bits levels, ``c = clamp(round(w / s) + z, 0, 2**bits - 1)`` with one
  zero point ``z`` per row/group, stored bit-packed at ``bits`` bits. The range always
  contains 0 so that zero stays exact.

Scale calibration picks the clipping range of each row/group:
- ``minmax``: the full range;
- ``percentile``: the given percentile of |w| (symmetric) or of w and -w (asymmetric);
- ``mse``: grid search over shrink ratios r of the min-max range (1.00, 0.99, ..., 0.20),
  keeping per row/group the r with the least squared reconstruction error.

Scales are rounded to ``scale_dtype`` *before* the weights are rounded, so the dequantized
weight is exactly ``(c - offset) * stored_scale`` and unpacking reproduces it bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seqcomp.compress.bitpack import pack_bits, unpack_bits

CALIBRATIONS = ("minmax", "percentile", "mse")
SCALE_DTYPES = {"float16": torch.float16, "float32": torch.float32}
MSE_RATIOS = torch.linspace(1.0, 0.2, 81)  # shrink ratios searched by the mse calibration


@dataclass(frozen=True)
class QuantizedWeight:
    """One weight's stored form: packed codes (nbytes,) uint8, scales (rows, groups), and for
    an asymmetric grid packed zero points (nbytes,) uint8."""

    codes: torch.Tensor
    scales: torch.Tensor
    shape: torch.Size
    zeros: torch.Tensor | None = None


def as_rows(weight: torch.Tensor) -> torch.Tensor:
    """(out, ...) -> (out, K) in fp32; a 0-D/1-D tensor is a single row (one scale, not one per element)."""
    w = weight.detach().float()
    return w.reshape(1, -1) if w.dim() < 2 else w.reshape(w.shape[0], -1)


def grouped(rows: torch.Tensor, group_size: int | None, pad: float = 0.0) -> torch.Tensor:
    """(R, K) -> (R, G, width), padding the ragged last group of each row with ``pad``."""
    width = rows.shape[1] if group_size is None else min(group_size, rows.shape[1])
    groups = -(-rows.shape[1] // width)
    return F.pad(rows, (0, groups * width - rows.shape[1]), value=pad).view(rows.shape[0], groups, width)


def ungrouped(groups: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of :func:`grouped`: (R, G, w) -> (R, width), dropping the padding."""
    return groups.reshape(groups.shape[0], -1)[:, :width]


def code_max(bits: int, symmetric: bool) -> int:
    """Largest code: 2*qmax on the restricted symmetric grid, 2**bits - 1 otherwise."""
    return 2 * (2 ** (bits - 1) - 1) if symmetric else 2**bits - 1


def _ranges(groups: torch.Tensor, symmetric: bool, calibration: str, percentile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) per group (R, G) from NaN-padded groups (R, G, w), before any mse shrink."""
    if calibration == "percentile":
        q = percentile / 100.0
        if symmetric:
            hi = torch.nanquantile(groups.abs(), q, dim=2)
            return -hi, hi
        return torch.nanquantile(groups, 1 - q, dim=2).clamp(max=0), torch.nanquantile(groups, q, dim=2).clamp(min=0)
    filled = groups.nan_to_num(0.0)  # a padded 0 never widens a range that must contain 0
    if symmetric:
        hi = filled.abs().amax(dim=2)
        return -hi, hi
    return filled.amin(dim=2).clamp(max=0), filled.amax(dim=2).clamp(min=0)


def _scales(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool, scale_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stored scales (rounded to ``scale_dtype``) and float zero points (None if symmetric)."""
    span = hi / (2 ** (bits - 1) - 1) if symmetric else (hi - lo) / (2**bits - 1)
    scales = span.clamp(max=torch.finfo(scale_dtype).max).to(scale_dtype)
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))  # all-zero group: codes hit 0
    if symmetric:
        return scales, None
    zeros = torch.round(-lo / scales.float()).clamp(0, 2**bits - 1)
    return scales, zeros


def offsets(scales: torch.Tensor, zeros: torch.Tensor | None, bits: int) -> torch.Tensor:
    """The code that means 0.0 per group (R, G) in fp32: qmax if symmetric, else the zero point."""
    if zeros is None:
        return torch.full(scales.shape, float(2 ** (bits - 1) - 1))
    return zeros.float()


def round_to_grid(w: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, top: int) -> torch.Tensor:
    """Float codes in [0, top] of ``w`` for broadcastable scale (fp32) and offset."""
    return (torch.round(w / scale) + offset).clamp(0, top)


def fit_grid(
    rows: torch.Tensor,
    bits: int,
    group_size: int | None,
    scale_dtype: torch.dtype,
    symmetric: bool = True,
    calibration: str = "minmax",
    percentile: float = 99.9,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scales (R, G) in ``scale_dtype`` and zero points (R, G) (None if symmetric) for rows (R, K)."""
    groups = grouped(rows, group_size, pad=float("nan"))  # (R, G, w)
    lo, hi = _ranges(groups, symmetric, calibration, percentile)
    if calibration != "mse":
        return _scales(lo, hi, bits, symmetric, scale_dtype)
    top, valid = code_max(bits, symmetric), ~groups.isnan()
    values = groups.nan_to_num(0.0)
    best_err = torch.full(lo.shape, float("inf"))
    best_scales, best_zeros = _scales(lo, hi, bits, symmetric, scale_dtype)
    for ratio in MSE_RATIOS.tolist():
        scales, zeros = _scales(lo * ratio, hi * ratio, bits, symmetric, scale_dtype)
        s, off = scales.float()[..., None], offsets(scales, zeros, bits)[..., None]
        err = (((round_to_grid(values, s, off, top) - off) * s - values) ** 2 * valid).sum(dim=2)  # (R, G)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scales = torch.where(better, scales, best_scales)
        if zeros is not None:
            best_zeros = torch.where(better, zeros, best_zeros)
    return best_scales, best_zeros


def encode(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, bits: int, shape: torch.Size) -> QuantizedWeight:
    """Pack float or integer codes (R, K) and zero points into a :class:`QuantizedWeight`."""
    packed_zeros = None if zeros is None else pack_bits(zeros.reshape(-1).to(torch.uint8), bits)
    return QuantizedWeight(pack_bits(codes.reshape(-1).to(torch.uint8), bits), scales, shape, packed_zeros)


def quantize(
    weight: torch.Tensor,
    bits: int,
    group_size: int | None,
    scale_dtype: torch.dtype,
    *,
    symmetric: bool = True,
    calibration: str = "minmax",
    percentile: float = 99.9,
) -> QuantizedWeight:
    """Round-to-nearest codes of a real ``weight``, one scale (and zero point) per row or row group."""
    if weight.is_complex():
        raise TypeError("quantize a complex tensor through torch.view_as_real (real/imaginary pairs)")
    rows = as_rows(weight)  # (R, K)
    scales, zeros = fit_grid(rows, bits, group_size, scale_dtype, symmetric, calibration, percentile)
    g = grouped(rows, group_size)  # (R, G, w)
    codes = round_to_grid(g, scales.float()[..., None], offsets(scales, zeros, bits)[..., None], code_max(bits, symmetric))
    return encode(ungrouped(codes, rows.shape[1]), scales, zeros, bits, weight.shape)


def dequantize(qw: QuantizedWeight, bits: int, group_size: int | None) -> torch.Tensor:
    """fp32 weight of shape ``qw.shape`` from packed codes, scales and zero points."""
    n_rows = 1 if len(qw.shape) < 2 else qw.shape[0]
    width = qw.shape.numel() // n_rows if n_rows else 0
    codes = unpack_bits(qw.codes, bits, n_rows * width).view(n_rows, width)
    groups = grouped(codes.float(), group_size)  # (R, G, w)
    if qw.scales.shape != groups.shape[:2]:
        raise ValueError(
            f"scales of shape {tuple(qw.scales.shape)} do not match {tuple(groups.shape[:2])} "
            f"for a {tuple(qw.shape)} weight with group_size={group_size}: wrong pass config?"
        )
    zeros = None if qw.zeros is None else unpack_bits(qw.zeros, bits, qw.scales.numel()).view(qw.scales.shape)
    weight = (groups - offsets(qw.scales, zeros, bits)[..., None]) * qw.scales.float()[..., None]
    return ungrouped(weight, width).reshape(qw.shape)
