"""Mamba: selective state space blocks and a forecaster built from them.

Paper: "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", Albert Gu and Tri
Dao, 2023 (arXiv:2312.00752).

A block projects the input to two streams (x, z); x goes through a short causal depthwise
convolution and SiLU, then a selective SSM whose step dt, input map B and output map C depend
on the current input (that is what makes it "selective"); the SSM output is gated by SiLU(z)
and projected back. A = -exp(A_log) is diagonal and real (S4D-Real init A_n = -(n+1)). The
scan itself lives in selective_scan.py (sequential loop, chunked parallel scan, or the
mamba_ssm CUDA kernel when installed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from seqcomp.models import SeriesShape
from seqcomp.models._common import OptimTagged, TemporalHead, check_choice, check_dropout, check_positive
from seqcomp.models.selective_scan import selective_scan
from seqcomp.registry import check

SCANS = ("auto", "sequential", "chunked")


def check_selective(cfg: object) -> None:
    """The checks every config of Mamba blocks shares: step-size range, dt rank, dropout, scan."""
    check(isinstance(cfg.dt_rank, int) and cfg.dt_rank >= 0, "dt_rank", f"must be >= 0 (0 = auto), got {cfg.dt_rank!r}")
    check(0 < cfg.dt_min <= cfg.dt_max, "dt_min", f"need 0 < dt_min <= dt_max, got {cfg.dt_min}, {cfg.dt_max}")
    check_dropout(cfg)
    check_choice(cfg.scan, "scan", SCANS)


class MambaMixer(OptimTagged):
    """(B, L, d_model) -> (B, L, d_model): the selective SSM block without norm and residual."""

    def __init__(self, d_model: int, d_state: int, expand: int, d_conv: int, dt_rank: int,
                 dt_min: float, dt_max: float, dt_init_floor: float = 1e-4, scan: str = "auto"):
        super().__init__()
        e = expand * d_model
        self.d_inner, self.d_state, self.dt_rank, self.scan = e, d_state, dt_rank, scan
        self.in_proj = nn.Linear(d_model, 2 * e, bias=False)
        # Depthwise causal conv: pad both sides by d_conv-1 and keep the first L outputs.
        self.conv = nn.Conv1d(e, e, d_conv, groups=e, padding=d_conv - 1)
        self.x_proj = nn.Linear(e, dt_rank + 2 * d_state, bias=False)
        # The low-rank dt projection has no bias here: the bias is added in fp32 (dt_bias).
        self.dt_proj = nn.Linear(dt_rank, e, bias=False)
        nn.init.uniform_(self.dt_proj.weight, -(dt_rank**-0.5), dt_rank**-0.5)
        # dt_bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max], so that at init
        # softplus(dt_bias) spans the same range of time scales as S4's log_dt.
        dt = torch.exp(torch.rand(e) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # (E,)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(e, 1))  # (E, N)
        self.D = nn.Parameter(torch.ones(e))
        self.out_proj = nn.Linear(e, d_model, bias=False)
        # Weight decay would push A_log to 0 (A = -1) and dt towards softplus(0); none for them.
        self.tag_optim({"weight_decay": 0.0}, "A_log", "dt_bias", "D")

    def forward(self, u: Tensor) -> Tensor:
        length = u.shape[1]
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (B, L, E) each
        x = self.conv(x.transpose(1, 2))[..., :length].transpose(1, 2)  # (B, L, E), causal
        x = F.silu(x)
        dt_low, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)  # (B, L, R|N|N)
        dt = self.dt_proj(dt_low)  # (B, L, E)
        # The recurrence runs in fp32 with autocast off: exp(dt*A) products over long
        # sequences and dt near dt_min are not representable in bf16.
        with torch.autocast(device_type=u.device.type, enabled=False):
            dt = F.softplus(dt.float() + self.dt_bias.float())  # (B, L, E), > 0
            A = -torch.exp(self.A_log.float())  # (E, N), < 0
            y = selective_scan(x.float(), dt, A, B.float(), C.float(), self.D.float(), self.scan)  # (B, L, E)
        y = y.to(z.dtype) * F.silu(z)  # (B, L, E)
        return self.out_proj(y)  # (B, L, d_model)


class MambaForecaster(nn.Module):
    """Linear embedding C -> d_model, pre-norm residual Mamba blocks, head over time and features."""

    @dataclass
    class Config:
        d_model: int = 32
        d_state: int = 16
        n_layers: int = 2
        expand: int = 2
        d_conv: int = 4
        dt_rank: int = 0  # 0: ceil(d_model / 16), as in the paper
        dt_min: float = 1e-3
        dt_max: float = 1e-1
        dropout: float = 0.0
        scan: str = "auto"  # "auto" | "sequential" | "chunked"

        def __post_init__(self) -> None:
            check_positive(self, "d_model", "d_state", "n_layers", "expand", "d_conv")
            check_selective(self)

    def __init__(self, shape: SeriesShape, cfg: "MambaForecaster.Config"):
        super().__init__()
        d = cfg.d_model
        rank = cfg.dt_rank or math.ceil(d / 16)
        self.embed = nn.Linear(shape.channels, d)
        self.mixers = nn.ModuleList(
            MambaMixer(d, cfg.d_state, cfg.expand, cfg.d_conv, rank, cfg.dt_min, cfg.dt_max, scan=cfg.scan)
            for _ in range(cfg.n_layers)
        )
        self.norms = nn.ModuleList(nn.RMSNorm(d) for _ in range(cfg.n_layers))
        self.norm_out = nn.RMSNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = TemporalHead(shape.lookback, shape.horizon, d, shape.channels)

    def forward(self, x: Tensor) -> Tensor:
        # The residual stream stays fp32 under autocast (Mamba's residual_in_fp32): it sums
        # every block's output, and bf16 rounding would accumulate along it.
        h = self.embed(x).float()  # (B, L, D)
        for mixer, norm in zip(self.mixers, self.norms):
            h = h + self.drop(mixer(norm(h))).float()  # pre-norm residual
        return self.head(self.norm_out(h))  # (B, H, C)
