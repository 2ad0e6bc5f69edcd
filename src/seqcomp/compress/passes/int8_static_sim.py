"""Static int8 weights + activations (W8A8), run as fake-quant on fp32 kernels.

Weights of the selected groups become per-channel symmetric int8 (the RTN grid of
quant/uniform.py at 8 bits, scales calibrated by min-max, percentile or MSE). Every module that
owns a quantized weight gets static per-tensor uint8 (asymmetric) ranges on its inputs,
calibrated on the ``calib`` training windows by min-max or percentile (quant/activations.py) after
the weights are quantized, so the ranges are those the quantized model sees.

This is a simulation (``simulated: true``): the model runs fp32 kernels on dequantized
weights and fake-quantized inputs, which is what int8 kernels with these scales would
compute up to accumulation order; no speed-up is claimed. For real int8 kernels on CPU see
int8_dynamic (Linear/LSTM only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from seqcomp.compress.quant import activations
from seqcomp.compress.quant.activations import ACT_CALIBRATIONS, UINT8
from seqcomp.compress.quant.coded import Target, owner_names
from seqcomp.compress.quant.groups import DEFAULT_GROUPS, check_groups
from seqcomp.compress.quant.rtn import RTNGrid
from seqcomp.compress.quant.uniform import CALIBRATIONS
from seqcomp.registry import check


class Int8StaticSim(RTNGrid):
    """Per-channel int8 weights, static per-tensor uint8 activation ranges at their inputs."""

    @dataclass(frozen=True)
    class Config:
        calibration: str = "minmax"  # weight scales: minmax | percentile | mse
        percentile: float = 99.9
        act_calibration: str = "minmax"  # activation ranges: minmax | percentile
        act_percentile: float = 99.99
        groups: list[str] = field(default_factory=lambda: list(DEFAULT_GROUPS))
        # fixed: the W8A8 grid this pass stands for
        bits: ClassVar[int] = 8
        group_size: ClassVar[None] = None
        symmetric: ClassVar[bool] = True
        scale_dtype: ClassVar[str] = "float16"
        keep_dtype: ClassVar[str] = "float32"
        group_bits: ClassVar[dict[str, int]] = {}

        def __post_init__(self) -> None:
            check(self.calibration in CALIBRATIONS, "calibration", f"must be one of {list(CALIBRATIONS)}, got {self.calibration!r}")
            check(
                self.act_calibration in ACT_CALIBRATIONS,
                "act_calibration",
                f"must be one of {list(ACT_CALIBRATIONS)}, got {self.act_calibration!r}",
            )
            for key in ("percentile", "act_percentile"):
                value = getattr(self, key)
                check(isinstance(value, (int, float)) and 50 < value <= 100, key, f"must be a number in (50, 100], got {value!r}")
            check_groups(self.groups)

    kind: ClassVar[str] = "int8_static_sim"

    def action(self, group: str | None = None) -> str:
        return f"{self.grid_name(group=group)} weights + uint8 static input ranges (simulated)"

    def calibrate(self, model: nn.Module, targets: list[Target], calib: torch.Tensor | None) -> dict[str, Any]:
        c = self.config
        return activations.calibrate(model, owner_names(targets), calib, UINT8, c.act_calibration, c.act_percentile)

    def pack_extra(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return activations.to_stored(model)

    def unpack_extra(self, skeleton: nn.Module, stored: dict[str, torch.Tensor]) -> set[str]:
        return activations.from_stored(skeleton, stored, UINT8)

    def header(self) -> dict[str, Any]:
        return {
            **super().header(),
            "note": "fake-quant W8A8: weights stored as int8 codes + fp16 per-channel scales, activation "
            "ranges as fp32 scale + uint8 zero point per input; computed in fp32; no speed-up claimed",
            "act_calibration": self.config.act_calibration,
        }
