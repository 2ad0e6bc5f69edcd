"""PatchTST: channel-independent Transformer over patches of each series.

Paper: "A Time Series is Worth 64 Words: Long-term Forecasting with Transformers", Yuqi Nie,
Nam H. Nguyen, Phanwadee Sinthong and Jayant Kalagnanam, ICLR 2023.

Each channel is forecast on its own with shared weights (channel independence): the series
is cut into overlapping patches (patch_len 16, stride 8; the end is padded by repeating the
last value ``stride`` times, as in the paper), each patch is one token, a Transformer encoder
runs over the patch tokens, and a flatten head maps all tokens to the H future values.
Differences from the paper: LayerNorm instead of BatchNorm in the encoder; instance
normalisation is not built in (set the model-level ``revin: true`` to get it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from seqcomp.models import SeriesShape
from seqcomp.models._attention import Encoder
from seqcomp.models._common import check_dropout, check_positive
from seqcomp.registry import check


class PatchTST(nn.Module):
    @dataclass
    class Config:
        patch_len: int = 16
        stride: int = 8
        d_model: int = 32
        n_heads: int = 4
        n_layers: int = 2
        d_ff: int = 64
        dropout: float = 0.1

        def __post_init__(self) -> None:
            check_positive(self, "patch_len", "stride", "d_model", "n_heads", "n_layers", "d_ff")
            check(self.d_model % self.n_heads == 0, "n_heads", f"must divide d_model={self.d_model}")
            check_dropout(self)

    def __init__(self, shape: SeriesShape, cfg: "PatchTST.Config"):
        super().__init__()
        check(shape.lookback >= cfg.patch_len, "patch_len", f"{cfg.patch_len} exceeds the lookback {shape.lookback}")
        self.patch_len, self.stride, self.horizon = cfg.patch_len, cfg.stride, shape.horizon
        self.n_patches = (shape.lookback + cfg.stride - cfg.patch_len) // cfg.stride + 1
        self.embed = nn.Linear(cfg.patch_len, cfg.d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(self.n_patches, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.n_layers)
        self.head = nn.Linear(self.n_patches * cfg.d_model, shape.horizon)

    def forward(self, x: Tensor) -> Tensor:
        b, _, c = x.shape
        series = x.transpose(1, 2).reshape(b * c, 1, -1)  # (B*C, 1, L): channels become batch
        series = F.pad(series, (0, self.stride), mode="replicate").squeeze(1)  # (B*C, L + stride)
        patches = series.unfold(-1, self.patch_len, self.stride)  # (B*C, P, patch_len)
        h = self.drop(self.embed(patches) + self.pos)  # (B*C, P, D)
        h = self.encoder(h)  # (B*C, P, D)
        y = self.head(h.flatten(1))  # (B*C, H)
        return y.view(b, c, self.horizon).transpose(1, 2)  # (B, H, C)
