"""Learned rounding (AdaRound) on a uniform grid: per weight, round up or down, learned from the
layer's calibration inputs instead of rounding to nearest.

Paper: "Up or Down? Adaptive Rounding for Post-Training Quantization", Markus Nagel, Rana Ali
Amjad, Mart van Baalen, Christos Louizos and Tijmen Blankevoort, ICML 2020 (arXiv:2004.10568).

For an nn.Linear weight W (out, in) on a fixed grid (scale s, offset o per row or group: the
grid the pass already fitted, left as it is), each weight may take the code ``floor(W/s) + o``
or one more. AdaRound relaxes that choice to ``h(V)`` in [0, 1], the rectified sigmoid
``h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)`` with zeta = 1.1, gamma = -0.1, and
minimises over V

    ||(W - W~(V)) X^T||^2 / ||(W - W_0) X^T||^2 + lambda * mean_i (1 - |2 h(V_i) - 1|^beta),

with ``W~(V) = s (clamp(floor(W/s) + o + h(V), 0, top) - o)`` and X the layer's calibration
inputs. The first term is the layer's output error relative to that of the pass's own rounding
W_0 (nearest for RTN, GPTQ's codes for GPTQ), so it is 1 for the rounding we start from and
lambda means the same on every layer and model scale (the paper sums squared errors, whose scale
depends on the layer). It is computed exactly, over all calibration rows, through the Gram matrix
``X^T X`` (quant/gptq.py's Hessian) factored as F F^T (F of rank r <= rows): tr(D H D^T) =
||D F||^2 with D = W - W~, so a step costs out * in * min(in, rows) whatever the number of rows,
and the optimisation is full-batch and deterministic. The second
term is the paper's regulariser: zero where h is 0 or 1, it pushes every h to one of them; its
exponent beta is annealed linearly from 20 to 2 after a warm-up of 20% of the steps without it
(the paper's schedule), so early steps find the continuous solution and later ones commit.
Defaults: beta 20 -> 2 after a 20% warm-up (the paper's), V initialised so that h(V) is the
fractional part of W/s (W~ = W at the start, the paper's init); Adam at lr 3e-2 for 300 steps
(the paper: 10k steps at lr 1e-3 on ImageNet CNNs; our layers are small and the budget is
minutes on a CPU), and lambda = 1. The paper's lambda is 0.01 on a sum of squared output errors
against a sum over weights; on our normalised loss (relative error, mean over weights) 0.01 leaves
the regulariser too weak to commit the weights in 300 steps: on a 32 x 64 layer with correlated
inputs (tests/test_rounding.py's), lambda 0.01 / 0.1 / 1 lowered 4-bit per-channel RTN's output
error from 0.103 to 0.094 / 0.078 / 0.053 and 2-bit from 0.686 to 0.683 / 0.597 / 0.398.

At the end each weight takes code floor + (h >= 0.5). The learned codes are kept only if their
output error on the calibration inputs is below the starting rounding's; otherwise the layer keeps
its own rounding and the report says so. The stored form is the grid's (same codes, scales, zero
points; only which code each weight gets changes), so decoding is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from seqcomp.compress.quant.bitpack import unpack_bits
from seqcomp.compress.quant.coded import Parts, Target
from seqcomp.compress.quant.common import KEPT
from seqcomp.compress.quant.rtn import parts_of
from seqcomp.compress.quant.uniform import QuantizedWeight, as_rows, code_max, encode, grouped, offsets, scale_values, ungrouped
from seqcomp.registry import check

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (AdaRound, eq. 23)
ROUNDINGS = ("nearest", "learned")


@dataclass(frozen=True)
class RoundingOptions:
    """Config fields of the passes that offer learned rounding (mixed into their ``Config``,
    whose ``__post_init__`` calls :meth:`check_rounding`)."""

    rounding: str = "nearest"  # nearest | learned
    rounding_steps: int = 300  # Adam steps per layer
    rounding_lr: float = 3e-2  # Adam learning rate on V
    rounding_reg: float = 1.0  # lambda, the regulariser's weight (on our normalised loss, see the module doc)
    rounding_beta_start: float = 20.0  # the regulariser's exponent, annealed linearly (the paper's 20 -> 2)
    rounding_beta_end: float = 2.0
    rounding_warmup: float = 0.2  # share of the steps before the regulariser starts (the paper's)

    def check_rounding(self) -> None:
        check(self.rounding in ROUNDINGS, "rounding", f"must be one of {list(ROUNDINGS)}, got {self.rounding!r}")
        check(
            type(self.rounding_steps) is int and self.rounding_steps > 0,
            "rounding_steps",
            f"must be a positive integer, got {self.rounding_steps!r}",
        )
        check(self.rounding_lr > 0, "rounding_lr", f"must be positive, got {self.rounding_lr!r}")
        check(self.rounding_reg >= 0, "rounding_reg", f"must be >= 0, got {self.rounding_reg!r}")
        check(
            self.rounding_beta_start >= self.rounding_beta_end > 0,
            "rounding_beta_start",
            f"must be >= rounding_beta_end > 0, got {self.rounding_beta_start!r} and {self.rounding_beta_end!r}",
        )
        check(0 <= self.rounding_warmup < 1, "rounding_warmup", f"must be in [0, 1), got {self.rounding_warmup!r}")

    def rounding_settings(self) -> RoundingSettings:
        return RoundingSettings(
            self.rounding_steps, self.rounding_lr, self.rounding_reg,
            self.rounding_beta_start, self.rounding_beta_end, self.rounding_warmup,
        )

    def rounding_header(self) -> dict[str, Any]:
        """The report's account of the rounding: the method and, when learned, its settings."""
        if self.rounding == "nearest":
            return {"rounding": "nearest"}
        return {
            "rounding": "learned",
            "rounding_method": "AdaRound (Nagel et al. 2020), full-batch on the Gram matrix of all calibration rows",
            "rounding_steps": self.rounding_steps,
            "rounding_lr": self.rounding_lr,
            "rounding_reg": self.rounding_reg,
            "rounding_beta": [self.rounding_beta_start, self.rounding_beta_end],
            "rounding_warmup": self.rounding_warmup,
        }


