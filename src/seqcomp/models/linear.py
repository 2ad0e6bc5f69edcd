"""Closed-form channel-independent linear forecaster.

Paper: "An Analysis of Linear Time Series Forecasting Models", William Toner and Luke
Darlow, ICML 2024. Their finding: the popular linear forecasters (DLinear, NLinear, RLinear,
FITS) are all, up to reparameterisation, one affine map from the L past values to the H
future values; its least-squares solution can be computed in closed form and is as good as
(or better than) the SGD-trained variants.

Here: one map shared by all channels (channel independence), applied to each window after
subtracting that window's lookback mean (added back on output, as in NLinear/RLinear), fit by
ridge-regularised least squares on all training windows in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from seqcomp.models import SeriesShape
from seqcomp.registry import check


class ClosedFormLinear(nn.Module):
    """y = W (x - mean(x)) + b + mean(x), per channel, with W: L -> H shared by channels."""

    @dataclass
    class Config:
        # Ridge strength relative to the mean eigenvalue of X^T X (trace / L), so the same
        # value works whatever the data scale and the number of windows.
        ridge: float = 1e-4
        # Rows per block when accumulating X^T X, to bound memory on long training sets.
        block_rows: int = 65536

        def __post_init__(self) -> None:
            check(isinstance(self.ridge, (int, float)) and self.ridge >= 0, "ridge", f"must be >= 0, got {self.ridge!r}")
            check(isinstance(self.block_rows, int) and self.block_rows > 0, "block_rows", "must be a positive integer")

    def __init__(self, shape: SeriesShape, cfg: "ClosedFormLinear.Config"):
        super().__init__()
        self.cfg = cfg
        # nn.Linear so that compression passes (int8 dynamic, RTN) see an ordinary layer.
        # Untrained init: the default nn.Linear init, so the model also runs (and trains) unfit.
        self.proj = nn.Linear(shape.lookback, shape.horizon)

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=1, keepdim=True)  # (B, 1, C)
        y = self.proj((x - mean).transpose(1, 2))  # (B, C, H)
        return y.transpose(1, 2) + mean  # (B, H, C)

    @torch.no_grad()
    def fit_closed_form(self, x: Tensor, y: Tensor) -> None:
        """Ridge least squares on all windows: x (N, L, C), y (N, H, C). Overwrites the weights."""
        n, lookback, channels = x.shape
        check(y.shape[0] == n and y.shape[2] == channels, "y", f"shape {tuple(y.shape)} does not match x {tuple(x.shape)}")
        horizon = y.shape[1]
        # Every (window, channel) pair is one regression row: channel independence.
        xs = x.detach().to("cpu", torch.float64).transpose(1, 2).reshape(-1, lookback)  # (N*C, L)
        ys = y.detach().to("cpu", torch.float64).transpose(1, 2).reshape(-1, horizon)  # (N*C, H)
        mean = xs.mean(dim=1, keepdim=True)  # (N*C, 1)
        # The last column of ones carries the bias; it is left unregularised below.
        gram = torch.zeros(lookback + 1, lookback + 1, dtype=torch.float64)
        cross = torch.zeros(lookback + 1, horizon, dtype=torch.float64)
        for start in range(0, xs.shape[0], self.cfg.block_rows):
            sl = slice(start, start + self.cfg.block_rows)
            xa = torch.cat([xs[sl] - mean[sl], torch.ones_like(mean[sl])], dim=1)  # (b, L+1)
            gram += xa.T @ xa
            cross += xa.T @ (ys[sl] - mean[sl])
        scale = gram[:lookback, :lookback].diagonal().mean().clamp_min(1e-12)
        reg = torch.zeros(lookback + 1, dtype=torch.float64)
        reg[:lookback] = self.cfg.ridge * scale
        gram += torch.diag(reg)
        # lstsq (SVD-based) rather than solve: also well defined when ridge = 0 and the
        # windows do not span R^L (e.g. very few or constant windows).
        sol = torch.linalg.lstsq(gram, cross, driver="gelsd").solution  # (L+1, H)
        self.proj.weight.copy_(sol[:lookback].T.to(self.proj.weight))
        self.proj.bias.copy_(sol[lookback].to(self.proj.bias))
