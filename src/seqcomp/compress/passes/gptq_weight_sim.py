"""GPTQ: second-order weight-only quantization, layer by layer, from calibration activations.

Paper: "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers",
Elias Frantar, Saleh Ashkboos, Torsten Hoefler and Dan Alistarh, ICLR 2023 (arXiv:2210.17323);
the algorithm and its settings are quant/gptq.py's.

Layers are processed in forward order, each on the inputs produced by the already
quantized layers before it (the paper's sequential scheme). The grid and stored form are
RTN's (quant/rtn.py): the same bits, groups and scale calibration, so GPTQ and RTN differ only
in how weights are rounded.

Only nn.Linear weights get GPTQ (their input is one tensor X). Other selected parameters
(LSTM and attention raw weights, convolutions, SSM parameters) fall back to RTN and their
report rows say so. Simulated: fp32 kernels on dequantized weights, no speed-up claimed.

``rounding: learned`` (quant/rounding.py: AdaRound) runs after GPTQ on each nn.Linear weight: GPTQ
fits the grid (its scales and zero points, kept as they are) and its codes are the starting point;
AdaRound then learns up/down for each original weight on that grid against the layer's output
W X^T, X the inputs the already quantized layers upstream give it (the Hessian GPTQ used), and the
learned codes replace GPTQ's only where they lower that output error. Why after GPTQ rather than
instead of it: GPTQ's grid, fitted on its updated weights, is part of what it gains, and keeping
the better of the two codes makes learned rounding never worse than GPTQ on the calibration data.
Weights that fall back to RTN keep nearest rounding (no inputs to learn from).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from seqcomp.compress.quant.coded import Parts, Target, real_view
from seqcomp.compress.quant.gptq import DEFAULT_SETTINGS, GPTQSettings, code_in_order, gptq_quantize
from seqcomp.compress.quant.rounding import LearnedRounding, RoundingOptions
from seqcomp.compress.quant.rtn import RTNGrid
from seqcomp.compress.quant.uniform import GRID_SCALE_DTYPES
from seqcomp.registry import check


class GPTQ(LearnedRounding, RTNGrid):
    """RTN's grid and stored form, GPTQ's rounding for every nn.Linear weight selected."""

    @dataclass(frozen=True)
    class Config(RTNGrid.Config, RoundingOptions):
        percdamp: float = DEFAULT_SETTINGS.percdamp  # dampening, as a fraction of mean(diag H)
        act_order: bool = DEFAULT_SETTINGS.act_order  # visit columns by decreasing diag(H)
        block_size: int = DEFAULT_SETTINGS.block_size  # columns updated eagerly before one lazy matmul

        def __post_init__(self) -> None:
            super().__post_init__()
            check(
                isinstance(self.percdamp, (int, float)) and 0 < self.percdamp <= 1,
                "percdamp",
                f"must be a number in (0, 1], got {self.percdamp!r}",
            )
            check(isinstance(self.act_order, bool), "act_order", f"must be true or false, got {self.act_order!r}")
            check(
                type(self.block_size) is int and self.block_size > 0,
                "block_size",
                f"must be a positive integer, got {self.block_size!r}",
            )
            self.check_rounding()

    kind: ClassVar[str] = "gptq_weight_sim"
    method: ClassVar[str] = "gptq"

    def _fallback(self, target: Target) -> str:
        """Why ``target`` gets RTN instead of GPTQ."""
        what = f"{type(target.module).__name__}.{target.pname}"
        grid = self.grid_name("rtn", target.group)
        return f"{grid} (simulated; gptq fallback: {what} is not an nn.Linear weight, no input hook)"

    def encode_targets(
        self, model: nn.Module, targets: list[Target], calib: torch.Tensor | None
    ) -> dict[str, tuple[Parts, str]]:
        """Linear weights by GPTQ in forward order (each on already-quantized upstream), the rest by RTN."""
        if calib is None:
            raise ValueError("gptq needs calibration windows (calib is None)")
        c = self.config
        settings = GPTQSettings(c.percdamp, c.act_order, c.block_size)

        def code(t: Target, h: torch.Tensor | None) -> tuple[Parts, str]:
            if h is None:
                return self.round_layer(t, None, self.quantize(real_view(t.param), t.group)), self._fallback(t)
            qw = gptq_quantize(
                t.param, h, self.bits_of(t.group), c.group_size, GRID_SCALE_DTYPES[c.scale_dtype], settings,
                c.symmetric, c.calibration, c.percentile,
            )
            return self.round_layer(t, h, qw), self.action(t.group)

        return code_in_order(model, targets, calib, code, self.decode)

    def header(self) -> dict[str, Any]:
        c = self.config
        return {**super().header(), "percdamp": c.percdamp, "act_order": c.act_order, "block_size": c.block_size}
