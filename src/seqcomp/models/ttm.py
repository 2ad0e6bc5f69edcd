"""TTM: Tiny Time Mixers, a small channel-independent MLP-mixer over patches, built to be pre-trained.

Paper: "Tiny Time Mixers (TTMs): Fast Pre-trained Models for Enhanced Zero/Few-Shot
Forecasting of Multivariate Time Series", Vijay Ekambaram, Arindam Jati, Pankaj Dayama,
Sumanta Mukherjee, Nam H. Nguyen, Wesley M. Gifford, Chandra Reddy and Jayant Kalagnanam,
NeurIPS 2024 (arXiv:2401.03955). Released code: IBM granite-tsfm (``tsfm_public/models/
tinytimemixer``), read for the layer order; nothing here is copied from it.

Each channel is forecast on its own with shared weights: the lookback is cut into
non-overlapping patches of ``patch_len`` points, each patch is embedded to ``d_model``, and the
patch tokens go through

- the **backbone**: ``levels`` adaptive-patching levels of ``n_layers`` mixer layers each.
  Level i (i = 0 .. levels-1) splits every token's ``d_model`` features into s = 2^(levels-1-i)
  tokens of ``d_model / s`` features, mixes them, and merges them back: the first level sees
  s times more, finer patches, the last the patches as cut. A mixer layer is a patch-mixing
  MLP (across tokens) and a feature-mixing MLP (across features), each pre-normed
  (LayerNorm), followed by gated attention (the MLP output times a softmax of a linear map of
  itself) and added to its input;
- the **decoder**: a linear adapter ``d_model -> decoder_d_model`` and ``decoder_layers``
  smaller mixer layers. With ``decoder_channel_mixing: true`` each decoder layer first mixes
  across channels too (gated attention, then an MLP over the C channels: TTM's "mix_channel"
  decoder mode, meant to be switched on when fine-tuning on a multivariate target);
- the **head**: dropout and one linear map from all tokens' features to the H forecast points.

Optional **resolution prefix token** (``resolution_token: true``): a learned embedding of the
sampling resolution (``resolution``, one of :data:`RESOLUTIONS`) is prepended as an extra
token, so a model pre-trained on series seen at several resolutions knows which one it reads.
``forward(x, resolution=ids)`` takes per-window resolution ids (a pre-training corpus mixes
them); without ids, every window gets the configured one.

What follows the paper and what the released code: the layer order (gated attention after
each MLP; before the MLP in the channel mixer), GELU MLPs with expansion 2, LayerNorm, no
positional encoding, the decoder adapter and the flatten head follow the released code, which
the paper's figures agree with. The resolution token: the paper describes a learned
resolution embedding prepended as a patch; the released code embeds the resolution id to
``patch_len`` values and maps them through a two-layer GELU MLP to ``d_model``; here it is one
``nn.Embedding`` row of ``d_model`` values per resolution (the paper's form). TTM's released
models scale each window by its own mean and standard deviation inside the model; here
instance normalisation is not built in (set the model-level ``revin: true``, as for PatchTST),
and the forecast is a point forecast trained with the configured loss (the released code also
has distribution and quantile heads and a forecast-channel-mixing head with exogenous inputs:
not built).

Defaults: TTM's released 512-96 configuration (context 512, patch 64, so 8 patches; d_model
192, 3 levels of 2 layers, expansion 2, decoder d_model 128 with 2 layers, dropout 0.2): at
lookback 512, horizon 96 it has 805,280 parameters (TTM reports about 805K; tested). A small
configuration for CPU is :data:`SMALL` (patch 16, d_model 64, 2 levels, 1 decoder layer of
width 32): 216,896 parameters at lookback 512 / horizon 96 (32 patches; the head is half of
it), 81,956 at lookback 96 / horizon 96 (tested).
The lookback must be a multiple of ``patch_len`` (TTM's own context lengths are: 512/64,
1024/128, 1536/128).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from seqcomp.models import SeriesShape
from seqcomp.models._common import check_choice, check_dropout, check_positive
from seqcomp.registry import check

# Sampling resolutions a prefix token can name (granite-tsfm's frequency vocabulary, in its
# order; "oov" is any other resolution).
RESOLUTIONS = ("oov", "min", "2min", "5min", "10min", "15min", "30min", "h", "d", "W")

# The small configuration for CPU (pre-training on a 2-core box in minutes, not hours).
SMALL = {"patch_len": 16, "d_model": 64, "levels": 2, "n_layers": 2, "decoder_d_model": 32, "decoder_layers": 1}


class MLP(nn.Module):
    """n -> expansion * n -> n_out with GELU and dropout after each linear map."""

    def __init__(self, width: int, expansion: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, width * expansion), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(width * expansion, width), nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class GatedAttention(nn.Module):
    """x * softmax(W x + b) over the last axis: a learned, input-dependent re-weighting."""

    def __init__(self, width: int):
        super().__init__()
        self.gate = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.softmax(self.gate(x), dim=-1)


class Mixer(nn.Module):
    """Pre-normed MLP over one axis of (B, C, N, D) and gated attention, with a residual.

    ``axis`` is the axis mixed: 1 (channels), 2 (tokens) or 3 (features); ``gate_first``
    puts the gated attention before the MLP (the channel mixer's order).
    """

    def __init__(self, d_model: int, axis: int, width: int, expansion: int, dropout: float, gate_first: bool = False):
        super().__init__()
        self.axis, self.gate_first = axis, gate_first
        self.norm = nn.LayerNorm(d_model)
        self.mlp = MLP(width, expansion, dropout)
        self.gate = GatedAttention(width)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x).transpose(self.axis, -1)  # the mixed axis last
        h = self.mlp(self.gate(h)) if self.gate_first else self.gate(self.mlp(h))
        return x + h.transpose(self.axis, -1)


class MixerLayer(nn.Module):
    """(channel mixing), patch mixing, feature mixing on (B, C, N, D)."""

    def __init__(self, n_tokens: int, d_model: int, expansion: int, dropout: float, channels: int | None = None):
        super().__init__()
        self.channel_mixer = Mixer(d_model, 1, channels, expansion, dropout, gate_first=True) if channels else None
        # One token has nothing to mix with (TTM skips it the same way).
        self.patch_mixer = Mixer(d_model, 2, n_tokens, expansion, dropout) if n_tokens > 1 else None
        self.feature_mixer = Mixer(d_model, 3, d_model, expansion, dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.channel_mixer is not None:
            x = self.channel_mixer(x)
        if self.patch_mixer is not None:
            x = self.patch_mixer(x)
        return self.feature_mixer(x)


class AdaptiveLevel(nn.Module):
    """Mixer layers on ``factor`` times more tokens of 1/``factor`` the features, merged back."""

    def __init__(self, factor: int, n_tokens: int, d_model: int, n_layers: int, expansion: int, dropout: float):
        super().__init__()
        self.factor = factor
        self.layers = nn.Sequential(
            *(MixerLayer(n_tokens * factor, d_model // factor, expansion, dropout) for _ in range(n_layers))
        )

    def forward(self, x: Tensor) -> Tensor:
        b, c, n, d = x.shape
        h = self.layers(x.reshape(b, c, n * self.factor, d // self.factor))  # (B, C, N*s, D/s)
        return h.reshape(b, c, n, d)


def check_channels(cfg: "TTM.Config", channels: int | None) -> None:
    """A channel-mixing decoder needs the target's channel count, and one it was built for.

    ``channels`` is the data's count, or None where it is not known (a channel-independent
    corpus, a config checked before its data exists). Raises ValueError naming both numbers.
    """
    if not cfg.decoder_channel_mixing:
        return
    check(channels is not None, "decoder_channel_mixing",
          "mixes channels, but the channel count is unknown here (a channel-independent corpus?); "
          "switch it on when fine-tuning on a target with a known channel count")
    check(cfg.channels is None or cfg.channels == channels, "channels",
          f"the channel-mixing decoder is built for {cfg.channels} channels, the data has {channels}")


class TTM(nn.Module):
    # What head-only fine-tuning trains (seqcomp.train.transfer): TTM's own fine-tuning freezes
    # the backbone and trains the decoder and the forecast head.
    transfer_head = ("adapter", "decoder", "head")

    @dataclass
    class Config:
        patch_len: int = 64
        d_model: int = 192
        levels: int = 3  # adaptive-patching levels (1: none)
        n_layers: int = 2  # mixer layers per level
        expansion: int = 2
        decoder_d_model: int = 128
        decoder_layers: int = 2
        decoder_channel_mixing: bool = False
        channels: int | None = None  # the channel count the mixing decoder is built for (None: the data's)
        resolution_token: bool = False
        resolution: str = "oov"  # one of RESOLUTIONS: the prefix token's default resolution
        dropout: float = 0.2
        head_dropout: float = 0.2

        def __post_init__(self) -> None:
            check_positive(self, "patch_len", "d_model", "levels", "n_layers", "expansion", "decoder_d_model",
                           "decoder_layers")
            factor = 2 ** (self.levels - 1)
            check(self.d_model % factor == 0, "levels",
                  f"{self.levels} levels split d_model into {factor} parts, which must divide d_model={self.d_model}")
            check(self.channels is None or self.decoder_channel_mixing, "channels",
                  "only the channel-mixing decoder uses it: set decoder_channel_mixing: true or leave channels out")
            if self.channels is not None:
                check_positive(self, "channels")
            check_choice(self.resolution, "resolution", RESOLUTIONS)
            check_dropout(self)
            check_dropout(self, "head_dropout")

    def __init__(self, shape: SeriesShape, cfg: "TTM.Config"):
        super().__init__()
        check(shape.lookback % cfg.patch_len == 0, "patch_len",
              f"the lookback {shape.lookback} is not a multiple of the patch length {cfg.patch_len}")
        check_channels(cfg, shape.channels)
        self.patch_len, self.horizon = cfg.patch_len, shape.horizon
        n_tokens = shape.lookback // cfg.patch_len + int(cfg.resolution_token)
        self.embed = nn.Linear(cfg.patch_len, cfg.d_model)
        if cfg.resolution_token:
            self.resolution = nn.Embedding(len(RESOLUTIONS), cfg.d_model)
            self.register_buffer("default_resolution", torch.tensor(RESOLUTIONS.index(cfg.resolution)), persistent=False)
        else:
            self.resolution = None
        self.backbone = nn.Sequential(*(
            AdaptiveLevel(2 ** (cfg.levels - 1 - i), n_tokens, cfg.d_model, cfg.n_layers, cfg.expansion, cfg.dropout)
            for i in range(cfg.levels)
        ))
        self.adapter = nn.Linear(cfg.d_model, cfg.decoder_d_model)
        mixed = shape.channels if cfg.decoder_channel_mixing else None
        self.decoder = nn.Sequential(*(
            MixerLayer(n_tokens, cfg.decoder_d_model, cfg.expansion, cfg.head_dropout, channels=mixed)
            for _ in range(cfg.decoder_layers)
        ))
        self.head = nn.Sequential(nn.Flatten(-2), nn.Dropout(cfg.head_dropout),
                                  nn.Linear(n_tokens * cfg.decoder_d_model, shape.horizon))

    def forward(self, x: Tensor, resolution: Tensor | None = None) -> Tensor:
        """x (B, L, C) -> (B, H, C); ``resolution``: per-window ids into RESOLUTIONS (B,), used
        only with the prefix token (default: the configured resolution for every window)."""
        b, _, c = x.shape
        patches = x.transpose(1, 2).unflatten(-1, (-1, self.patch_len))  # (B, C, N, P)
        h = self.embed(patches)  # (B, C, N, D)
        if self.resolution is not None:
            ids = self.default_resolution.expand(b) if resolution is None else resolution
            token = self.resolution(ids)[:, None, None, :].expand(b, c, 1, -1)  # (B, C, 1, D)
            h = torch.cat([token, h], dim=2)  # (B, C, N+1, D)
        h = self.decoder(self.adapter(self.backbone(h)))  # (B, C, N', D_dec)
        return self.head(h).transpose(1, 2)  # (B, H, C)
