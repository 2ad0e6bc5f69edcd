"""Weight-only round-to-nearest (RTN) quantization, run as fake-quant on fp32 kernels.

Every selected parameter (by default the ``ssm``, ``linear``, ``experts`` and ``shared_expert``
groups of quant/groups.py: weight matrices of nn.Linear, nn.Conv1d (flattened to (out, in*k)),
nn.LSTM, nn.MultiheadAttention's raw projections, SSM output maps such as S4D's C, and a
mixture-of-experts model's expert weights) is rounded on a uniform ``bits``-bit
grid, one scale per output row or per group of ``group_size`` inputs, symmetric (restricted
grid, no zero point) or asymmetric (zero points stored), with scales calibrated by min-max,
percentile or MSE search (see quant/uniform.py for the grid and its exact stored form).

The model keeps running fp32 kernels on the dequantized weights, so this pass measures the
accuracy of b-bit weights and their true stored size (bit-packed codes, fp16 scales,
zero points), never a speed-up. ``groups`` may include ``other`` (biases, norms, embeddings:
each coded as one flattened row, see quant/groups.py), and ``group_bits`` ({group: bits}) sets the
bits of some groups apart from ``bits`` (e.g. ``{recurrent: 8}``; ``{experts: 2, router: 8}`` for
an MoE, whose ``groups`` must then list them): such a weight also stores its bit-width as a
one-byte ``.bits`` tag, and each report row says the bits it got.
``scale_dtype: float8_e4m3`` double-quantizes the scales (FP8 codes + one fp32 unit per
tensor, see quant/uniform.py). ``keep_dtype: float16`` stores every tensor the pass leaves
unquantized (biases, norms, SSM recurrent parameters...) in fp16, and the evaluated model
uses those fp16 values (see quant/coded.py).

The grid, its config and stored form are quant/rtn.py's (shared with gptq_weight_sim and
int8_static_sim); this pass is that grid with round-to-nearest, or with ``rounding: learned``
(quant/rounding.py: AdaRound) each nn.Linear weight's rounding learned against its output on the
inputs the fp32 model gives it on the calibration windows (all layers see fp32 inputs, as the
rounding of one does not depend on another's); other weights keep nearest rounding and their
report rows say so. Learned rounding changes only which code each weight gets: the stored form,
its size and decoding are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from seqcomp.compress.quant.coded import Parts, Target, real_view
from seqcomp.compress.quant.rounding import LearnedRounding, RoundingOptions
from seqcomp.compress.quant.rtn import RTNGrid


class RTNWeightSim(LearnedRounding, RTNGrid):
    """Weight-only b-bit RTN, stored bit-packed, evaluated as fake-quant on fp32 kernels."""

    @dataclass(frozen=True)
    class Config(RTNGrid.Config, RoundingOptions):
        def __post_init__(self) -> None:
            super().__post_init__()
            self.check_rounding()

    kind: ClassVar[str] = "rtn_weight_sim"

    def encode_targets(
        self, model: nn.Module, targets: list[Target], calib: torch.Tensor | None
    ) -> dict[str, tuple[Parts, str]]:
        """Nearest codes; with learned rounding, each nn.Linear weight's learned on its fp32 inputs
        (``model`` is still fp32 here: apply writes the codes back after this)."""
        if self.config.rounding == "nearest":
            return super().encode_targets(model, targets, calib)
        if calib is None:
            raise ValueError(f"{self.kind}: rounding: learned needs calibration windows (calib is None)")
        # GPTQ's layer-input Hessian, imported here: a nearest-rounding job does not load (nor rerun for) GPTQ
        from seqcomp.compress.quant.gptq import gptq_able, hessian

        return {
            t.name: (
                self.round_layer(t, hessian(model, t.module, calib) if gptq_able(t) else None,
                                 self.quantize(real_view(t.param), t.group)),
                self.action(t.group),
            )
            for t in targets
        }
