"""PV-tuning-lite: fine-tune a quantized model's scales and its discrete codes, not through the STE.

Paper: "PV-Tuning: Beyond Straight-Through Estimation for Extreme LLM Compression", Vladimir
Malinovskii, Denis Mazur, Ivan Ilin, Denis Kuznedelev, Konstantin Burlachenko, Kai Yi, Dan
Alistarh and Peter Richtarik, NeurIPS 2024 (arXiv:2405.14852). A quantized weight is split into
continuous parameters (here the per-row/group scales) and discrete ones (the codes); PV-tuning
alternates a P step, which optimises the continuous parameters with the codes fixed, and a V
step, which changes the codes with the continuous parameters fixed. Its V step is linearised:
with g the gradient of the loss w.r.t. the dequantized weight w, the new codes minimise
<g, w(c)> + ||w(c) - w||^2 / (2 eta), i.e. they round ``w - eta * g`` to the grid, but only within
a small subspace of the codes (the ones the step helps most); every other code stays as it is.

This "lite" version, on the uniform grid of rtn_weight_sim / gptq_weight_sim:

1. ``base`` (a nested pass config, validated like a chain step) quantizes the model: its codes,
   scales and stored form are the starting point.
2. P step: one epoch of Adam over the training windows, with the codes fixed, on each group's
   scale (as a log-ratio to the base scale: always positive, and ``scale_lr`` is a relative step
   whatever the weight's magnitude) and, at ``lr``, on every parameter the base pass left
   unquantized (norms, biases, unselected weights), except the SSM recurrent parameters, which
   stay as they are unless the base pass codes them (as in qat_sim).
3. V step: the gradient g of the loss w.r.t. every dequantized weight over all the training
   windows; the target is ``w - eta * g``. Re-rounding it to the grid changes a code once
   ``eta * |g| >= scale / 2``, so as eta grows codes change in the order of ``|g| / scale``
   (over all coded weights: they share one loss). The V step takes the smallest eta at which
   the ``v_fraction`` share of codes with the largest ``|g| / scale`` change, and moves each of
   those one grid step against its gradient, clamped to the grid (one step at most: a trust
   region; at 2-3 bits a grid step is a large change). The linearisation ignores curvature,
   so the step is kept only if it lowers the training loss; otherwise half as many codes move,
   and so on down to none (a backtracking search over the subspace size); the next V step
   starts from the size that was kept.
4. After each P+V round, the val windows' task loss (what the evaluation scores) of the model
   exactly as it would be stored (scales rounded to their stored dtype, kept tensors to
   ``keep_dtype``); the best state so far is kept, the base pass's state included, and training
   stops after ``patience`` rounds without a better one. So the val loss is never worse than the
   base pass's.

Objective: distillation, the MSE between the quantized model's forecasts and the fp32 model's
(the model this pass receives) on the calibration windows, as in qat_sim. Why: the windows a
pass gets are inputs only (no targets), the fp32 model is the best forecaster we have, and the
same objective and data make the comparison with qat_sim at the same bits one of the method
alone (STE on latent weights vs P/V updates of codes and scales). The task loss is used only to
choose when to stop, on the val windows. ``max_windows`` caps the training windows (CPU time).

The result is the base pass's stored form (same parts, same decode, same size), so it round-trips
through the base pass's unpack. Which base passes fit is :data:`BASES`: a mapping from a base
kind to the class that splits its stored parts into continuous and discrete halves
(:class:`GridCodes` for the uniform grid). A vector-code pass whose parts are a codebook
(continuous) and indices (discrete) fits by adding its own such class there: its V step would
rank index changes by the gain of the linearised step in the same way. Simulated: fake-quant on fp32 kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.func import functional_call

from seqcomp.compress import apply_pass, build_pass, check_nested
from seqcomp.compress.quant.bitpack import pack_bits
from seqcomp.compress.quant.coded import Parts, coded_parts, kept_form, real_view
from seqcomp.compress.quant.common import run_calibration, task_loss
from seqcomp.compress.quant.groups import named_groups
from seqcomp.compress.quant.rtn import parts_of, quantized_weight
from seqcomp.compress.quant.size import BITS_SUFFIX
from seqcomp.compress.quant.uniform import (
    UNIT_SCALE_DTYPES,
    QuantizedWeight,
    code_max,
    grid_codes,
    grouped,
    scale_values,
    ungrouped,
)
from seqcomp.registry import check


class GridCodes:
    """One uniform-grid weight split for PV-tuning: float codes (R, G, w) and zero-code offsets
    fixed by the base pass, a trainable log-ratio per row/group scale."""

    def __init__(self, base: Any, parts: Parts, shape: torch.Size):
        c = base.config
        self.bits = int(parts[BITS_SUFFIX]) if BITS_SUFFIX in parts else c.bits
        self.tag = parts.get(BITS_SUFFIX)
        self.group_size, self.shape = c.group_size, shape
        qw = quantized_weight(parts, shape)
        self.codes, self.offset, self.width = grid_codes(qw, self.bits, c.group_size)
        self.initial = self.codes.clone()
        self.valid = grouped(torch.ones(self.codes.shape[0], self.width), c.group_size) > 0  # not padding
        self.top = code_max(self.bits, c.symmetric)
        self.zeros, self.unit, self.scale_dtype = qw.zeros, qw.unit, qw.scales.dtype
        self.base_stored = qw.scales
        self.base_scale = scale_values(qw.scales, qw.unit)
        self.log_ratio = nn.Parameter(torch.zeros_like(self.base_scale))

    def continuous(self) -> list[nn.Parameter]:
        return [self.log_ratio]

    def _grouped(self, rows: torch.Tensor) -> torch.Tensor:
        return grouped(rows.reshape(self.codes.shape[0], self.width), self.group_size)

    def scale(self) -> torch.Tensor:
        return self.base_scale * torch.exp(self.log_ratio)

    def weight(self) -> torch.Tensor:
        """The dequantized real weight, differentiable w.r.t. the scales."""
        w = (self.codes - self.offset[..., None]) * self.scale()[..., None]
        return ungrouped(w, self.width).reshape(self.shape)

    def ranks(self, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(``|grad| / scale``: the rank of each code in the V step, 0 where no step is possible;
        the codes after one grid step against ``grad``), both (R, G, w)."""
        g = self._grouped(grad)
        moved = self.codes - torch.sign(g)
        feasible = (moved >= 0) & (moved <= self.top) & self.valid & (g != 0)
        with torch.no_grad():
            rank = g.abs() / self.scale()[..., None]
        return torch.where(feasible, rank, torch.zeros_like(rank)), moved

    def parts(self) -> Parts:
        """The base pass's parts for the current codes and scales (scales rounded to their stored dtype)."""
        with torch.no_grad():
            s = self.scale() if self.unit is None else self.scale() / self.unit
            limit = torch.finfo(self.scale_dtype).max
            stored = s.clamp(max=limit).to(self.scale_dtype)
            stored = torch.where(stored.float() > 0, stored.float(), self.base_stored.float()).to(self.scale_dtype)
        codes = pack_bits(ungrouped(self.codes, self.width).reshape(-1).to(torch.uint8), self.bits)
        parts = parts_of(QuantizedWeight(codes, stored, self.shape, self.zeros, self.unit))
        return parts if self.tag is None else {**parts, BITS_SUFFIX: self.tag}


