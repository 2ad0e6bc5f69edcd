"""The RTN grid as a coded pass: the config, codes, stored parts and report of uniform b-bit weights.

rtn_weight_sim is this class as it is; gptq_weight_sim rounds on the same grid in another way
and int8_static_sim fixes it at per-channel int8 and adds activation ranges, so all three
share its config checks, stored form and decoding (the grid itself is uniform.py's).
``parts_of`` / ``quantized_weight`` convert between a :class:`QuantizedWeight` and its stored
parts, for the passes that code weights outside this class (mixed precision).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from seqcomp.compress.quant.coded import KEEP_DTYPES, CodedPass, Parts, Target, real_view
from seqcomp.compress.quant.common import KEPT
from seqcomp.compress.quant.groups import DEFAULT_GROUPS, GRID_GROUPS, OTHER, check_groups
from seqcomp.compress.quant.size import BITS_SUFFIX, CODES_SUFFIX, SCALE_UNIT_SUFFIX, SCALES_SUFFIX, ZEROS_SUFFIX
from seqcomp.compress.quant.uniform import (
    CALIBRATIONS,
    GRID_SCALE_DTYPES,
    UNIT_SCALE_DTYPES,
    QuantizedWeight,
    dequantize,
    quantize,
)
from seqcomp.registry import check


class RTNGrid(CodedPass):
    """Weights coded on a uniform b-bit grid (bit-packed codes + scales), rounded to nearest
    unless a subclass overrides ``encode_targets``; subclasses set ``kind``."""

    @dataclass(frozen=True)
    class Config:
        bits: int = 4
        group_size: int | None = None  # null: one scale per output channel
        symmetric: bool = True
        calibration: str = "minmax"  # minmax | percentile | mse
        percentile: float = 99.9  # of |w|, used by calibration: percentile
        scale_dtype: str = "float16"  # float16 | float32 | float8_e4m3 (codes + one fp32 unit per tensor)
        keep_dtype: str = "float32"  # float32 | float16: how the tensors left unquantized are stored
        groups: list[str] = field(default_factory=lambda: list(DEFAULT_GROUPS))  # may include other
        group_bits: dict[str, int] = field(default_factory=dict)  # {group: bits} overriding bits, e.g. {recurrent: 8}

        def __post_init__(self) -> None:
            check(
                type(self.bits) is int and 2 <= self.bits <= 8,
                "bits",
                f"must be an integer in 2..8, got {self.bits!r}",
            )
            check(
                isinstance(self.group_bits, dict),
                "group_bits",
                f"must be a mapping {{group: bits}}, got {self.group_bits!r}",
            )
            for group, bits in self.group_bits.items():
                check(
                    group in GRID_GROUPS and group in self.groups,
                    f"group_bits.{group}",
                    f"must name a group selected in groups {list(self.groups)}",
                )
                check(
                    type(bits) is int and 2 <= bits <= 8, f"group_bits.{group}", f"must be an integer in 2..8, got {bits!r}"
                )
            check(
                self.group_size is None or (type(self.group_size) is int and self.group_size > 0),
                "group_size",
                f"must be null (per-channel) or a positive integer, got {self.group_size!r}",
            )
            check(isinstance(self.symmetric, bool), "symmetric", f"must be true or false, got {self.symmetric!r}")
            check(
                self.calibration in CALIBRATIONS,
                "calibration",
                f"must be one of {list(CALIBRATIONS)}, got {self.calibration!r}",
            )
            check(
                isinstance(self.percentile, (int, float)) and 50 < self.percentile <= 100,
                "percentile",
                f"must be a number in (50, 100], got {self.percentile!r}",
            )
            check(
                self.scale_dtype in GRID_SCALE_DTYPES,
                "scale_dtype",
                f"must be one of {sorted(GRID_SCALE_DTYPES)}, got {self.scale_dtype!r}",
            )
            check(
                self.keep_dtype in KEEP_DTYPES,
                "keep_dtype",
                f"must be one of {sorted(KEEP_DTYPES)}, got {self.keep_dtype!r}",
            )
            check_groups(self.groups, GRID_GROUPS)

    method: ClassVar[str] = "rtn"  # the word the report's actions use
    stage: ClassVar[str] = "quantization"
    # asymmetric grids only / fp8 scales only / group_bits only: decode checks
    optional_parts: ClassVar[tuple[str, ...]] = (ZEROS_SUFFIX, SCALE_UNIT_SUFFIX, BITS_SUFFIX)

    def bits_of(self, group: str | None) -> int:
        """The bit-width of a weight of ``group``: its ``group_bits`` entry, else ``bits``."""
        return self.config.group_bits.get(group, self.config.bits)

    def grid_name(self, method: str | None = None, group: str | None = None) -> str:
        """E.g. 'int4 rtn per-channel', 'int3 rtn group 64 asymmetric mse', for report actions."""
        c = self.config
        layout = ("per-tensor" if group == OTHER else "per-channel") if c.group_size is None else f"group {c.group_size}"
        words = [f"int{self.bits_of(group)}", method or self.method, layout]
        words += [] if c.symmetric else ["asymmetric"]
        words += [] if c.calibration == "minmax" else [c.calibration]
        return " ".join(words)

    def action(self, group: str | None = None) -> str:
        return f"{self.grid_name(group=group)} (simulated)"

    def quantize(self, weight: torch.Tensor, group: str | None = None) -> QuantizedWeight:
        """RTN codes of a real tensor of ``group`` under this pass's grid (``other``: flattened)."""
        c = self.config
        return quantize(
            weight.reshape(-1) if group == OTHER else weight, self.bits_of(group), c.group_size,
            GRID_SCALE_DTYPES[c.scale_dtype], symmetric=c.symmetric, calibration=c.calibration, percentile=c.percentile,
        )

    def part_suffixes(self) -> tuple[str, ...]:
        return (CODES_SUFFIX, SCALES_SUFFIX)

    def encode(self, weight: torch.Tensor, group: str | None = None) -> Parts:
        return self.tagged(parts_of(self.quantize(weight, group)), group)

    def tagged(self, parts: Parts, group: str | None) -> Parts:
        """``parts`` plus the bit-width tag if ``group_bits`` sets ``group``'s bits."""
        if group not in self.config.group_bits:
            return parts
        return {**parts, BITS_SUFFIX: torch.tensor(self.bits_of(group), dtype=torch.uint8)}

    def encode_targets(
        self, model: nn.Module, targets: list[Target], calib: torch.Tensor | None
    ) -> dict[str, tuple[Parts, str]]:
        return {t.name: (self.encode(real_view(t.param), t.group), self.action(t.group)) for t in targets}

    def apply(self, model: nn.Module, calib: torch.Tensor | None) -> tuple[nn.Module, dict[str, Any]]:
        """CodedPass.apply, with the bits each coded parameter got in its report row."""
        model, report = super().apply(model, calib)
        for row in report["layers"]:
            if row["action"] != KEPT:
                row["bits"] = self.bits_of(row["group"])
        return model, report

    def keep_dtype(self) -> torch.dtype:
        return KEEP_DTYPES[self.config.keep_dtype]

    def decode(self, parts: Parts, shape: torch.Size) -> torch.Tensor:
        if (ZEROS_SUFFIX in parts) == self.config.symmetric:
            raise ValueError("zero points stored for a symmetric grid, or missing for an asymmetric one: wrong pass config?")
        if (SCALE_UNIT_SUFFIX in parts) != (self.config.scale_dtype in UNIT_SCALE_DTYPES):
            raise ValueError(f"scale unit stored or missing for {self.config.scale_dtype} scales: wrong pass config?")
        bits = self.config.bits
        if BITS_SUFFIX in parts:
            bits = int(parts[BITS_SUFFIX])
            if bits not in self.config.group_bits.values():
                raise ValueError(
                    f"a weight stored at {bits} bits, not in group_bits {self.config.group_bits}: wrong pass config?"
                )
        return dequantize(quantized_weight(parts, shape), bits, self.config.group_size)

    def header(self) -> dict[str, Any]:
        c = self.config
        return self.describe(
            f"fake-quant: weights stored as packed int{c.bits} codes + scales"
            + ("" if c.symmetric else " + zero points")
            + ", computed in fp32; no speed-up claimed",
            bits=c.bits,
            group_size=c.group_size,
            symmetric=c.symmetric,
            calibration=c.calibration,
            scale_dtype=c.scale_dtype,
            keep_dtype=c.keep_dtype,
            group_bits=dict(c.group_bits),
        )


def parts_of(qw: QuantizedWeight) -> Parts:
    """The stored parts of a :class:`QuantizedWeight` (zero points only on an asymmetric grid,
    the scale unit only with fp8 scales)."""
    optional = {ZEROS_SUFFIX: qw.zeros, SCALE_UNIT_SUFFIX: qw.unit}
    return {CODES_SUFFIX: qw.codes, SCALES_SUFFIX: qw.scales, **{k: v for k, v in optional.items() if v is not None}}


def quantized_weight(parts: Parts, shape: torch.Size) -> QuantizedWeight:
    """Inverse of :func:`parts_of`."""
    zeros, unit = parts.get(ZEROS_SUFFIX), parts.get(SCALE_UNIT_SUFFIX)
    return QuantizedWeight(parts[CODES_SUFFIX], parts[SCALES_SUFFIX], shape, zeros, unit)
