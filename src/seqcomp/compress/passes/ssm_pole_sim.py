"""SSM recurrent parameters on per-pole grids shared across channels, run as fake-quant on fp32 kernels.

Why (measured on the trained ETTh1 H96 S4D and S4, docs/compression.md "SSM recurrent
parameters"): an SSM layer runs H channels of the same N/2 poles (modes). Its recurrent
parameters are tensors (H, N/2, ...) whose columns are modes and whose rows are channels, and
every channel starts from the same HiPPO / S4D-Lin values (Λ_im = π n, Λ_re = -1/2, S4's P and
B), so after training a column spreads over under 1 (S4D's Λ_im: about 0.65) while a row spans
every mode's frequency (0 to about 98). The grid passes give each *row* one scale, so a 4-bit
step on Λ_im is ~14: the pole angle dt Λ_im is off by up to dt * 7 rad per step, and that
phase error grows linearly with the lag, which is why an 8-bit recurrent group already costs
S4 +32% test MSE. And log dt, a 1-D (H,) tensor, gets one scale for all channels: at 8 bits a
2% error in dt, which rotates every pole of the channel by 2% of its angle.

So this pass codes each selected tensor of at least 2 dimensions with H > 1 rows as

    w[h, j] = center[j] + (code[h, j] - (2^b - 1) / 2) * step[j]

one fp16 centre (the column's mid-range) and one fp16 step per column (mode), codes on all 2^b
levels (mid-rise: no level is wasted on an exact zero, which a spread around a centre does
not need), bit-packed. Its error then scales with how far the channels moved from each other
(the training drift), not with the spread of the poles. A 1-D tensor (log dt, Mamba's dt_bias
and D) has no mode axis to share: it is stored as its values in ``vector_dtype`` (fp16 by
default; its H values are a few hundred bytes a layer). Every byte is in the stored form:
codes (weights_bytes), centres and steps (scales_bytes), 1-D values (fp32_bytes).

The model's own parameters are what is coded (the model code is not changed), so ``decode``
needs nothing but a weight's own parts, and any pass that picks a format per weight (the
accuracy-budgeted allocator) can use this one for the recurrent group. With calibration windows
the report gives, per SSM layer that has a convolution kernel, its ``kernel_rel_err`` against
fp32 (quant/coded.py), as the grid passes' reports do for theirs.

Simulated: the model keeps running fp32 kernels on the decoded parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from seqcomp.compress.quant.bitpack import pack_bits, packed_nbytes, unpack_bits
from seqcomp.compress.quant.coded import KEEP_DTYPES, CodedPass, Parts, Target, real_view
from seqcomp.compress.quant.groups import GROUPS, check_groups
from seqcomp.compress.quant.size import CENTERS_SUFFIX, CODES_SUFFIX, SCALES_SUFFIX
from seqcomp.registry import check

VALUES_SUFFIX = ".values"  # a 1-D tensor stored as its values in vector_dtype
VECTOR_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def mode_grid(weight: torch.Tensor, bits: int) -> Parts:
    """Codes, per-column fp16 steps and centres of a real (H, ...) tensor, columns = the rest.

    The centre and the step are rounded to fp16 *before* the codes are chosen, so the decoded
    tensor is exactly what :func:`from_mode_grid` gives; the centre's rounding only widens
    the column's half-range a little.
    """
    rows = weight.detach().float().reshape(weight.shape[0], -1)  # (H, K)
    center = ((rows.amax(dim=0) + rows.amin(dim=0)) / 2).half()  # (K,)
    residual = rows - center.float()
    half = (2**bits - 1) / 2
    step = (residual.abs().amax(dim=0) / half).half()  # (K,); 0 for a column fp16 cannot resolve
    safe = torch.where(step > 0, step.float(), torch.ones_like(step, dtype=torch.float32))
    codes = torch.round(residual / safe + half).clamp(0, 2**bits - 1)  # at step 0 any code decodes to the centre
    packed = pack_bits(codes.reshape(-1).to(torch.uint8), bits)
    return {CODES_SUFFIX: packed, SCALES_SUFFIX: step, CENTERS_SUFFIX: center}


def from_mode_grid(parts: Parts, shape: torch.Size, bits: int) -> torch.Tensor:
    """The fp32 tensor of ``shape`` that :func:`mode_grid`'s parts describe."""
    center, step = parts[CENTERS_SUFFIX].float(), parts[SCALES_SUFFIX].float()
    n_rows, width = shape[0], shape.numel() // shape[0]
    if center.shape != (width,) or step.shape != (width,):
        raise ValueError(
            f"centres {tuple(center.shape)} / steps {tuple(step.shape)} stored for {width} columns of a "
            f"{tuple(shape)} tensor"
        )
    if parts[CODES_SUFFIX].numel() != packed_nbytes(n_rows * width, bits):
        raise ValueError(
            f"{parts[CODES_SUFFIX].numel()} bytes of codes stored for {n_rows * width} values at {bits} bits: "
            "wrong pass config (bits)?"
        )
    codes = unpack_bits(parts[CODES_SUFFIX], bits, n_rows * width).view(n_rows, width).float()
    return (center + (codes - (2**bits - 1) / 2) * step).reshape(shape)


