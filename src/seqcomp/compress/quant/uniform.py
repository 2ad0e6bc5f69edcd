"""Uniform integer grids for weights: scale calibration, rounding, bit-packed stored form.

A weight (out, ...) is viewed as rows (out, K) (a 0-D/1-D tensor is one row, and so is an
elementwise parameter that a pass flattens before quantizing it), each row optionally cut
into groups of ``group_size`` consecutive elements (a ragged last group is padded for the
statistics, and the padding is never stored); each row/group gets one scale.

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
fp16/fp32 scales are stored as they are. ``float8_e4m3`` scales are double-quantized (QLoRA,
Dettmers et al. 2023, arXiv:2305.14314): stored as FP8 e4m3 codes of ``scale / unit`` with one
fp32 ``unit`` per tensor, the per-tensor min-max scale / 448 (e4m3's largest value), so that
no row/group scale saturates and a row/group down to 2**-6 / 448 (1/28,672) of the tensor's
range keeps a normal e4m3 scale (below 2**-9 / 448 it underflows to 0 and gets scale = unit:
its weights round to about 0). e4m3 keeps 3 mantissa bits: a scale is off by up to 1/16 of
itself, which the weights absorb since they are rounded on the decoded scale. Why: on a small
model the 2 bytes per row/group of fp16 scales are a large share of the stored bytes (0.25-2.3
bits per weight at rows of 7-64 inputs); fp8 halves that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seqcomp.compress.quant.bitpack import pack_bits, unpack_bits

CALIBRATIONS = ("minmax", "percentile", "mse")
SCALE_DTYPES = {"float16": torch.float16, "float32": torch.float32}  # scales stored as they are
UNIT_SCALE_DTYPES = {"float8_e4m3": torch.float8_e4m3fn}  # codes of scale / unit, one fp32 unit per tensor
GRID_SCALE_DTYPES = {**SCALE_DTYPES, **UNIT_SCALE_DTYPES}  # what the uniform grid accepts
MSE_RATIOS = torch.linspace(1.0, 0.2, 81)  # shrink ratios searched by the mse calibration


@dataclass(frozen=True)
class QuantizedWeight:
    """One weight's stored form: packed codes (nbytes,) uint8, scales (rows, groups), and for
    an asymmetric grid packed zero points (nbytes,) uint8; with fp8 scales the fp32 ``unit``
    (0-D) they are codes of."""

    codes: torch.Tensor
    scales: torch.Tensor
    shape: torch.Size
    zeros: torch.Tensor | None = None
    unit: torch.Tensor | None = None


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


def _span(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """The scale (step) that maps the range [lo, hi] onto the grid."""
    return hi / (2 ** (bits - 1) - 1) if symmetric else (hi - lo) / (2**bits - 1)


def scale_unit(rows: torch.Tensor, bits: int, symmetric: bool, scale_dtype: torch.dtype) -> torch.Tensor | None:
    """The fp32 unit (0-D) of a tensor's fp8 scales: its min-max per-tensor scale / the fp8 max,
    so every row/group scale of any calibration fits; None for scales stored as they are."""
    if scale_dtype not in UNIT_SCALE_DTYPES.values():
        return None
    lo, hi = _ranges(rows.reshape(1, 1, -1), symmetric, "minmax", 100.0)  # the whole tensor's range (1, 1)
    unit = _span(lo, hi, bits, symmetric)[0, 0] / torch.finfo(scale_dtype).max
    return torch.where(unit > 0, unit, torch.ones_like(unit)).float()  # all-zero tensor: any unit


def scale_values(scales: torch.Tensor, unit: torch.Tensor | None) -> torch.Tensor:
    """The fp32 scales that stored ``scales`` (and their ``unit``, if double-quantized) decode to."""
    return scales.float() if unit is None else scales.float() * unit


def _scales(
    lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool, scale_dtype: torch.dtype, unit: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stored scales (rounded to ``scale_dtype``, in units of ``unit`` if given) and float zero
    points (None if symmetric)."""
    if (unit is None) != (scale_dtype not in UNIT_SCALE_DTYPES.values()):
        raise ValueError(f"{scale_dtype} scales need a unit exactly when they are fp8 codes")
    span = _span(lo, hi, bits, symmetric) / (1.0 if unit is None else unit)
    scales = span.clamp(max=torch.finfo(scale_dtype).max).to(scale_dtype).float()
    scales = torch.where(scales > 0, scales, torch.ones_like(scales)).to(scale_dtype)  # all-zero group: codes hit 0
    if symmetric:
        return scales, None
    zeros = torch.round(-lo / scale_values(scales, unit)).clamp(0, 2**bits - 1)
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
    unit: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scales (R, G) in ``scale_dtype`` and zero points (R, G) (None if symmetric) for rows (R, K).

    fp8 scales are codes in units of ``unit`` (:func:`scale_unit` of the whole tensor).
    """
    groups = grouped(rows, group_size, pad=float("nan"))  # (R, G, w)
    lo, hi = _ranges(groups, symmetric, calibration, percentile)
    if calibration != "mse":
        return _scales(lo, hi, bits, symmetric, scale_dtype, unit)
    top, valid = code_max(bits, symmetric), ~groups.isnan()
    values = groups.nan_to_num(0.0)
    best_err = torch.full(lo.shape, float("inf"))
    best_scales, best_zeros = _scales(lo, hi, bits, symmetric, scale_dtype, unit)
    for ratio in MSE_RATIOS.tolist():
        scales, zeros = _scales(lo * ratio, hi * ratio, bits, symmetric, scale_dtype, unit)
        s, off = scale_values(scales, unit)[..., None], offsets(scales, zeros, bits)[..., None]
        err = (((round_to_grid(values, s, off, top) - off) * s - values) ** 2 * valid).sum(dim=2)  # (R, G)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scales = torch.where(better, scales.float(), best_scales.float()).to(scale_dtype)  # no fp8 where
        if zeros is not None:
            best_zeros = torch.where(better, zeros, best_zeros)
    return best_scales, best_zeros


def encode(
    codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, bits: int, shape: torch.Size,
    unit: torch.Tensor | None = None,
) -> QuantizedWeight:
    """Pack float or integer codes (R, K) and zero points into a :class:`QuantizedWeight`."""
    packed_zeros = None if zeros is None else pack_bits(zeros.reshape(-1).to(torch.uint8), bits)
    return QuantizedWeight(pack_bits(codes.reshape(-1).to(torch.uint8), bits), scales, shape, packed_zeros, unit)


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
    unit = scale_unit(rows, bits, symmetric, scale_dtype)
    scales, zeros = fit_grid(rows, bits, group_size, scale_dtype, symmetric, calibration, percentile, unit)
    g = grouped(rows, group_size)  # (R, G, w)
    s = scale_values(scales, unit)[..., None]
    codes = round_to_grid(g, s, offsets(scales, zeros, bits)[..., None], code_max(bits, symmetric))
    return encode(ungrouped(codes, rows.shape[1]), scales, zeros, bits, weight.shape, unit)


def grid_codes(qw: QuantizedWeight, bits: int, group_size: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Float codes (R, G, w), the code that means 0.0 per group (R, G) and the row width of ``qw``:
    the discrete half of a stored weight, for :func:`dequantize` and for passes that update codes
    and scales apart (pv_tune_sim).

    Scales with a single row on a weight of several rows mean it was quantized flattened (one
    row of ``qw.shape.numel()``); both forms agree when the weight has one row."""
    n_rows = 1 if len(qw.shape) < 2 or qw.scales.shape[0] == 1 else qw.shape[0]
    width = qw.shape.numel() // n_rows if n_rows else 0
    codes = unpack_bits(qw.codes, bits, n_rows * width).view(n_rows, width)
    groups = grouped(codes.float(), group_size)  # (R, G, w)
    if qw.scales.shape != groups.shape[:2]:
        raise ValueError(
            f"scales of shape {tuple(qw.scales.shape)} do not match {tuple(groups.shape[:2])} "
            f"for a {tuple(qw.shape)} weight with group_size={group_size}: wrong pass config?"
        )
    zeros = None if qw.zeros is None else unpack_bits(qw.zeros, bits, qw.scales.numel()).view(qw.scales.shape)
    return groups, offsets(qw.scales, zeros, bits), width


def dequantize(qw: QuantizedWeight, bits: int, group_size: int | None) -> torch.Tensor:
    """fp32 weight of shape ``qw.shape`` from packed codes, scales and zero points."""
    groups, offset, width = grid_codes(qw, bits, group_size)
    weight = (groups - offset[..., None]) * scale_values(qw.scales, qw.unit)[..., None]
    return ungrouped(weight, width).reshape(qw.shape)
