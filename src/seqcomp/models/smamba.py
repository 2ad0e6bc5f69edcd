"""S-Mamba: bidirectional Mamba over variate tokens.

Paper: "Is Mamba Effective for Time Series Forecasting?", Zihan Wang et al., 2024
(arXiv:2403.11144); its ETTh1 numbers are the published Mamba results our benchmark compares to.

Why a second Mamba forecaster: ``mamba`` scans along time (one token per time step, as in
the Mamba paper), S-Mamba scans across variates, as iTransformer does with attention: each
channel's whole lookback window is embedded by one Linear (L -> d_model) into one token, so
the sequence has C tokens. A layer mixes the tokens with two Mamba blocks, one over the
tokens in order and one over the reversed order (the variates have no natural order), adds
both to the residual and normalises, then a per-token feed-forward (d_model -> d_ff ->
d_model) with its own residual and LayerNorm; a final LayerNorm and one Linear per token
(d_model -> H) give each channel's forecast. The Mamba blocks are ``mamba.MambaMixer`` with
the paper's expand 1 and convolution width 2.

Left out: the paper also appends timestamp features as extra tokens; the pipeline feeds the
model values only. Its instance normalisation (mean/std per window, no affine map) is the
model-level ``revin`` option here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from seqcomp.models import SeriesShape
from seqcomp.models._common import check_positive
from seqcomp.models.mamba import MambaMixer, check_selective


class SMambaLayer(nn.Module):
    """(B, C, D) -> (B, C, D): bidirectional Mamba token mixing, then a feed-forward, post-norm."""

    def __init__(self, d_model: int, d_ff: int, d_state: int, d_conv: int, dt_rank: int,
                 dt_min: float, dt_max: float, dropout: float, scan: str):
        super().__init__()
        self.forward_mixer, self.backward_mixer = (
            MambaMixer(d_model, d_state, 1, d_conv, dt_rank, dt_min, dt_max, scan=scan) for _ in range(2)
        )
        self.ff_in, self.ff_out = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.norm_mix, self.norm_ff = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        mixed = self.forward_mixer(h) + self.backward_mixer(h.flip(1)).flip(1)  # (B, C, D)
        h = self.norm_mix(h + mixed)
        z = self.drop(self.ff_out(self.drop(F.gelu(self.ff_in(h)))))  # (B, C, D)
        return self.norm_ff(h + z)


class SMambaForecaster(nn.Module):
    """Variate tokens (L -> d_model), ``n_layers`` :class:`SMambaLayer`, a per-token head d_model -> H."""

    @dataclass
    class Config:
        # Defaults: the paper's ETTh1 scripts (d_model = d_ff = 256, d_state 2, 2 layers).
        d_model: int = 256
        d_ff: int = 256
        d_state: int = 2
        n_layers: int = 2
        d_conv: int = 2
        dt_rank: int = 0  # 0: ceil(d_model / 16), as in Mamba
        dt_min: float = 1e-3
        dt_max: float = 1e-1
        dropout: float = 0.1
        scan: str = "auto"

        def __post_init__(self) -> None:
            check_positive(self, "d_model", "d_ff", "d_state", "n_layers", "d_conv")
            check_selective(self)

    def __init__(self, shape: SeriesShape, cfg: "SMambaForecaster.Config"):
        super().__init__()
        rank = cfg.dt_rank or math.ceil(cfg.d_model / 16)
        self.embed = nn.Linear(shape.lookback, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            SMambaLayer(cfg.d_model, cfg.d_ff, cfg.d_state, cfg.d_conv, rank, cfg.dt_min, cfg.dt_max, cfg.dropout, cfg.scan)
            for _ in range(cfg.n_layers)
        )
        self.norm_out = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, shape.horizon)

    def forward(self, x: Tensor) -> Tensor:
        h = self.drop(self.embed(x.transpose(1, 2)))  # (B, C, D): one token per channel
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm_out(h)).transpose(1, 2)  # (B, H, C)