def on_mode_grid(shape: torch.Size) -> bool:
    """Whether a tensor of ``shape`` is coded on per-column grids: a channel axis of more than
    one row and at least one more axis; anything else is stored as its values."""
    return len(shape) >= 2 and shape[0] > 1


class SSMPole(CodedPass):
    """Recurrent SSM parameters on per-pole (per-column) grids shared across channels."""

    @dataclass(frozen=True)
    class Config:
        bits: int = 4
        vector_dtype: str = "float16"  # how 1-D tensors (log dt...) are stored: float16 | float32
        keep_dtype: str = "float32"  # float32 | float16: how the tensors left uncoded are stored
        groups: list[str] = field(default_factory=lambda: ["recurrent"])

        def __post_init__(self) -> None:
            check(
                type(self.bits) is int and 2 <= self.bits <= 8, "bits", f"must be an integer in 2..8, got {self.bits!r}"
            )
            check(
                self.vector_dtype in VECTOR_DTYPES,
                "vector_dtype",
                f"must be one of {sorted(VECTOR_DTYPES)}, got {self.vector_dtype!r}",
            )
            check(
                self.keep_dtype in KEEP_DTYPES,
                "keep_dtype",
                f"must be one of {sorted(KEEP_DTYPES)}, got {self.keep_dtype!r}",
            )
            check_groups(self.groups, GROUPS)

    kind: ClassVar[str] = "ssm_pole_sim"
    stage: ClassVar[str] = "quantization"
    # grid tensors have codes, steps and centres; 1-D tensors their values: decode checks which
    optional_parts: ClassVar[tuple[str, ...]] = (CODES_SUFFIX, SCALES_SUFFIX, CENTERS_SUFFIX, VALUES_SUFFIX)

    def part_suffixes(self) -> tuple[str, ...]:
        return ()

    def encode(self, weight: torch.Tensor) -> Parts:
        if on_mode_grid(weight.shape):
            return mode_grid(weight, self.config.bits)
        return {VALUES_SUFFIX: weight.detach().to(VECTOR_DTYPES[self.config.vector_dtype]).reshape(-1)}

    def encode_targets(
        self, model: nn.Module, targets: list[Target], calib: torch.Tensor | None
    ) -> dict[str, tuple[Parts, str]]:
        """Each target coded alone, data-free; its action says which form it got."""
        out = {}
        for t in targets:
            weight = real_view(t.param)
            form = (
                f"int{self.config.bits} per-pole grid shared across channels (simulated)"
                if on_mode_grid(weight.shape)
                else f"{self.config.vector_dtype} values (1-D, no pole axis)"
            )
            out[t.name] = self.encode(weight), form
        return out

    def keep_dtype(self) -> torch.dtype:
        return KEEP_DTYPES[self.config.keep_dtype]

    def decode(self, parts: Parts, shape: torch.Size) -> torch.Tensor:
        grid = {CODES_SUFFIX, SCALES_SUFFIX, CENTERS_SUFFIX}
        if set(parts) == {VALUES_SUFFIX}:
            values = parts[VALUES_SUFFIX]
            if values.dtype != VECTOR_DTYPES[self.config.vector_dtype] or values.numel() != shape.numel():
                raise ValueError(
                    f"{values.numel()} {values.dtype} values stored for a {tuple(shape)} tensor, pass stores "
                    f"{self.config.vector_dtype}: wrong pass config?"
                )
            return values.float().reshape(shape)
        if set(parts) != grid:
            raise ValueError(f"stored parts {sorted(parts)}: expected {sorted(grid)} or [{VALUES_SUFFIX!r}]")
        return from_mode_grid(parts, shape, self.config.bits)

    def header(self) -> dict[str, Any]:
        c = self.config
        return self.describe(
            f"fake-quant: tensors with a pole axis stored as packed int{c.bits} codes on one grid per pole "
            f"(fp16 centre + step per column, shared by the channels), 1-D tensors as {c.vector_dtype} values; "
            "computed in fp32, no speed-up claimed",
            bits=c.bits,
            vector_dtype=c.vector_dtype,
            keep_dtype=c.keep_dtype,
        )
