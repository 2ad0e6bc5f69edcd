"""S4: the structured state space layer with a HiPPO state matrix, and a forecaster built from it.

Papers: "Efficiently Modeling Long Sequences with Structured State Spaces" (Gu, Goel and Ré,
ICLR 2022) and, for the bases and the timescale, "How to Train Your HiPPO" (Gu, Johnson et al.,
ICLR 2023). See docs/s4.md for the derivation and the comparison with state-spaces/s4.

Per feature h the layer is the SSM x' = A x + B u, y = C x + D u with N-dimensional real state
and A = Lambda - P P^* diagonal plus low rank (DPLR) in the basis that diagonalises the HiPPO
matrix's normal part (seqcomp.models.hippo.nplr); only one of each conjugate pair of modes is
stored, the other is its complex conjugate. Bilinear discretisation (the default) gives the
convolution kernel K_k = C dA^k dB (k < L) from its truncated generating function at the L-th
roots of unity z: with C~ = C (I - dA^L),

    sum_k K_k z^k = 2 [k00 - (1+z) k01 (I + (1+z) k11)^{-1} k10],
    k_ab(z) = sum_n a_n b_n / ((2/dt)(1-z) - lam_n (1+z))        (over all N modes)

(a in {C~, P^*}, b in {B, P}): Cauchy sums and the Woodbury identity for the low rank, then
an inverse FFT; O(L (N + log L)) per feature, in frequency chunks so memory stays bounded.
As in the S4 paper the parameter ``C`` holds C~ for the length the layer runs at (the kernel
then needs no matrix power); the recurrent mode recovers C = C~ (I - dA^L)^{-1} once per
sequence. Zero-order hold (``disc: zoh``) has no such rational form, so its kernel is built by
Krylov doubling, O(N^2 L); it and ``step`` use the dense discretised (dA, dB) over the full
N-dimensional complex state.

Parameters are real tensors (complex values as (..., 2) pairs, as in S4D).
Lambda (as Lambda_log_re, Lambda_im), P, B and log_dt are the recurrent dynamics (their own optimizer settings, and the
``recurrent`` compression group); C and D are read-out (``ssm`` group). Q is tied to P, as in
state-spaces/s4: A stays normal minus positive semi-definite low rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from seqcomp.models import SeriesShape
from seqcomp.models._common import (OptimTagged, SSMStack, as_complex, check_choice, check_dropout, check_positive,
                                    fft_conv)
from seqcomp.models.hippo import MEASURES, nplr
from seqcomp.registry import check

DISCRETISATIONS = ("bilinear", "zoh")


def _pairs(z: Tensor) -> Tensor:
    """Complex (...) -> real (..., 2) fp32."""
    return torch.view_as_real(z.to(torch.complex64)).clone()


class S4Layer(OptimTagged):
    """Maps (B, L, H) -> (B, L, H) with H independent DPLR SSMs of state size N."""

    def __init__(self, d_model: int, d_state: int = 64, measure: str = "legs", disc: str = "bilinear",
                 dt_min: float = 1e-3, dt_max: float = 1e-1, ssm_lr: float = 1e-3, chunk: int = 1024):
        super().__init__()
        form = nplr(measure, d_state)  # float64 eigendecomposition, once
        h = d_model
        self.disc, self.chunk = disc, chunk
        log_dt = torch.rand(h) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # (H,)
        self.log_dt = nn.Parameter(log_dt)
        # Re(Lambda) = -exp(Lambda_log_re) stays negative; LegT/FouT's is 0, clamped to -1e-4 as
        # in state-spaces/s4, since a pole on the unit circle (FouT's lam = 0 sits at z = 1)
        # makes the Cauchy sums singular.
        re = form.lam.real.clamp(max=-1e-4).float()
        self.Lambda_log_re = nn.Parameter((-re).log().expand(h, -1).clone())  # (H, N/2)
        self.Lambda_im = nn.Parameter(form.lam.imag.float().expand(h, -1).clone())  # (H, N/2)
        self.P = nn.Parameter(_pairs(form.P).expand(h, -1, -1, -1).clone())  # (H, N/2, r, 2)
        self.B = nn.Parameter(_pairs(form.B).expand(h, -1, -1).clone())  # (H, N/2, 2)
        self.C = nn.Parameter(torch.randn(h, d_state // 2, 2) * math.sqrt(0.5))  # (H, N/2, 2)
        self.D = nn.Parameter(torch.randn(h))
        self.tag_optim({"lr": ssm_lr, "weight_decay": 0.0}, "log_dt", "Lambda_log_re", "Lambda_im", "P", "B")

    def _full(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(dt (H,), lam (H, N), P (H, N, r), B (H, N), C~ (H, N)) over all N modes, float64/complex128."""
        def both(z: Tensor) -> Tensor:
            return torch.cat([z, z.conj()], dim=1)

        f64 = torch.float64
        lam = torch.complex(-self.Lambda_log_re.to(f64).exp(), self.Lambda_im.to(f64))
        return (self.log_dt.to(f64).exp(), both(lam), both(as_complex(self.P.to(f64))),
                both(as_complex(self.B.to(f64))), both(as_complex(self.C.to(f64))))

    def dense(self) -> tuple[Tensor, Tensor, Tensor]:
        """The discretised system over the full complex state, in complex128 (N x N matrices are
        cheap; fp32 exponentials and powers of them lose 1e-4 of the kernel):
        dA (H, N, N), dB (H, N), and the C~ parameter (H, N)."""
        dt, lam, P, B, C = self._full()
        A = torch.diag_embed(lam) - P @ P.conj().transpose(-1, -2)  # (H, N, N)
        eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        step = dt[:, None, None].to(A.dtype)
        if self.disc == "bilinear":
            back = eye - step / 2 * A
            dA = torch.linalg.solve(back, eye + step / 2 * A)
            dB = torch.linalg.solve(back, step[..., 0] * B)
        else:  # ZOH: exp(dt [[A, B], [0, 0]]) holds dA and dB = A^{-1} (dA - I) B, A singular or not
            n = A.shape[-1]
            M = torch.zeros(A.shape[0], n + 1, n + 1, dtype=A.dtype, device=A.device)
            M[:, :n, :n], M[:, :n, n] = A, B
            E = torch.linalg.matrix_exp(step * M)
            dA, dB = E[:, :n, :n], E[:, :n, n]
        return dA, dB, C

    def kernel(self, length: int) -> Tensor:
        """Convolution kernel K (H, L) in fp32, computed in float64: the Woodbury step cancels
        terms up to 1/|Re lam| larger than its result (1e4 for LegT/FouT), and in fp32 the kernel
        was off the dense reference by up to 2e-5 (LegT) and 2e-4 (FouT) of its peak, against
        5e-8 in float64 (docs/s4.md), for 1.5-1.8x the layer's time on CPU."""
        if self.disc == "zoh":
            dA, dB, C_tilde = self.dense()
            return self._krylov(dA, dB, untilde(dA, C_tilde, length), length)
        n = self.C.shape[1]
        dt, lam, P, B, C = (t[:, :n] if t.dim() > 1 else t for t in self._full())
        left = torch.cat([C[..., None], P.conj()], dim=-1)  # (H, N/2, 1+r): a
        right = torch.cat([B[..., None], P], dim=-1)  # (H, N/2, 1+r): b
        v = (left[..., :, None] * right[..., None, :]).flatten(-2)  # (H, N/2, (1+r)^2)
        nodes = torch.arange(length // 2 + 1, device=v.device, dtype=torch.float64)
        z = torch.exp(-2j * math.pi / length * nodes)  # (F,): the roots of unity rfft needs
        blocks = [self._cauchy_woodbury(z[i:i + self.chunk], dt, lam, v) for i in range(0, z.shape[0], self.chunk)]
        return torch.fft.irfft(torch.cat(blocks, dim=-1), n=length).float()  # (H, L)

    def _cauchy_woodbury(self, z: Tensor, dt: Tensor, lam: Tensor, v: Tensor) -> Tensor:
        """The generating function at nodes z (F,): (H, F). Checkpointed under autograd, so
        backward keeps one chunk's (H, F, N/2) Cauchy matrix at a time, not all of them."""
        if torch.is_grad_enabled() and v.requires_grad:
            return checkpoint(_generating_function, z, dt, lam, v, use_reentrant=False)
        return _generating_function(z, dt, lam, v)

    @staticmethod
    def _krylov(dA: Tensor, dB: Tensor, C: Tensor, length: int) -> Tensor:
        """K_k = C dA^k dB for k < L by doubling: [dB, dA dB, ...] grows 2x per dense product."""
        cols, power = dB[..., None], dA  # (H, N, 1), dA^1
        while cols.shape[-1] < length:
            cols = torch.cat([cols, power @ cols], dim=-1)
            power = power @ power
        return (C[:, None, :] @ cols[..., :length])[:, 0].real.float()  # (H, L)

    def forward(self, u: Tensor) -> Tensor:
        return fft_conv(u, self.kernel, self.D)  # (B, L, H)

    def recurrence(self, length: int) -> tuple[Tensor, Tensor, Tensor]:
        """(dA, dB, C) of the recurrence whose first ``length`` outputs ``forward`` computes."""
        dA, dB, C_tilde = self.dense()
        return tuple(p.to(torch.complex64) for p in (dA, dB, untilde(dA, C_tilde, length)))

    def step(self, u_t: Tensor, state: Tensor, params: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """One step: u_t (B, H), state (B, H, N) complex -> (y_t (B, H), state)."""
        dA, dB, C = params
        u32 = u_t.float()
        state = (dA @ state[..., None])[..., 0] + dB * u32[..., None]  # (B, H, N) complex64
        y = (C * state).sum(-1).real + self.D.float() * u32  # (B, H)
        return y.to(u_t.dtype), state

    def forward_recurrent(self, u: Tensor) -> Tensor:
        """The same map as ``forward``, one step at a time (O(L N^2) per feature)."""
        with torch.autocast(device_type=u.device.type, enabled=False):
            params = self.recurrence(u.shape[1])
            state = torch.zeros(u.shape[0], *params[1].shape, dtype=params[1].dtype, device=u.device)
            ys = []
            for t in range(u.shape[1]):
                y, state = self.step(u[:, t], state, params)  # (B, H)
                ys.append(y)
        return torch.stack(ys, dim=1)  # (B, L, H)


def untilde(dA: Tensor, C_tilde: Tensor, length: int) -> Tensor:
    """C = C~ (I - dA^L)^{-1}: the output map of the recurrence whose length-L kernel the
    generating function with C~ gives. dA (H, N, N), C~ (H, N)."""
    eye = torch.eye(dA.shape[-1], dtype=dA.dtype, device=dA.device)
    lhs = (eye - torch.linalg.matrix_power(dA, length)).transpose(-1, -2)
    return torch.linalg.solve(lhs, C_tilde[..., None])[..., 0]


def _generating_function(z: Tensor, dt: Tensor, lam: Tensor, v: Tensor) -> Tensor:
    """2 [k00 - (1+z) k01 (I + (1+z) k11)^{-1} k10] at z (F,), over conjugate-paired modes.

    ``v`` (H, N/2, (1+r)^2) holds a_n b_n for a in (C~, conj P), b in (B, P); the conjugate mode
    has numerator conj(v) and pole conj(lam). Multiplying the Cauchy sums by (1+z) removes the
    bilinear map's pole at z = -1 (state-spaces/s4 divides by 1 + z there instead)."""
    r = math.isqrt(v.shape[-1]) - 1
    one_minus = (2 / dt)[:, None, None] * (1 - z)[None, :, None]  # (H, F, 1)
    one_plus = (1 + z)[None, :, None]  # (1, F, 1)
    k = (1 / (one_minus - lam[:, None, :] * one_plus)) @ v \
        + (1 / (one_minus - lam.conj()[:, None, :] * one_plus)) @ v.conj()  # (H, F, (1+r)^2)
    k = k.unflatten(-1, (1 + r, 1 + r))  # (H, F, 1+r, 1+r)
    s = one_plus[..., None]  # (1, F, 1, 1)
    eye = torch.eye(r, dtype=k.dtype, device=k.device)
    low = s * k[..., :1, 1:] @ torch.linalg.solve(eye + s * k[..., 1:, 1:], k[..., 1:, :1])  # (H, F, 1, 1)
    return 2 * (k[..., 0, 0] - low[..., 0, 0])  # (H, F)


class S4Forecaster(SSMStack):
    """Linear encoder C -> d_model, n_layers S4 blocks, linear head over time and features."""

    @dataclass
    class Config:
        d_model: int = 64
        d_state: int = 64  # N: real state size (N/2 conjugate pairs of modes)
        n_layers: int = 2
        measure: str = "legs"  # HiPPO basis: "legs" | "legt" | "fout" (seqcomp.models.hippo)
        disc: str = "bilinear"  # "bilinear" (Cauchy kernel) | "zoh" (Krylov kernel, O(N^2 L))
        # Timescale (How to Train Your HiPPO, sec. 4): 1/dt is the length of the dependencies a
        # feature follows (LegT/FouT: exactly its window in steps), so dt is log-uniform in
        # [dt_min, dt_max] with 1/dt_min the sequence length: null means 1/lookback.
        dt_min: float | None = None
        dt_max: float = 0.1
        dropout: float = 0.1
        ssm_lr: float = 1e-3
        chunk: int = 1024  # frequencies per Cauchy block: bounds the kernel's memory

        def __post_init__(self) -> None:
            check_positive(self, "d_model", "d_state", "n_layers", "chunk")
            check(self.d_state % 2 == 0, "d_state", f"must be even (conjugate pairs), got {self.d_state}")
            check_choice(self.measure, "measure", MEASURES)
            check_choice(self.disc, "disc", DISCRETISATIONS)
            check(self.dt_min is None or 0 < self.dt_min <= self.dt_max, "dt_min",
                  f"need 0 < dt_min <= dt_max (or null), got {self.dt_min}, {self.dt_max}")
            check(self.dt_max > 0, "dt_max", f"must be positive, got {self.dt_max}")
            check_dropout(self)
            check(self.ssm_lr > 0, "ssm_lr", f"must be positive, got {self.ssm_lr}")

    def __init__(self, shape: SeriesShape, cfg: "S4Forecaster.Config"):
        dt_min = cfg.dt_min if cfg.dt_min is not None else min(1 / shape.lookback, cfg.dt_max)
        super().__init__(shape, cfg.d_model, cfg.n_layers, cfg.dropout,
                         lambda: S4Layer(cfg.d_model, cfg.d_state, cfg.measure, cfg.disc, dt_min, cfg.dt_max,
                                         cfg.ssm_lr, cfg.chunk))