# base pass kind -> how its stored parts split into continuous and discrete halves
BASES: dict[str, type[GridCodes]] = {"rtn_weight_sim": GridCodes, "gptq_weight_sim": GridCodes}


def _base_params(base: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in base.items() if k != "kind"}


class PVTune:
    """A grid pass's codes and scales fine-tuned by alternating P and V steps, stopped on validation."""

    @dataclass(frozen=True)
    class Config:
        base: dict[str, Any] | None = None  # {kind: rtn_weight_sim | gptq_weight_sim, <its params>}
        epochs: int = 3  # P+V rounds, each one epoch of P over the windows then one V step
        lr: float = 1e-4  # Adam, on the parameters the base pass left unquantized
        scale_lr: float = 1e-3  # Adam, on the scales' log-ratios (a relative step)
        v_fraction: float = 0.01  # share of all codes one V step may change (0: P steps only)
        patience: int = 2  # rounds without a better val loss before stopping
        batch_size: int = 32
        max_windows: int | None = None  # cap on the training windows (null: all calibration windows)
        seed: int = 0

        def __post_init__(self) -> None:
            base = self.base
            check(
                isinstance(base, dict) and base.get("kind") in BASES,
                "base",
                f"must be a grid pass {{kind: one of {sorted(BASES)}, <its params>}}, got {base!r}",
            )
            check_nested(base["kind"], _base_params(base), "base")
            for key in ("epochs", "patience", "batch_size"):
                value = getattr(self, key)
                check(type(value) is int and value > 0, key, f"must be a positive integer, got {value!r}")
            for key in ("lr", "scale_lr"):
                value = getattr(self, key)
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                check(number and value > 0, key, f"must be a positive number, got {value!r}")
            v = self.v_fraction
            check(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1,
                "v_fraction",
                f"must be a number in [0, 1], got {v!r}",
            )
            m = self.max_windows
            check(m is None or (type(m) is int and m > 0), "max_windows", f"must be null or a positive integer, got {m!r}")
            check(type(self.seed) is int, "seed", f"must be an integer, got {self.seed!r}")

    kind: ClassVar[str] = "pv_tune_sim"
    simulated: ClassVar[bool] = True
    uses_validation: ClassVar[bool] = True  # early stopping and the kept state are chosen on val

    def __init__(self, config: Config):
        self.config = config
        self.base = build_pass(config.base["kind"], _base_params(config.base), "base")

    def apply(
        self, model: nn.Module, calib: torch.Tensor | None, validation: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[nn.Module, dict[str, Any]]:
        """Quantize with the base pass, then alternate P and V steps on ``calib`` against the
        fp32 outputs; keep the state with the best val loss."""
        if calib is None:
            raise ValueError(f"{self.kind} needs calibration windows (N, L, C): it distils the fp32 model's outputs on them")
        if validation is None:
            raise ValueError(f"{self.kind} needs the labeled val windows: it stops and keeps its best state on their loss")
        c = self.config
        n = calib.shape[0] if c.max_windows is None else min(c.max_windows, calib.shape[0])
        originals = {name: real_view(p).float().clone() for name, p in model.named_parameters()}
        reference = torch.cat(run_calibration(model, calib))  # the fp32 forecasts: the distillation targets
        model, report = apply_pass(self.base, model, calib, validation)
        run = _Run(self, model, calib[:n], reference[:n], validation)
        record = run.train() if run.coded else {"skipped": "the base pass coded no weight: nothing to tune"}
        errors = run.commit(originals)
        for row in report["layers"]:
            if row["name"] in errors:
                row["action"] = f"{row['action']} after PV-tuning"
                row["weight_rel_err"] = errors[row["name"]]
            elif row["name"] in run.trained:
                row["fine_tuned"] = True
        if "output_rel_err" in report:  # the base pass's; now the tuned model's, on the same windows
            out = torch.cat(run_calibration(model, calib))
            report["output_rel_err"] = round(float((out - reference).norm() / reference.norm().clamp(min=1e-30)), 6)
            report["sensitivity"] += "; per group: the base pass's coding, before PV-tuning"
        record.update({
            "objective": "distillation: MSE to the fp32 model's forecasts on the training windows",
            "stopping": "val windows' task loss of the stored form; best state kept (the base pass's included)",
            "windows": n, "epochs": c.epochs, "lr": c.lr, "scale_lr": c.scale_lr,
            "v_fraction": c.v_fraction, "patience": c.patience, "batch_size": c.batch_size, "seed": c.seed,
        })
        header = {"pass": self.kind, "simulated": self.simulated, "base": dict(c.base)}
        return model, {**report, **header, "pv_tune": record}

    def pack(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The base pass's stored form of the tuned codes and scales."""
        return self.base.pack(model)

    def unpack(self, skeleton: nn.Module, stored: dict[str, torch.Tensor]) -> nn.Module:
        return self.base.unpack(skeleton, stored)


class _Run:
    """The state of one PV-tuning run: the coded weights split by :data:`BASES`, the trained
    uncoded parameters, the optimiser, and the best stored state seen on validation."""

    def __init__(
        self, tune: PVTune, model: nn.Module, windows: torch.Tensor, teacher: torch.Tensor,
        validation: tuple[torch.Tensor, torch.Tensor],
    ):
        self.model, self.windows, self.teacher, self.validation = model, windows, teacher, validation
        self.config, self.base = tune.config, tune.base
        split = BASES[tune.config.base["kind"]]
        params = dict(model.named_parameters())
        self.coded = {
            name: split(self.base, parts, real_view(params[name]).shape) for name, parts in coded_parts(model).items()
        }
        groups = {name: group for name, _, _, _, group in named_groups(model)}
        self.trained = [name for name in params if name not in self.coded and groups.get(name) != "recurrent"]
        self.best = self._stored()
        self.best_loss = self._val_loss(self.best)

    def _weights(self) -> dict[str, torch.Tensor]:
        """Every coded weight as the model's parameter (complex ones re-assembled), differentiable."""
        params = dict(self.model.named_parameters())
        out = {}
        for name, codes in self.coded.items():
            w = codes.weight()
            out[name] = torch.view_as_complex(w.contiguous()) if params[name].is_complex() else w
        return out

    def _loss(self, weights: dict[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        return ((functional_call(self.model, weights, (self.windows[idx],)) - self.teacher[idx]) ** 2).mean()

    def _batches(self, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        n = self.windows.shape[0]
        order = torch.arange(n) if generator is None else torch.randperm(n, generator=generator)
        return list(order.split(self.config.batch_size))

    def _p_step(self, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> float:
        total = 0.0
        for idx in self._batches(generator):
            optimizer.zero_grad()
            loss = self._loss(self._weights(), idx)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        return total / self.windows.shape[0]

    def _train_loss(self) -> float:
        with torch.no_grad():
            weights = self._weights()
            return sum(float(self._loss(weights, idx)) * len(idx) for idx in self._batches()) / self.windows.shape[0]

    def _v_step(self, fraction: float) -> dict[str, Any]:
        """Move the ``fraction`` of codes ranked first by :meth:`GridCodes.ranks` one grid step; while
        the training loss does not drop, halve the number moved (back to no move at all). The
        next V step starts from the share that was kept."""
        weights = {name: codes.weight().detach().requires_grad_() for name, codes in self.coded.items()}
        params = dict(self.model.named_parameters())
        calls = {
            name: torch.view_as_complex(w) if params[name].is_complex() else w for name, w in weights.items()
        }
        n, before = self.windows.shape[0], 0.0
        for idx in self._batches():
            loss = self._loss(calls, idx) * (len(idx) / n)
            loss.backward()
            before += float(loss.detach())
        ranks, moves = {}, {}
        for name, codes in self.coded.items():
            grad = weights[name].grad  # None for a weight the output does not depend on
            ranks[name], moves[name] = codes.ranks(torch.zeros_like(weights[name]) if grad is None else grad)
        flat = torch.cat([g.reshape(-1) for g in ranks.values()])
        k = min(int(fraction * flat.numel()), int((flat > 0).sum()))
        saved = {name: codes.codes.clone() for name, codes in self.coded.items()}
        tries = []
        while k > 0:
            threshold = flat.topk(k).values[-1]
            for name, codes in self.coded.items():
                codes.codes = torch.where((ranks[name] >= threshold) & (ranks[name] > 0), moves[name], saved[name])
            after = self._train_loss()
            tries.append({"codes_moved": k, "train_loss_after": after})
            if after < before:
                return {"train_loss_before": before, "tries": tries, "accepted": k, "fraction": k / flat.numel()}
            k //= 2
        for name, codes in self.coded.items():
            codes.codes = saved[name]
        return {"train_loss_before": before, "tries": tries, "accepted": 0, "fraction": fraction}

    def _stored(self) -> dict[str, Any]:
        """The model as it would be stored now: parts of the coded weights, values of the rest."""
        keep = self.base.keep_dtype()
        params = dict(self.model.named_parameters())
        return {
            "parts": {name: codes.parts() for name, codes in self.coded.items()},
            "values": {
                name: kept_form(params[name].detach(), keep).to(params[name].dtype).clone() for name in self.trained
            },
            "codes": {name: codes.codes.clone() for name, codes in self.coded.items()},
        }

    def _load(self, state: dict[str, Any]) -> None:
        """Write a stored state into the model's parameters."""
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, parts in state["parts"].items():
                real = self.base.decode(parts, self.coded[name].shape)
                params[name].copy_(torch.view_as_complex(real.contiguous()) if params[name].is_complex() else real)
            for name, value in state["values"].items():
                params[name].copy_(value)

    def _val_loss(self, state: dict[str, Any]) -> float:
        """The val windows' task loss of ``state``; the model's latent trained values are restored after."""
        latent = {name: p.detach().clone() for name, p in self.model.named_parameters() if name in self.trained}
        self._load(state)
        loss = task_loss(self.model, *self.validation)
        self._load({"parts": {}, "values": latent})
        return loss

    def train(self) -> dict[str, Any]:
        """Alternate P and V steps with early stopping; leaves the best state in ``self.best``."""
        c = self.config
        params = dict(self.model.named_parameters())
        requires = {name: p.requires_grad for name, p in params.items()}
        for name, p in params.items():
            p.requires_grad_(name in self.trained)
        scales = [p for codes in self.coded.values() for p in codes.continuous()]
        groups = [{"params": scales, "lr": c.scale_lr}, {"params": [params[name] for name in self.trained], "lr": c.lr}]
        optimizer = torch.optim.Adam([group for group in groups if group["params"]])
        generator = torch.Generator().manual_seed(c.seed)
        base_loss, best_round, since, fraction, rounds = self.best_loss, 0, 0, c.v_fraction, []
        for i in range(1, c.epochs + 1):
            entry: dict[str, Any] = {"round": i, "p_train_loss": self._p_step(optimizer, generator)}
            if fraction > 0:
                entry["v"] = self._v_step(fraction)
                fraction = entry["v"]["fraction"]
            state = self._stored()
            entry["val_loss"] = self._val_loss(state)
            rounds.append(entry)
            if entry["val_loss"] < self.best_loss:
                self.best, self.best_loss, best_round, since = state, entry["val_loss"], i, 0
            else:
                since += 1
                if since >= c.patience:
                    break
        for name, p in params.items():
            p.requires_grad_(requires[name])
        total = sum(int(codes.valid.sum()) for codes in self.coded.values())
        changed = sum(int((codes.initial != self.best["codes"][name]).sum()) for name, codes in self.coded.items())
        return {
            "val_loss_base": base_loss,
            "val_loss_best": self.best_loss,
            "best_round": best_round,  # 0: the base pass's state was never beaten
            "rounds_run": len(rounds),
            "stopped_early": len(rounds) < c.epochs,
            "codes_changed": changed,
            "codes_total": total,
            "rounds": rounds,
        }

    def commit(self, originals: dict[str, torch.Tensor]) -> dict[str, float]:
        """Load the best state into the model and record its parts for the base pass's pack;
        the relative error of each coded weight against ``originals`` (the fp32 weights)."""
        self._load(self.best)
        self.base.start(self.model)
        params = dict(self.model.named_parameters())
        return {
            name: self.base.commit(self.model, name, params[name], parts, originals[name])
            for name, parts in self.best["parts"].items()
        }
