"""Decoder-only (causal) Transformer whose feed-forward layers are sparse mixtures of experts.

Papers: "Time-MoE: Billion-Scale Time Series Foundation Models with Mixture of Experts",
Xiaoming Shi, Shiyu Wang, Yuqi Nie, Dianqi Li, Zhou Ye, Qingsong Wen and Ming Jin, ICLR 2025
(arXiv:2409.16040; released code: github.com/Time-MoE/Time-MoE); "Moirai-MoE: Empowering Time
Series Foundation Models with Sparse Mixture of Experts", Xu Liu, Juncheng Liu, Gerald Woo,
Taha Aksu, Yuxuan Liang, Roger Zimmermann, Chenghao Liu, Silvio Savarese, Caiming Xiong and
Doyen Sahoo, 2024 (arXiv:2410.10469; released code: SalesforceAIResearch/uni2ts); the
load-balancing loss of "Switch Transformers", William Fedus, Barret Zoph and Noam Shazeer,
JMLR 2022 (arXiv:2101.03961). The released code was read for the details below; nothing is
copied from it.

Each channel is a separate series (channel independence, shared weights). It is cut into
tokens, either single **points** (``tokens: point``, Time-MoE) or non-overlapping **patches**
of ``patch_len`` points (``tokens: patch``, Moirai-MoE), embedded by a gated map (SiLU(W x) *
(V x), Time-MoE's point embedding), and run through ``n_layers`` pre-norm (RMSNorm) decoder
layers: causal multi-head self-attention with rotary position codes (RoPE, so a pre-trained
model takes any context length), then a sparse mixture-of-experts feed-forward layer:

- a router scores the ``n_experts`` experts for each token (softmax over a linear map of the
  token, ``router: linear``; or over minus the squared distance to one learned centroid per
  expert, ``router: centroid``), each token goes to its ``top_k`` best experts, whose outputs
  are summed weighted by their (not renormalised) router probabilities;
- an optional always-on **shared expert** (``shared_expert: true``) is added, gated per token
  by a sigmoid of a linear map;
- experts are SwiGLU feed-forward blocks (SiLU(W1 x) * (W3 x), then W2), plain nn.Linear
  layers so every compression pass and int8 dynamic quantization reach them;
- the **load-balancing loss** of Switch Transformers, E * sum_i f_i P_i, where f_i is the
  fraction of the (token, slot) assignments routed to expert i and P_i the mean router
  probability of expert i over the tokens: 1 when routing is balanced (uniform f or uniform
  P), up to E / top_k when all tokens pick the same experts with certainty. It is averaged
  over layers and added to the training loss with weight ``aux_weight`` (Time-MoE's alpha,
  0.02) through :meth:`MoETransformer.aux_loss`, which the training module adds to its loss.

**Multi-resolution heads** (Time-MoE): one linear head per output horizon in ``horizons``
(default: one head, the data's horizon), each mapping the last token's state to that many
future points. A horizon H is served by the smallest head that covers it, truncated to H;
if none covers it, the largest head forecasts, its forecast is appended to the series and the
model runs again (Time-MoE's autoregressive scheduling), until H points are out. The heads do
not depend on H, so a model trained at one horizon serves any other. Time-MoE trains every
head at every position of the sequence (next-h-points loss); here the pipeline's loss trains
the serving head on the forecast, and ``ar_weight`` adds Time-MoE's objective inside the
lookback: every head predicts, from every token whose next h points still lie in the
lookback, those points (MSE, averaged over heads), so every head learns even when another
one serves the horizon. Routing statistics (how many tokens each expert of each layer got)
accumulate over forwards: :meth:`MoETransformer.routing_counts`, reset by
:meth:`MoETransformer.reset_routing_counts`. For compression, each MoE layer declares its routed
experts, router and shared expert (:meth:`SparseMoE.compression_groups`), which become the
parameter groups ``experts``, ``router`` and ``shared_expert`` (seqcomp.compress.quant.groups).

What follows the papers and what the released code:

- Expert width. Time-MoE's paper (its model-size table, as we read it) lists d_expert = 192
  beside d_ff = 1536 for Time-MoE-base (8 experts, top 2); its released code gives each
  routed expert intermediate_size // top_k (768) and the shared expert the full
  intermediate_size, and the paper's own parameter counts (113M total, 50M activated) match
  the code's widths, not the table's. Here
  ``expert_ff`` (default None) is the routed experts' width, d_ff // top_k when None (the
  released code's, so that top_k experts cost one dense FFN); the shared expert has ``d_ff``.
  Time-MoE's released router and experts have no biases (kept here); its top-k
  probabilities are not renormalised (kept here).
- Moirai-MoE's routing. The paper routes each token to the experts whose cluster centroids
  are nearest, the centroids being k-means centroids of a pre-trained dense Moirai's
  attention outputs, fixed during training. The released uni2ts code takes the top-k of the
  Euclidean distances (the farthest centroids, as we read ``torch.topk`` there), softmaxes the
  selected distances, receives the centroids from outside the layer and has no
  load-balancing loss. Here ``router: centroid`` routes to the nearest centroids (the
  paper's rule), with the centroids learned with the model (we have no pre-trained dense
  model to cluster), and the same load-balancing loss as the linear router.
- Moirai (dense) is a masked encoder with several patch sizes and any-variate attention
  (the variates of a window share one sequence); Moirai-MoE, as we read its paper, is
  decoder-only with one patch size and lets the experts specialise instead. ``tokens: patch``
  is that decoder-only, one-patch-size form, channel-independent (no any-variate attention).
- Neither model's instance normalisation is built in: set the model-level ``revin: true``
  (Time-MoE normalises each series, Moirai-MoE scales each window).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from seqcomp.models import SeriesShape
from seqcomp.models._common import check_choice, check_dropout, check_positive
from seqcomp.registry import check


def load_balance_loss(probs: Tensor, chosen: Tensor, n_experts: int) -> Tensor:
    """Switch Transformers' auxiliary loss E * sum_i f_i P_i for one layer.

    ``probs`` (T, E): router probabilities of T tokens; ``chosen`` (T, k): the experts each
    token was sent to. f_i: the fraction of the T*k assignments that went to expert i (no
    gradient: it counts); P_i: the mean probability of expert i (differentiable, so the
    gradient pushes probability away from overloaded experts).
    """
    f = torch.bincount(chosen.flatten(), minlength=n_experts).to(probs.dtype) / chosen.numel()
    return n_experts * (f * probs.mean(0)).sum()


def rotary(x: Tensor) -> Tensor:
    """RoPE on (B, heads, T, d): each pair (x_j, x_{j+d/2}) rotated by position * 10000^(-2j/d)."""
    t, d = x.shape[-2], x.shape[-1]
    freq = 10000.0 ** (-torch.arange(0, d // 2, device=x.device, dtype=torch.float32) / (d // 2))
    angle = torch.arange(t, device=x.device, dtype=torch.float32)[:, None] * freq  # (T, d/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class SwiGLU(nn.Module):
    """W2 (SiLU(W1 x) * W3 x): the expert (and shared expert) feed-forward block, no biases."""

    def __init__(self, d_model: int, width: int):
        super().__init__()
        self.gate = nn.Linear(d_model, width, bias=False)
        self.up = nn.Linear(d_model, width, bias=False)
        self.down = nn.Linear(width, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class SparseMoE(nn.Module):
    """Top-k routed experts plus an optional sigmoid-gated shared expert; (..., D) -> (..., D).

    After each forward: ``balance`` (the layer's load-balancing loss, a tensor with the
    router's gradient) and ``counts`` (assignments per expert, accumulated, no gradient).
    """

    def __init__(self, d_model: int, n_experts: int, top_k: int, expert_ff: int, shared_ff: int | None, router: str):
        super().__init__()
        self.n_experts, self.top_k = n_experts, top_k
        # The router (a weight matrix or the centroids) is a bare parameter, not an nn.Linear:
        # int8 dynamic quantization leaves it fp32, and so do the weight passes unless a config
        # selects its group (``router``, not a default one), since a rounding that flips a
        # token's top-k choice swaps a whole expert's output.
        self.linear_router = router == "linear"
        scale = 1 / d_model**0.5 if self.linear_router else 1.0  # nn.Linear's init range for a weight
        self.router = nn.Parameter(scale * (2 * torch.rand(n_experts, d_model) - 1) if self.linear_router
                                   else torch.randn(n_experts, d_model))
        self.experts = nn.ModuleList(SwiGLU(d_model, expert_ff) for _ in range(n_experts))
        self.shared = SwiGLU(d_model, shared_ff) if shared_ff else None
        self.shared_gate = nn.Linear(d_model, 1, bias=False) if shared_ff else None
        self.balance: Tensor | None = None
        self.counts: Tensor | None = None

    def __getstate__(self) -> dict:
        # The last forward's loss holds its autograd graph, which a copy (the compression
        # stage deep-copies models) neither needs nor can take: deepcopy refuses non-leaf tensors.
        return {**super().__getstate__(), "balance": None}

    def compression_groups(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        """The parts compression may code apart (seqcomp.compress.quant.groups.GROUP_HOOK): the
        routed experts (in expert order, as ``counts``), the router, the shared expert and its gate."""
        groups: dict[str, list[nn.Module | nn.Parameter]] = {"experts": list(self.experts), "router": [self.router]}
        if self.shared is not None:
            groups["shared_expert"] = [self.shared, self.shared_gate]
        return groups

    def router_logits(self, x: Tensor) -> Tensor:
        """(T, D) -> (T, E): a linear score, or minus the squared distance to each centroid
        (``router`` then holds one centroid per row)."""
        if self.linear_router:
            return F.linear(x, self.router.to(x.dtype))
        return -(x.float()[:, None, :] - self.router.float()).square().sum(-1)

    def forward(self, h: Tensor) -> Tensor:
        x = h.reshape(-1, h.shape[-1])  # (T, D)
        probs = torch.softmax(self.router_logits(x).float(), dim=-1)  # (T, E), fp32 under autocast
        weights, chosen = probs.topk(self.top_k, dim=-1)  # (T, k)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            # An expert no token chose still runs (on no rows): every parameter stays in the
            # graph with a zero gradient, as data-parallel training expects of each step.
            token, slot = torch.where(chosen == e)
            y = expert(x[token]) * weights[token, slot, None]
            out = out.index_add(0, token, y.to(out.dtype))
        if self.shared is not None:
            out = out + torch.sigmoid(self.shared_gate(x)) * self.shared(x)
        self.balance = load_balance_loss(probs, chosen, self.n_experts)
        with torch.no_grad():
            counts = torch.bincount(chosen.flatten(), minlength=self.n_experts)
            self.counts = counts if self.counts is None else self.counts.to(counts.device) + counts
        return out.view_as(h)


class DecoderLayer(nn.Module):
    """x + causal RoPE attention(RMSNorm(x)), then x + MoE(RMSNorm(x)); (N, T, D) -> (N, T, D)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, moe: SparseMoE):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.norm1 = nn.RMSNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.norm2 = nn.RMSNorm(d_model)
        self.moe = moe
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(rotary(q), rotary(k), v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(n, t, d)))
        return x + self.drop(self.moe(self.norm2(x)))