@dataclass(frozen=True)
class RoundingSettings:
    steps: int
    lr: float
    reg: float  # lambda
    beta_start: float
    beta_end: float
    warmup: float  # share of steps without the regulariser


def _soft(v: torch.Tensor) -> torch.Tensor:
    """AdaRound's rectified sigmoid h(V) in [0, 1]."""
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)


def _init_v(frac: torch.Tensor) -> torch.Tensor:
    """V with h(V) = ``frac`` (in [0, 1)), so the relaxed weight starts equal to W."""
    p = ((frac - GAMMA) / (ZETA - GAMMA)).clamp(1e-6, 1 - 1e-6)
    return torch.log(p / (1 - p))


def _per_element(values: torch.Tensor, width: int, group_size: int | None) -> torch.Tensor:
    """(R, G) per-group values -> (R, width), each repeated over its group's elements."""
    g = grouped(torch.zeros(values.shape[0], width), group_size)  # (R, G, w): only its shape is used
    return ungrouped(values[..., None].expand(g.shape), width)


def input_factor(h: torch.Tensor) -> torch.Tensor:
    """F (in, r) with F F^T = ``h`` (in, in), dropping the eigenvalues below 1e-9 of the largest.

    ||D F||^2 = tr(D H D^T) is a weight error D's squared output error; a step then costs
    out * in * r instead of out * in^2, r <= the number of calibration rows: a flattening head
    (PatchTST's, the Transformer's: thousands of inputs, one row per window) sees far fewer rows
    than it has inputs, and its rank is that small."""
    values, vectors = torch.linalg.eigh(h.double())
    keep = values > values.max().clamp(min=1e-300) * 1e-9
    return (vectors[:, keep] * values[keep].sqrt()).float()


