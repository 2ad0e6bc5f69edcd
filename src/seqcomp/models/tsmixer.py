"""TSMixer: an all-MLP forecaster mixing alternately over time and over channels.

Paper: "TSMixer: An All-MLP Architecture for Time Series Forecasting", Si-An Chen, Chun-Liang
Li, Nate Yoder, Sercan O. Arik and Tomas Pfister, TMLR 2023.

Each block: a time-mixing MLP (one linear L -> L shared by channels, ReLU, dropout) and a
feature-mixing MLP (C -> ff -> C), each with a residual connection and a LayerNorm over the
(time, channel) plane (the paper's "L" norm option). A final linear L -> H maps to the horizon.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
from torch import Tensor

from seqcomp.models import SeriesShape
from seqcomp.models._common import check_dropout, check_positive


class MixerBlock(nn.Module):
    def __init__(self, lookback: int, channels: int, ff_dim: int, dropout: float):
        super().__init__()
        self.norm_time = nn.LayerNorm([lookback, channels])
        self.time = nn.Sequential(nn.Linear(lookback, lookback), nn.ReLU(), nn.Dropout(dropout))
        self.norm_feat = nn.LayerNorm([lookback, channels])
        self.feat = nn.Sequential(
            nn.Linear(channels, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, channels), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        # Pre-norm residuals, as in the reference: the identity path keeps the raw series.
        h = self.time(self.norm_time(x).transpose(1, 2)).transpose(1, 2)  # (B, L, C)
        x = x + h
        return x + self.feat(self.norm_feat(x))  # (B, L, C)


class TSMixer(nn.Module):
    @dataclass
    class Config:
        n_blocks: int = 2
        ff_dim: int = 64
        dropout: float = 0.1

        def __post_init__(self) -> None:
            check_positive(self, "n_blocks", "ff_dim")
            check_dropout(self)

    def __init__(self, shape: SeriesShape, cfg: "TSMixer.Config"):
        super().__init__()
        self.blocks = nn.Sequential(
            *(MixerBlock(shape.lookback, shape.channels, cfg.ff_dim, cfg.dropout) for _ in range(cfg.n_blocks))
        )
        self.proj = nn.Linear(shape.lookback, shape.horizon)

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(x)  # (B, L, C)
        return self.proj(h.transpose(1, 2)).transpose(1, 2)  # (B, H, C)
