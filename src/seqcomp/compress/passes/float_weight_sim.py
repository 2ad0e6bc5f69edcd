"""Float-format weights (FP8 e4m3 / e5m2, FP4 e2m1) with per-channel scales, optional FP8 activations.

Each row (or group of ``group_size`` inputs) of a selected parameter is scaled so that its
largest magnitude maps to the format's largest finite value (448 for e4m3, 57344 for e5m2,
6 for e2m1), then rounded to the format (round to nearest, ties to even, saturating):
``w ~ fmt(w / s) * s`` with ``s`` stored in ``scale_dtype``.

- FP8 uses torch's own casts (torch.float8_e4m3fn, torch.float8_e5m2); codes are stored as
  the 1-byte float8 bit patterns (as uint8).
- FP4 e2m1 (OCP microscaling spec) has no torch dtype: its 16 codes (sign bit, then index
  into the magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6) are computed here and bit-packed, two per
  byte.
- ``activations: true`` (FP8 only) adds static per-tensor FP8 scales (amax / fmax, from the
  calibration windows) at the inputs of every module with coded weights (quant/activations.py).

Simulated: the model runs fp32 kernels on the decoded weights (``simulated: true``), so no
speed-up is claimed. Real FP8 matmuls (torch._scaled_mm, torchao) need CUDA and GEMM dims
divisible by 16, which ETT's 7 channels break for the input/output layers; that limits real
kernels only, not this simulation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from seqcomp.compress.quant import activations
from seqcomp.compress.quant.activations import ACT_CALIBRATIONS, ActFormat
from seqcomp.compress.quant.bitpack import pack_bits, unpack_bits
from seqcomp.compress.quant.coded import CodedPass, Parts, Target, owner_names
from seqcomp.compress.quant.groups import DEFAULT_GROUPS, check_groups
from seqcomp.compress.quant.size import CODES_SUFFIX, SCALES_SUFFIX
from seqcomp.compress.quant.uniform import SCALE_DTYPES, as_rows, grouped, ungrouped
from seqcomp.registry import check

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])  # magnitudes of FP4 e2m1, by code index


@dataclass(frozen=True)
class FloatFormat:
    bits: int
    fmax: float  # largest finite magnitude
    dtype: torch.dtype | None  # torch's dtype, None for FP4


FORMATS = {
    "e4m3": FloatFormat(8, 448.0, torch.float8_e4m3fn),
    "e5m2": FloatFormat(8, 57344.0, torch.float8_e5m2),
    "e2m1": FloatFormat(4, 6.0, None),
}


def e2m1_codes(x: torch.Tensor) -> torch.Tensor:
    """4-bit e2m1 codes (uint8, sign in bit 3) of ``x``: nearest value, ties to even, saturating at 6."""
    mag = x.abs().clamp(max=6.0)
    lo = (torch.bucketize(mag, E2M1, right=True) - 1).clamp(0, 7)  # largest index with E2M1[lo] <= mag
    hi = (lo + 1).clamp(max=7)
    below, above = mag - E2M1[lo], E2M1[hi] - mag
    up = (above < below) | ((above == below) & (hi % 2 == 0) & (hi != lo))  # even index = even mantissa
    index = torch.where(up, hi, lo)
    return (index + 8 * (x < 0)).to(torch.uint8)


def e2m1_values(codes: torch.Tensor) -> torch.Tensor:
    """fp32 values of e2m1 codes."""
    codes = codes.long()
    return torch.where(codes >= 8, -1.0, 1.0) * E2M1[codes % 8]


class FloatWeightSim(CodedPass):
    """Scaled FP8 / FP4 weights (and FP8 activations), decoded to fp32 kernels."""

    @dataclass(frozen=True)
    class Config:
        format: str = "e4m3"  # e4m3 | e5m2 (FP8) | e2m1 (FP4)
        group_size: int | None = None  # null: one scale per output channel
        scale_dtype: str = "float16"
        activations: bool = False  # FP8 (same format) static per-tensor activation scales
        act_calibration: str = "minmax"  # minmax | percentile
        act_percentile: float = 99.99
        groups: list[str] = field(default_factory=lambda: list(DEFAULT_GROUPS))

        def __post_init__(self) -> None:
            check(self.format in FORMATS, "format", f"must be one of {list(FORMATS)}, got {self.format!r}")
            check(
                self.group_size is None or (type(self.group_size) is int and self.group_size > 0),
                "group_size",
                f"must be null (per-channel) or a positive integer, got {self.group_size!r}",
            )
            check(self.scale_dtype in SCALE_DTYPES, "scale_dtype", f"must be one of {sorted(SCALE_DTYPES)}, got {self.scale_dtype!r}")
            check(isinstance(self.activations, bool), "activations", f"must be true or false, got {self.activations!r}")
            check(
                not self.activations or FORMATS[self.format].dtype is not None,
                "activations",
                f"FP4 activations are not supported (format {self.format!r}); use e4m3 or e5m2",
            )
            check(
                self.act_calibration in ACT_CALIBRATIONS,
                "act_calibration",
                f"must be one of {list(ACT_CALIBRATIONS)}, got {self.act_calibration!r}",
            )
            check(
                isinstance(self.act_percentile, (int, float)) and 50 < self.act_percentile <= 100,
                "act_percentile",
                f"must be a number in (50, 100], got {self.act_percentile!r}",
            )
            check_groups(self.groups)

    kind: ClassVar[str] = "float_weight_sim"
    stage: ClassVar[str] = "quantization"

    @property
    def fmt(self) -> FloatFormat:
        return FORMATS[self.config.format]

    def _act_format(self) -> ActFormat:
        return activations.float_format(self.fmt.dtype, self.fmt.fmax)

    def action(self) -> str:
        c = self.config
        grouping = "per-channel" if c.group_size is None else f"group {c.group_size}"
        acts = f" + {c.format} static input scales" if c.activations else ""
        return f"fp{self.fmt.bits} {c.format} {grouping}{acts} (simulated)"

    def part_suffixes(self) -> tuple[str, ...]:
        return (CODES_SUFFIX, SCALES_SUFFIX)

    def encode(self, weight: torch.Tensor) -> Parts:
        rows = as_rows(weight)  # (R, K)
        groups = grouped(rows, self.config.group_size)  # (R, G, w)
        scale_dtype = SCALE_DTYPES[self.config.scale_dtype]
        scales = (groups.abs().amax(dim=2) / self.fmt.fmax).clamp(max=torch.finfo(scale_dtype).max).to(scale_dtype)
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        scaled = ungrouped((groups / scales.float()[..., None]).clamp(-self.fmt.fmax, self.fmt.fmax), rows.shape[1])
        if self.fmt.dtype is None:
            codes = pack_bits(e2m1_codes(scaled).reshape(-1), 4)
        else:
            codes = scaled.to(self.fmt.dtype).reshape(-1).view(torch.uint8)
        return {CODES_SUFFIX: codes, SCALES_SUFFIX: scales}

    def decode(self, parts: Parts, shape: torch.Size) -> torch.Tensor:
        n_rows = 1 if len(shape) < 2 else shape[0]
        width = shape.numel() // n_rows if n_rows else 0
        codes = parts[CODES_SUFFIX]
        if self.fmt.dtype is None:
            values = e2m1_values(unpack_bits(codes, 4, n_rows * width))
        else:
            if codes.numel() != n_rows * width:
                raise ValueError(f"{codes.numel()} fp8 codes for a {tuple(shape)} weight: wrong pass config?")
            values = codes.view(self.fmt.dtype).float()
        groups = grouped(values.view(n_rows, width), self.config.group_size)  # (R, G, w)
        scales = parts[SCALES_SUFFIX]
        if scales.shape != groups.shape[:2]:
            raise ValueError(
                f"scales of shape {tuple(scales.shape)} do not match {tuple(groups.shape[:2])} "
                f"for a {tuple(shape)} weight with group_size={self.config.group_size}: wrong pass config?"
            )
        return ungrouped(groups * scales.float()[..., None], width).reshape(shape)

    def calibrate(self, model: nn.Module, targets: list[Target], calib: torch.Tensor | None) -> dict[str, Any]:
        c = self.config
        if not c.activations:
            return {"activations": "fp32 (weight-only)"}
        return activations.calibrate(model, owner_names(targets), calib, self._act_format(), c.act_calibration, c.act_percentile)

    def pack_extra(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return activations.to_stored(model)

    def unpack_extra(self, skeleton: nn.Module, stored: dict[str, torch.Tensor]) -> set[str]:
        return activations.from_stored(skeleton, stored, self._act_format()) if self.config.activations else set()

    def header(self) -> dict[str, Any]:
        c = self.config
        return self.describe(
            f"fake-quant: weights stored as {self.fmt.bits}-bit {c.format} codes + {c.scale_dtype} scales, "
            "computed in fp32; no speed-up claimed (real FP8 GEMMs need CUDA and dims divisible by 16)",
            format=c.format,
            group_size=c.group_size,
            scale_dtype=c.scale_dtype,
        )
