"""The task's loss on labeled windows, for the passes that choose on the val split
(``uses_validation``: mixed precision, the accuracy-budgeted allocator).

Forecasts are scored by MSE and class ids by cross-entropy, as the evaluation scores them, so
a choice made on validation is made with the metric the test split is reported in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqcomp.compress.quant.common import run_calibration


def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's outputs on windows ``x``, batched without grad: (N, H, C) or (N, H, vocab)."""
    return torch.cat(run_calibration(model, x))


def losses_of(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) per-window loss of predictions ``pred`` against targets ``y``: MSE for forecasts,
    cross-entropy for class ids (integer targets, the model emitting logits)."""
    if y.is_floating_point():
        return ((pred - y) ** 2).flatten(1).mean(1)
    return F.cross_entropy(pred.flatten(0, 1), y.flatten(), reduction="none").view(len(y), -1).mean(1)


def window_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) the loss the evaluation scores, per labeled window (see :func:`losses_of`)."""
    return losses_of(predictions(model, x), y)
