"""Reversible instance normalisation around any forecaster.

Paper: "Reversible Instance Normalization for Accurate Time-Series Forecasting against
Distribution Shift", Taesung Kim, Jinhee Kim, Yunwon Tae, Cheonbok Park, Jang-Ho Choi and
Jaegul Choo, ICLR 2022.

Each window is normalised per channel by its own mean and standard deviation (then an
optional learnable per-channel affine map); the wrapped network forecasts in that normalised
space, and the forecast is mapped back with the inverse affine map and the same statistics.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor


class RevIN(nn.Module):
    def __init__(self, net: nn.Module, channels: int, affine: bool = True, eps: float = 1e-5):
        super().__init__()
        self.net = net
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        # Statistics are treated as data (detached), as in the paper's reference code, so the
        # gradient does not flow through the normalisation constants.
        mean = x.mean(dim=1, keepdim=True).detach()  # (B, 1, C)
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()  # (B, 1, C)
        h = (x - mean) / std  # (B, L, C)
        if self.affine:
            h = h * self.weight + self.bias
        y = self.net(h)  # (B, H, C)
        if self.affine:
            # eps**2 keeps the division finite if a weight is driven to zero.
            y = (y - self.bias) / (self.weight + self.eps**2)
        return y * std + mean  # (B, H, C)


class RevINClosedForm(RevIN):
    """RevIN around a closed-form model: the fit sees windows normalised the same way."""

    @torch.no_grad()
    def fit_closed_form(self, x: Tensor, y: Tensor) -> None:
        mean = x.mean(dim=1, keepdim=True)  # (N, 1, C)
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps)  # (N, 1, C)
        xn, yn = (x - mean) / std, (y - mean) / std
        if self.affine:
            # The affine map is identity at init; fit in the space the net will see.
            xn, yn = xn * self.weight + self.bias, yn * self.weight + self.bias
        self.net.fit_closed_form(xn, yn)
