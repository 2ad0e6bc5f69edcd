"""Encoder-only Transformer forecaster (the "vanilla Transformer" baseline of LTSF studies).

Paper: "Attention Is All You Need", Ashish Vaswani, Noam Shazeer, Niki Parmar, Jakob
Uszkoreit, Llion Jones, Aidan N. Gomez, Łukasz Kaiser and Illia Polosukhin, NeurIPS 2017.

Each time step (its C channel values) is one token: a linear embedding to d_model plus a
position code, a stack of encoder layers, then the L x d_model encoding is flattened and
mapped by one linear layer to the H x C forecast (no autoregressive decoder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from seqcomp.models import SeriesShape
from seqcomp.models._attention import Encoder
from seqcomp.models._common import check_choice, check_dropout, check_positive
from seqcomp.registry import check


def sinusoidal_positions(length: int, d_model: int) -> Tensor:
    """The fixed sine/cosine code of Vaswani et al.: (length, d_model)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]  # (L, 1)
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))  # (D/2,)
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : d_model // 2]
    return pe


class TransformerForecaster(nn.Module):
    @dataclass
    class Config:
        d_model: int = 32
        n_heads: int = 4
        n_layers: int = 2
        d_ff: int = 64
        dropout: float = 0.1
        positions: str = "learned"  # "learned" | "sinusoidal"

        def __post_init__(self) -> None:
            check_positive(self, "d_model", "n_heads", "n_layers", "d_ff")
            check(self.d_model % self.n_heads == 0, "n_heads", f"must divide d_model={self.d_model}")
            check_dropout(self)
            check_choice(self.positions, "positions", ("learned", "sinusoidal"))

    def __init__(self, shape: SeriesShape, cfg: "TransformerForecaster.Config"):
        super().__init__()
        self.horizon, self.channels = shape.horizon, shape.channels
        self.embed = nn.Linear(shape.channels, cfg.d_model)
        if cfg.positions == "learned":
            self.pos = nn.Parameter(0.02 * torch.randn(shape.lookback, cfg.d_model))
        else:
            # A buffer, not a parameter: it is fixed, but still travels with the state dict.
            self.register_buffer("pos", sinusoidal_positions(shape.lookback, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.n_layers)
        # The flatten head has L*d_model*H*C weights (2.06M at L=96, H=96, C=7, d_model 32):
        # most of this model's parameters, and cheap to run on CPU all the same.
        self.head = nn.Linear(shape.lookback * cfg.d_model, shape.horizon * shape.channels)

    def forward(self, x: Tensor) -> Tensor:
        h = self.drop(self.embed(x) + self.pos)  # (B, L, D)
        h = self.encoder(h)  # (B, L, D)
        y = self.head(h.flatten(1))  # (B, H*C)
        return y.view(-1, self.horizon, self.channels)  # (B, H, C)
