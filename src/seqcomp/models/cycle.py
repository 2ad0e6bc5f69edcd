"""Residual cycle forecasting around any forecaster.

Paper: "CycleNet: Enhancing Time Series Forecasting through Modeling Periodic Patterns",
Shengsheng Lin, Weiwei Lin, Xinyi Hu, Wentai Wu, Ruichao Mo and Haocheng Zhong, NeurIPS 2024.

Why: a lookback of 96 hours holds only four noisy copies of the daily cycle, while the
training split holds hundreds. The wrapper keeps one global cycle Q (period x channels),
removes it from the input at each step's phase, lets the wrapped network forecast the
residual, and adds the cycle back at the forecast steps' phases. CycleNet learns Q by SGD;
here SGD models do the same (Q starts at zero), and closed-form models get Q in closed form
too: the per-phase mean of the training windows (centred per channel), then the wrapped
model's own fit on the residuals.

The phase comes with the data, not from the values: a model built with ``cycle: P`` takes
windows whose last column is each lookback step's phase, the row's index in the prepared
series modulo P, or its step index where the series skips steps (``gaps: allow``)
(``PreparedSeries.windows(..., cycle=P)``; a job's windows get them from its spec's ``cycle``
through ``seqcomp.data.windows.job_windows``). Phase 0 is the series' first timestamp: for
hourly data starting at midnight, ``cycle: 24`` makes the phase the hour of day; otherwise the
training job says so (``seqcomp.data.windows.cycle_origin``). Forecast phases continue from the
last input step, one per row.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor


class ResidualCycle(nn.Module):
    """x (B, L, C + 1) with phases in the last column -> forecast (B, H, C)."""

    def __init__(self, net: nn.Module, channels: int, horizon: int, period: int):
        super().__init__()
        self.net, self.period, self.horizon = net, period, horizon
        self.cycle = nn.Parameter(torch.zeros(period, channels))  # Q (P, C)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(values (B, L, C), input phases (B, L), forecast phases (B, H)) of a window batch."""
        phase_in = x[..., -1].long()  # (B, L)
        steps = torch.arange(1, self.horizon + 1, device=x.device)
        phase_out = (phase_in[:, -1:] + steps) % self.period  # (B, H)
        return x[..., :-1], phase_in, phase_out

    def forward(self, x: Tensor) -> Tensor:
        values, phase_in, phase_out = self.split(x)
        residual = self.net(values - self.cycle[phase_in])  # (B, H, C)
        return residual + self.cycle[phase_out]


class ResidualCycleClosedForm(ResidualCycle):
    """The cycle as per-phase means of the training windows, then the wrapped closed-form fit."""

    @torch.no_grad()
    def fit_closed_form(self, x: Tensor, y: Tensor) -> None:
        values, phase_in, phase_out = self.split(x)
        channels = values.shape[-1]
        sums = torch.zeros(self.period, channels, dtype=torch.float64)
        counts = torch.zeros(self.period, dtype=torch.float64)
        sums.index_add_(0, phase_in.reshape(-1), values.reshape(-1, channels).double())
        counts.index_add_(0, phase_in.reshape(-1), torch.ones(phase_in.numel(), dtype=torch.float64))
        means = sums / counts.clamp_min(1)[:, None]
        # Centred: a constant offset belongs to the series level, which the wrapped model forecasts.
        self.cycle.copy_((means - means.mean(0)).to(self.cycle))
        self.net.fit_closed_form(values - self.cycle[phase_in], y - self.cycle[phase_out])