class MoETransformer(nn.Module):
    transfer_head = ("heads",)  # what head-only fine-tuning trains (seqcomp.train.transfer): the output heads

    @dataclass
    class Config:
        tokens: str = "point"  # "point" (Time-MoE) | "patch" (Moirai-MoE)
        patch_len: int = 16  # points per token with tokens: patch
        d_model: int = 32
        n_heads: int = 4
        n_layers: int = 2
        d_ff: int = 64  # the dense FFN width the experts split (and the shared expert's width)
        expert_ff: int | None = None  # a routed expert's width; None: d_ff // top_k (Time-MoE's released code)
        n_experts: int = 4
        top_k: int = 2
        shared_expert: bool = True
        router: str = "linear"  # "linear" (Time-MoE, Switch) | "centroid" (Moirai-MoE)
        aux_weight: float = 0.02  # weight of the load-balancing loss (Time-MoE's alpha)
        horizons: list[int] | None = None  # output heads' horizons; None: one head, the data's horizon
        ar_weight: float = 1.0  # weight of the in-lookback next-h-points loss of every head
        dropout: float = 0.1

        def __post_init__(self) -> None:
            check_choice(self.tokens, "tokens", ("point", "patch"))
            check_choice(self.router, "router", ("linear", "centroid"))
            check_positive(self, "patch_len", "d_model", "n_heads", "n_layers", "d_ff", "n_experts", "top_k")
            check(self.d_model % self.n_heads == 0 and (self.d_model // self.n_heads) % 2 == 0, "n_heads",
                  f"must divide d_model={self.d_model} into heads of an even width (rotary codes rotate pairs)")
            check(self.top_k <= self.n_experts, "top_k", f"{self.top_k} exceeds n_experts={self.n_experts}")
            if self.expert_ff is not None:
                check_positive(self, "expert_ff")
            check(self.d_ff >= self.top_k or self.expert_ff is not None, "d_ff",
                  f"{self.d_ff} split among top_k={self.top_k} experts leaves them no width; set expert_ff")
            if self.horizons is not None:
                check(len(self.horizons) > 0 and all(h > 0 for h in self.horizons)
                      and len(set(self.horizons)) == len(self.horizons), "horizons",
                      f"must be distinct positive integers, got {self.horizons}")
            check(self.aux_weight >= 0, "aux_weight", f"must be >= 0, got {self.aux_weight}")
            check(self.ar_weight >= 0, "ar_weight", f"must be >= 0, got {self.ar_weight}")
            check_dropout(self)

    def __init__(self, shape: SeriesShape, cfg: "MoETransformer.Config"):
        super().__init__()
        self.width = 1 if cfg.tokens == "point" else cfg.patch_len
        check(shape.lookback % self.width == 0, "patch_len",
              f"the lookback {shape.lookback} is not a multiple of the patch length {self.width}")
        self.horizon, self.aux_weight, self.ar_weight = shape.horizon, cfg.aux_weight, cfg.ar_weight
        self.horizons = sorted(cfg.horizons or [shape.horizon])
        expert_ff = cfg.expert_ff or cfg.d_ff // cfg.top_k
        self.embed_gate = nn.Linear(self.width, cfg.d_model)
        self.embed_up = nn.Linear(self.width, cfg.d_model)
        self.layers = nn.ModuleList(
            DecoderLayer(cfg.d_model, cfg.n_heads, cfg.dropout,
                         SparseMoE(cfg.d_model, cfg.n_experts, cfg.top_k, expert_ff,
                                   cfg.d_ff if cfg.shared_expert else None, cfg.router))
            for _ in range(cfg.n_layers)
        )
        self.norm = nn.RMSNorm(cfg.d_model)
        self.heads = nn.ModuleList(nn.Linear(cfg.d_model, h) for h in self.horizons)
        self._aux: Tensor | None = None

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_aux": None}  # see SparseMoE.__getstate__

    def encode(self, series: Tensor) -> Tensor:
        """(N, T_points) -> (N, T_tokens, D): the last token ends at the last point (the
        oldest points that do not fill a token are left out)."""
        tokens = series[:, series.shape[1] % self.width:].unflatten(1, (-1, self.width))  # (N, T, w)
        h = F.silu(self.embed_gate(tokens)) * self.embed_up(tokens)
        for layer in self.layers:
            h = layer(h)
        return self.norm(h)

    def serving_head(self, horizon: int) -> int:
        """The index of the smallest head covering ``horizon``, else of the largest head."""
        return next((i for i, h in enumerate(self.horizons) if h >= horizon), len(self.horizons) - 1)

    def forward(self, x: Tensor) -> Tensor:
        b, _, c = x.shape
        series = x.transpose(1, 2).reshape(b * c, -1)  # (B*C, L): channels become batch
        self._aux = None
        h = self.encode(series)
        if self.training:
            self._aux = self._auxiliary(series, h)
        out, remaining = [], self.horizon
        while True:
            head = self.serving_head(remaining)
            y = self.heads[head](h[:, -1])  # (B*C, h_j)
            out.append(y[:, :remaining])
            remaining -= y.shape[1]
            if remaining <= 0:
                break
            series = torch.cat([series, y], dim=1)  # Time-MoE's scheduling: forecast, append, rerun
            h = self.encode(series)
        return torch.cat(out, dim=1).view(b, c, self.horizon).transpose(1, 2)  # (B, H, C)

    def _auxiliary(self, series: Tensor, h: Tensor) -> Tensor:
        """aux_weight * mean load-balancing loss over layers + ar_weight * the heads' mean
        next-h-points MSE inside the lookback (heads whose h leaves no target there are skipped)."""
        aux = self.aux_weight * torch.stack([layer.moe.balance for layer in self.layers]).mean()
        length, n_tokens = series.shape[1], h.shape[1]
        # Token t (0-based) ends at point length - (n_tokens - t) * w + w - 1; its targets start after it.
        starts = length - (n_tokens - 1 - torch.arange(n_tokens, device=series.device)) * self.width
        errors = []
        for head, horizon in zip(self.heads, self.horizons):
            valid = starts + horizon <= length
            if valid.any():
                targets = series.unfold(1, horizon, 1)[:, starts[valid]]  # (N, T_valid, h)
                errors.append(F.mse_loss(head(h[:, valid]).float(), targets.float()))
        if errors and self.ar_weight:
            aux = aux + self.ar_weight * torch.stack(errors).mean()
        return aux

    def aux_loss(self) -> Tensor | None:
        """The training-only loss terms of the last forward in training mode (load balancing,
        in-lookback head losses), weighted; None after an eval-mode forward. The training
        module adds it to its loss (seqcomp.train.module.auxiliary_loss)."""
        return self._aux

    def routing_counts(self) -> Tensor:
        """(n_layers, n_experts): token assignments per expert since the last reset (each
        token counts once for each of its top_k experts)."""
        counts = [layer.moe.counts for layer in self.layers]
        if any(c is None for c in counts):
            return torch.zeros(len(self.layers), self.layers[0].moe.n_experts, dtype=torch.long)
        return torch.stack([c.cpu() for c in counts])

    def reset_routing_counts(self) -> None:
        for layer in self.layers:
            layer.moe.counts = None
