"""A pre-norm Transformer encoder built from nn.Linear layers, shared by transformer and patchtst.

Why not nn.TransformerEncoderLayer: its attention keeps the q/k/v projection as a bare
parameter and the output projection as a non-quantizable Linear subclass, and its eval-mode
fast path breaks (reads ``linear1.weight`` as a tensor) once int8 dynamic quantization has
replaced its Linear layers. Here every weight matrix is a plain nn.Linear.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class EncoderLayer(nn.Module):
    """x + MHA(LN(x)), then x + FFN(LN(x)); (B, T, D) -> (B, T, D), no mask (full attention)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, t, 3, self.n_heads, d // self.n_heads)  # (B, T, 3, heads, D/heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, D/heads)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        a = a.transpose(1, 2).reshape(b, t, d)  # (B, T, D)
        x = x + self.drop(self.out(a))
        return x + self.drop(self.ff(self.norm2(x)))  # (B, T, D)


class Encoder(nn.Module):
    """n_layers EncoderLayers and a final LayerNorm (needed with pre-norm residuals)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)
