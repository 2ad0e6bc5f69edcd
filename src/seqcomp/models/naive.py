"""Naive last-value forecast: the baseline every learned model has to beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
from torch import Tensor

from seqcomp.models import SeriesShape


class Naive(nn.Module):
    """Repeats the last observed value of each channel over the horizon; no parameters."""

    @dataclass
    class Config:
        pass

    def __init__(self, shape: SeriesShape, cfg: "Naive.Config | None" = None):
        super().__init__()
        self.horizon = shape.horizon

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, L, C); repeat (not expand) so the output owns its memory like other models'.
        return x[:, -1:, :].repeat(1, self.horizon, 1)  # (B, H, C)
