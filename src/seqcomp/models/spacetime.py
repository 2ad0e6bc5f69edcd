"""SpaceTime-style companion SSM: a discrete state space layer whose state matrix is a
companion matrix, and a forecaster built from it.

Paper: "Effectively Modeling Time Series with Simple Discrete State Spaces", Michael Zhang,
Khaled K. Saab, Michael Poli, Tri Dao, Karan Goel and Christopher Ré, ICLR 2023.

Why a third SSM: S4D and Mamba are discretised continuous systems with diagonal state
matrices; a companion matrix is discrete from the start and can represent any linear
recurrence of order N (AR(N) processes included, which diagonal real-time systems cannot
express exactly), so it is the member of the family with a genuinely different
parameterisation. Per feature h the layer is

    x_t = A x_{t-1} + b u_t,   y_t = c^T x_t + d u_t,   A = S + a e_N^T,

with S the down-shift (S x = (0, x_0, ..., x_{N-2})) and a the learned last column, so
A x costs O(N). The layer is the causal convolution with kernel k_j = c^T A^j b. Its
generating function at the L-th roots of unity is computed in O(N log N + L log L) without
forming A: by Sherman-Morrison on (I - S w) - w a e_N^T, every term is a polynomial in w whose
coefficients are a correlation of two of (a, b, c) ((I - S w)^{-1} = sum_k S^k w^k is
nilpotent), evaluated by one FFT. As in S4, the learned c stands for c^T (I - A^L): the
kernel the FFT returns is the impulse response folded modulo L, and ``forward_recurrent``
recovers the equivalent output map to run the same layer step by step (the test that both
modes agree).

What is left out of the paper's model: its fixed-kernel "preprocessing" SSMs (differencing,
moving averages) and its closed-loop companion decoder; the forecast head here is the
temporal head S4D and Mamba use, so the three SSMs differ only in the layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from seqcomp.models import SeriesShape
from seqcomp.models._common import OptimTagged, SSMStack, check_dropout, check_positive, fft_conv
from seqcomp.registry import check


def _correlate(x: Tensor, y: Tensor) -> Tensor:
    """r[k] = sum_i x[i + k] y[i] for k = 0..N-1, batched over leading dims (FFT of length 2N)."""
    n = x.shape[-1]
    spec = torch.fft.rfft(x, n=2 * n) * torch.fft.rfft(y.flip(-1), n=2 * n)  # convolution with y reversed
    return torch.fft.irfft(spec, n=2 * n)[..., n - 1 : 2 * n - 1]


def _at_roots(coeffs: Tensor, length: int) -> Tensor:
    """sum_k coeffs[k] w^k at w = exp(-2 pi i m / length), m = 0..length//2 (rfft points).

    Powers beyond ``length`` wrap around (w^length = 1), so the coefficients are folded first."""
    pad = (-coeffs.shape[-1]) % length
    folded = F.pad(coeffs, (0, pad)).unflatten(-1, (-1, length)).sum(-2)  # (..., length)
    return torch.fft.rfft(folded, n=length)


class CompanionSSM(OptimTagged):
    """Maps (B, L, H) -> (B, L, H) with H independent companion SSMs of state size N."""

    def __init__(self, d_model: int, d_state: int = 64, ssm_lr: float = 1e-3):
        super().__init__()
        h, n = d_model, d_state
        # a = 0 starts every SSM as a length-N FIR filter (A nilpotent: stable); training adds
        # feedback. b and c start random so the N taps are not all equal.
        self.a = nn.Parameter(torch.zeros(h, n))
        self.b = nn.Parameter(torch.randn(h, n) / math.sqrt(n))
        self.c = nn.Parameter(torch.randn(h, n) / math.sqrt(n))
        self.d = nn.Parameter(torch.randn(h))
        # The dynamics (a) and input map (b) train apart, smaller lr and no weight decay, as
        # S4D's A and dt do; groups.py calls them the "recurrent" group.
        self.tag_optim({"lr": ssm_lr, "weight_decay": 0.0}, "a", "b")

    def kernel(self, length: int) -> Tensor:
        """Convolution kernel (H, L) in fp32: sum_m c^T A^(j + mL) b for j < L."""
        a, b, c = self.a.float(), self.b.float(), self.c.float()
        shift = lambda p: F.pad(p, (1, 0))  # noqa: E731 - multiply a polynomial by w
        cb = _at_roots(_correlate(c, b), length)  # c^T (I - S w)^-1 b
        ca = _at_roots(shift(_correlate(c, a)), length)  # w c^T (I - S w)^-1 a
        eb = _at_roots(b.flip(-1), length)  # e_N^T (I - S w)^-1 b
        ea = _at_roots(shift(a.flip(-1)), length)  # w e_N^T (I - S w)^-1 a
        return torch.fft.irfft(cb + ca * eb / (1.0 - ea), n=length)  # (H, L)

    def forward(self, u: Tensor) -> Tensor:
        return fft_conv(u, self.kernel, self.d)  # (B, L, H)

    def matrix(self) -> Tensor:
        """The companion matrices A (H, N, N): ones below the diagonal, a in the last column."""
        h, n = self.a.shape
        A = torch.diag_embed(torch.ones(h, n - 1, device=self.a.device), offset=-1)
        A[:, :, -1] = self.a.float()
        return A

    def forward_recurrent(self, u: Tensor) -> Tensor:
        """The same map as ``forward``, step by step: x_t = A x_{t-1} + b u_t, y_t = c'^T x_t + d u_t,
        with c'^T = c^T (I - A^L)^-1, the output map that the folded kernel stands for."""
        length = u.shape[1]
        with torch.autocast(device_type=u.device.type, enabled=False):
            A = self.matrix()  # (H, N, N)
            eye = torch.eye(A.shape[-1], device=A.device)
            # c'^T (I - A^L) = c^T  <=>  (I - A^L)^T c' = c
            c_eff = torch.linalg.solve((eye - torch.linalg.matrix_power(A, length)).transpose(1, 2), self.c.float())
            state = u.new_zeros(u.shape[0], *self.a.shape, dtype=torch.float32)  # (B, H, N)
            ys = []
            for t in range(length):
                u_t = u[:, t].float()  # (B, H)
                state = torch.einsum("hij,bhj->bhi", A, state) + self.b.float() * u_t[..., None]
                ys.append((c_eff * state).sum(-1) + self.d.float() * u_t)  # (B, H)
        return torch.stack(ys, dim=1).to(u.dtype)  # (B, L, H)


class SpaceTimeForecaster(SSMStack):
    """Linear encoder C -> d_model, n_layers companion-SSM blocks, linear head over time and features."""

    @dataclass
    class Config:
        d_model: int = 64
        d_state: int = 64  # N: order of each companion recurrence
        n_layers: int = 2
        dropout: float = 0.1
        ssm_lr: float = 1e-3

        def __post_init__(self) -> None:
            check_positive(self, "d_model", "d_state", "n_layers")
            check_dropout(self)
            check(self.ssm_lr > 0, "ssm_lr", f"must be positive, got {self.ssm_lr}")

    def __init__(self, shape: SeriesShape, cfg: "SpaceTimeForecaster.Config"):
        super().__init__(shape, cfg.d_model, cfg.n_layers, cfg.dropout,
                         lambda: CompanionSSM(cfg.d_model, cfg.d_state, cfg.ssm_lr))
