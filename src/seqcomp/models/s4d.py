"""S4D: a diagonal structured state space layer and a forecaster built from it.

Paper: "On the Parameterization and Initialization of Diagonal State Space Models", Albert
Gu, Ankit Gupta, Karan Goel and Christopher Ré, NeurIPS 2022.

Per feature h the layer is the continuous SSM x' = A x + B u, y = 2 Re(C x) + D u with
diagonal complex A over N/2 modes (the other N/2 are the complex conjugates, hence the
factor 2 and the real part). Zero-order hold with a learnable step dt gives
dA = exp(dt A), dB = (dA - 1) / A * B, and the layer is the causal convolution with kernel
K_l = 2 Re(sum_n C_n dB_n dA_n^l) (a Vandermonde product), computed by FFT; ``step`` runs the
same discretised recurrence one time step at a time.

B is fixed to 1, as in the paper's S4D: B and C enter the map only through their product
C_n B_n, so a learned B adds no function, only parameters (a third of the layer's recurrent
group, which compression must keep in high precision: see seqcomp.compress.quant.groups).

All parameters are real tensors: complex values are stored as (..., 2) real/imaginary pairs
because quantization tooling drops imaginary parts of complex tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from seqcomp.models import SeriesShape
from seqcomp.models._common import OptimTagged, SSMStack, as_complex, check_choice, check_dropout, check_positive, fft_conv
from seqcomp.models.hippo import nplr
from seqcomp.registry import check

INITS = ("lin", "inv", "legs")


class S4DLayer(OptimTagged):
    """Maps (B, L, H) -> (B, L, H) with H independent diagonal SSMs of state size N."""

    def __init__(self, d_model: int, d_state: int = 64, init: str = "lin", dt_min: float = 1e-3,
                 dt_max: float = 1e-1, ssm_lr: float = 1e-3):
        super().__init__()
        h, n = d_model, d_state // 2
        log_dt = torch.rand(h) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # (H,)
        modes = torch.arange(n, dtype=torch.float32).expand(h, n)  # (H, N/2)
        if init == "lin":  # S4D-Lin: A_n = -1/2 + i pi n
            imag = math.pi * modes
        elif init == "inv":  # S4D-Inv: A_n = -1/2 + i N/pi (N/(2n+1) - 1), the asymptotics of HiPPO-LegS
            imag = d_state / math.pi * (d_state / (2 * modes + 1) - 1)
        else:  # S4D-LegS: the eigenvalues of HiPPO-LegS's normal part, -1/2 + i w_n (S4 without P P^*)
            imag = nplr("legs", d_state).lam.imag.float().expand(h, n)
        self.log_dt = nn.Parameter(log_dt)
        # Re(A) = -exp(A_log_re) stays negative (a stable SSM) whatever the optimiser does.
        self.A_log_re = nn.Parameter(torch.full((h, n), math.log(0.5)))
        self.A_im = nn.Parameter(imag.clone())
        self.C = nn.Parameter(torch.randn(h, n, 2) * math.sqrt(0.5))  # (H, N/2, 2): unit complex variance
        self.D = nn.Parameter(torch.randn(h))
        # Recurrent parameters get their own optimizer group (smaller lr, no weight decay),
        # following state-spaces/s4: weight decay would pull dt and A towards degenerate values.
        self.tag_optim({"lr": ssm_lr, "weight_decay": 0.0}, "log_dt", "A_log_re", "A_im")

    def discretize(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Zero-order hold: (dtA, dA, dB, C), each complex (H, N/2)."""
        dt = self.log_dt.float().exp()[:, None]  # (H, 1)
        A = torch.complex(-self.A_log_re.float().exp(), self.A_im.float())  # (H, N/2)
        dtA = A * dt  # (H, N/2)
        dA = torch.exp(dtA)
        dB = (dA - 1.0) / A  # (H, N/2): B = 1
        return dtA, dA, dB, as_complex(self.C.float())

    def kernel(self, length: int) -> Tensor:
        """Convolution kernel K (H, L) in fp32."""
        dtA, _, dB, C = self.discretize()
        steps = torch.arange(length, device=dtA.device, dtype=torch.float32)  # (L,)
        vandermonde = torch.exp(dtA[..., None] * steps)  # (H, N/2, L): dA^l
        return 2.0 * torch.einsum("hn,hnl->hl", C * dB, vandermonde).real  # (H, L)

    def forward(self, u: Tensor) -> Tensor:
        return fft_conv(u, self.kernel, self.D)  # (B, L, H)

    def initial_state(self, batch: int, device: torch.device | None = None) -> Tensor:
        return torch.zeros(batch, self.D.shape[0], self.A_im.shape[1], dtype=torch.cfloat, device=device)

    def step(self, u_t: Tensor, state: Tensor, params: tuple[Tensor, ...] | None = None) -> tuple[Tensor, Tensor]:
        """One step of the recurrence: u_t (B, H), state (B, H, N/2) complex -> (y_t (B, H), state)."""
        _, dA, dB, C = params if params is not None else self.discretize()
        u32 = u_t.float()
        state = dA * state + dB * u32[..., None]  # (B, H, N/2)
        y = 2.0 * (C * state).sum(-1).real + self.D.float() * u32  # (B, H)
        return y.to(u_t.dtype), state

    def forward_recurrent(self, u: Tensor) -> Tensor:
        """The same map as ``forward``, run step by step through the recurrence (O(L) steps)."""
        with torch.autocast(device_type=u.device.type, enabled=False):
            params = self.discretize()  # discretise once, not per step
            state = self.initial_state(u.shape[0], u.device)
            ys = []
            for t in range(u.shape[1]):
                y, state = self.step(u[:, t], state, params)  # (B, H)
                ys.append(y)
        return torch.stack(ys, dim=1)  # (B, L, H)


class S4DForecaster(SSMStack):
    """Linear encoder C -> d_model, n_layers S4D blocks, linear head over time and features."""

    @dataclass
    class Config:
        d_model: int = 64
        d_state: int = 64  # N: real state size, i.e. N/2 complex conjugate-pair modes
        n_layers: int = 2
        init: str = "lin"  # "lin" (S4D-Lin) | "inv" (S4D-Inv) | "legs" (S4D-LegS)
        dt_min: float = 1e-3
        dt_max: float = 1e-1
        dropout: float = 0.1
        ssm_lr: float = 1e-3

        def __post_init__(self) -> None:
            check_positive(self, "d_model", "d_state", "n_layers")
            check(self.d_state % 2 == 0, "d_state", f"must be even (conjugate pairs), got {self.d_state}")
            check_choice(self.init, "init", INITS)
            check(0 < self.dt_min <= self.dt_max, "dt_min", f"need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
            check_dropout(self)
            check(self.ssm_lr > 0, "ssm_lr", f"must be positive, got {self.ssm_lr}")

    def __init__(self, shape: SeriesShape, cfg: "S4DForecaster.Config"):
        super().__init__(shape, cfg.d_model, cfg.n_layers, cfg.dropout,
                         lambda: S4DLayer(cfg.d_model, cfg.d_state, cfg.init, cfg.dt_min, cfg.dt_max, cfg.ssm_lr))
