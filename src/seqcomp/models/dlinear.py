"""DLinear: moving-average decomposition plus two linear maps over time.

Paper: "Are Transformers Effective for Time Series Forecasting?", Ailing Zeng, Muxi Chen,
Lei Zhang and Qiang Xu, AAAI 2023.

The window is split into a trend (moving average with replicate padding) and a seasonal
remainder; each goes through its own linear map L -> H over time, and the two forecasts are
summed. ``individual`` gives every channel its own pair of maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from seqcomp.models import SeriesShape
from seqcomp.models._common import check_positive


def moving_average(x: Tensor, kernel: int) -> Tensor:
    """Centred moving average over time with the ends replicated: (B, L, C) -> (B, L, C)."""
    # Replicate padding keeps the output length L and avoids pulling the trend towards zero
    # at the window edges, which zero padding would do.
    front, back = (kernel - 1) // 2, kernel // 2
    xt = x.transpose(1, 2)  # (B, C, L)
    xt = F.pad(xt, (front, back), mode="replicate")  # (B, C, L + kernel - 1)
    return F.avg_pool1d(xt, kernel_size=kernel, stride=1).transpose(1, 2)  # (B, L, C)


class DLinear(nn.Module):
    @dataclass
    class Config:
        kernel_size: int = 25
        individual: bool = False

        def __post_init__(self) -> None:
            check_positive(self, "kernel_size")

    def __init__(self, shape: SeriesShape, cfg: "DLinear.Config"):
        super().__init__()
        self.kernel = cfg.kernel_size
        self.individual = cfg.individual
        n = shape.channels if cfg.individual else 1
        # ModuleLists of nn.Linear (not one batched weight) so quantization passes see them.
        self.seasonal = nn.ModuleList(nn.Linear(shape.lookback, shape.horizon) for _ in range(n))
        self.trend = nn.ModuleList(nn.Linear(shape.lookback, shape.horizon) for _ in range(n))

    def forward(self, x: Tensor) -> Tensor:
        trend = moving_average(x, self.kernel)  # (B, L, C)
        seasonal = (x - trend).transpose(1, 2)  # (B, C, L)
        trend = trend.transpose(1, 2)  # (B, C, L)
        if not self.individual:
            y = self.seasonal[0](seasonal) + self.trend[0](trend)  # (B, C, H)
        else:
            y = torch.stack(
                [s(seasonal[:, i]) + t(trend[:, i]) for i, (s, t) in enumerate(zip(self.seasonal, self.trend))],
                dim=1,
            )  # (B, C, H)
        return y.transpose(1, 2)  # (B, H, C)