def _output_error(delta: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """The squared output error ||D F||^2 of a weight error D (out, in), F from :func:`input_factor`."""
    return (delta @ factor).square().sum()


def _beta(step: int, settings: RoundingSettings) -> float | None:
    """The regulariser's exponent at ``step``, None during the warm-up (no regulariser)."""
    start = int(settings.warmup * settings.steps)
    if step < start:
        return None
    progress = (step - start) / max(settings.steps - start, 1)
    return settings.beta_end + (settings.beta_start - settings.beta_end) * (1 - progress)


def learn_rounding(
    weight: torch.Tensor, h: torch.Tensor, start: QuantizedWeight, bits: int, group_size: int | None, symmetric: bool,
    settings: RoundingSettings,
) -> tuple[QuantizedWeight, dict[str, Any]]:
    """Learned codes of ``weight`` (out, in) on the grid of ``start`` (its scales, zero points and
    unit are kept), given the Gram matrix ``h`` (in, in) of the layer's inputs (any positive
    multiple of X^T X). Returns the codes kept (the learned ones if they lower the output error
    on the calibration inputs, else ``start``) and a report entry: output errors (relative,
    ||(W - Q) X^T|| / ||W X^T||) of the starting and of the kept rounding, steps, which was kept."""
    w = as_rows(weight)  # (R, K)
    n_rows, k = w.shape
    factor = input_factor(h)
    top = code_max(bits, symmetric)
    zeros = None if start.zeros is None else unpack_bits(start.zeros, bits, start.scales.numel()).view(start.scales.shape)
    s = _per_element(scale_values(start.scales, start.unit), k, group_size)
    off = _per_element(offsets(start.scales, zeros, bits), k, group_size)
    start_codes = unpack_bits(start.codes, bits, n_rows * k).view(n_rows, k).float()

    def dequant(codes: torch.Tensor) -> torch.Tensor:
        return (codes - off) * s

    reference = _output_error(w, factor).clamp(min=1e-30)  # ||W X^T||^2
    start_err = _output_error(w - dequant(start_codes), factor)
    base = torch.floor(w / s) + off
    v = _init_v(w / s - torch.floor(w / s)).requires_grad_(True)
    optimiser = torch.optim.Adam([v], lr=settings.lr)
    norm = start_err.clamp(min=max(1e-12 * float(reference), 1e-30))  # a layer whose inputs are all 0: no error
    with torch.enable_grad():  # a caller may run the pass under no_grad
        for step in range(settings.steps):
            soft = _soft(v)
            loss = _output_error(w - dequant((base + soft).clamp(0, top)), factor) / norm
            beta = _beta(step, settings)
            if beta is not None and settings.reg > 0:
                loss = loss + settings.reg * (1 - (2 * soft - 1).abs().pow(beta)).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        learned = (base + (_soft(v) >= 0.5).float()).clamp(0, top)
        learned_err = _output_error(w - dequant(learned), factor)
    kept = bool(learned_err < start_err)
    codes = learned if kept else start_codes
    info = {
        "rounding_steps": settings.steps,
        "layer_output_rel_err_before": round(float((start_err / reference).sqrt()), 6),
        "layer_output_rel_err_after": round(float((torch.minimum(learned_err, start_err) / reference).sqrt()), 6),
        "rounding_kept": "learned" if kept else "start (learned rounding did not lower the layer's output error)",
        "codes_changed": int((codes != start_codes).sum()),
        "input_rank": factor.shape[1],  # rank of the calibration inputs (<= their number of rows)
    }
    return encode(codes, start.scales, zeros, bits, start.shape, start.unit), info


class LearnedRounding:
    """Mixin of the grid passes (quant/rtn.py's RTNGrid subclasses) whose ``Config`` has the
    :class:`RoundingOptions`: :meth:`round_layer` turns a layer's starting codes into the stored
    parts, learning the rounding when ``rounding: learned``, and the report gets the rounding's
    settings and, per coded parameter, the rounding it got."""

    def round_layer(self, target: Target, h: torch.Tensor | None, start: QuantizedWeight) -> Parts:
        """The parts of ``target`` from its starting codes ``start`` on the pass's grid: as they are
        (nearest rounding), or with learned rounding given the Gram matrix ``h`` of its inputs;
        a parameter without calibration inputs (``h`` None: not an nn.Linear weight) keeps ``start``."""
        c = self.config
        if c.rounding == "learned":
            if h is None:
                what = f"{type(target.module).__name__}.{target.pname}"
                self._rounding_rows[target.name] = {
                    "rounding": f"nearest ({what} is not an nn.Linear weight: no calibration inputs to learn from)"
                }
            else:
                bits = self.bits_of(target.group)
                start, info = learn_rounding(target.param, h, start, bits, c.group_size, c.symmetric, c.rounding_settings())
                self._rounding_rows[target.name] = {"rounding": "learned", **info}
        return self.tagged(parts_of(start), target.group)

    def apply(self, model: nn.Module, calib: torch.Tensor | None) -> tuple[nn.Module, dict[str, Any]]:
        """The pass's apply, with each coded row's rounding when it is learned."""
        self._rounding_rows: dict[str, dict[str, Any]] = {}
        model, report = super().apply(model, calib)
        for row in report["layers"]:
            if row["action"] != KEPT:
                row.update(self._rounding_rows.get(row["name"], {}))
        if self.config.rounding == "learned":  # not subsampled: every row of every window, through the Gram matrix
            report["rounding_calibration_windows"] = len(calib)
        return model, report

    def header(self) -> dict[str, Any]:
        return {**super().header(), **self.config.rounding_header()}
