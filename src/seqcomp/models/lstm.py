"""LSTM encoder with a direct multi-output head.

Paper: "Long Short-Term Memory", Sepp Hochreiter and Jürgen Schmidhuber, Neural Computation
1997. The forecaster reads the window step by step and maps the last hidden state to all
H x C future values at once (a direct multi-horizon head, no autoregressive decoding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
from torch import Tensor

from seqcomp.models._common import check_dropout, check_positive


class LSTMForecaster(nn.Module):
    @dataclass
    class Config:
        hidden: int = 64
        n_layers: int = 1
        dropout: float = 0.0  # between stacked LSTM layers (no effect with one layer)

        def __post_init__(self) -> None:
            check_positive(self, "hidden", "n_layers")
            check_dropout(self)

    def __init__(self, shape, cfg: "LSTMForecaster.Config"):
        super().__init__()
        self.horizon, self.channels = shape.horizon, shape.channels
        # nn.LSTM itself (not a hand-written cell) so torch's int8 dynamic quantization applies.
        self.lstm = nn.LSTM(
            shape.channels,
            cfg.hidden,
            num_layers=cfg.n_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.n_layers > 1 else 0.0,
        )
        self.head = nn.Linear(cfg.hidden, shape.horizon * shape.channels)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(x)  # (B, L, hidden)
        y = self.head(out[:, -1])  # (B, H*C)
        return y.view(-1, self.horizon, self.channels)  # (B, H, C)
