"""Quantization-aware fine-tuning (QAT) of RTN weights by distillation from the fp32 model.

The calibration data are inputs only, (N, L, C) training windows with no targets, so QAT here
is label-free: the loss is the MSE between the fake-quantized model's forecasts and the fp32
model's forecasts on those windows (the model this pass receives; in a ``chain`` that is the
previous step's output). Training starts from the RTN weights: every forward pass quantizes
the selected weights with rtn_weight_sim's grid (the same ``bits``, ``group_size``,
``symmetric``, ``scale_dtype``, ``keep_dtype``, ``groups``, ``group_bits``), and the gradient
passes through the rounding unchanged (straight-through estimator, Bengio et al. 2013,
arXiv:1308.3432). Scales are recomputed from the latent weights at every step, as RTN would. Every other parameter is
fine-tuned in fp32 too, except the SSM recurrent ones, which stay as they are unless
``groups`` selects them. Adam, ``epochs`` passes over the windows in ``batch_size`` batches
shuffled by a seeded generator, model in eval mode (no dropout): deterministic.

At the end rtn_weight_sim quantizes the trained latent weights, so the stored form, its
size and unpack are exactly RTN's. Simulated: fake-quant on fp32 kernels, no speed-up claimed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.func import functional_call

from seqcomp.compress import build_pass, check_nested
from seqcomp.compress.quant.common import KEPT
from seqcomp.compress.quant.groups import DEFAULT_GROUPS, named_groups
from seqcomp.registry import check

Targets = dict[str, tuple[nn.Parameter, str]]  # the parameters QAT quantizes: {name: (parameter, group)}
_RTN_KEYS = ("bits", "group_size", "symmetric", "scale_dtype", "keep_dtype", "groups", "group_bits")


class QAT:
    """RTN weights fine-tuned with a straight-through estimator against the fp32 outputs."""

    @dataclass(frozen=True)
    class Config:
        bits: int = 4
        group_size: int | None = None
        symmetric: bool = True
        scale_dtype: str = "float16"
        keep_dtype: str = "float32"
        groups: list[str] = field(default_factory=lambda: list(DEFAULT_GROUPS))
        group_bits: dict[str, int] = field(default_factory=dict)
        epochs: int = 3
        lr: float = 1e-4
        batch_size: int = 32
        seed: int = 0

        def __post_init__(self) -> None:
            for key in ("epochs", "batch_size"):
                value = getattr(self, key)
                check(type(value) is int and value > 0, key, f"must be a positive integer, got {value!r}")
            check(
                isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and self.lr > 0,
                "lr",
                f"must be a positive number, got {self.lr!r}",
            )
            check(type(self.seed) is int, "seed", f"must be an integer, got {self.seed!r}")
            # the grid's keys are rtn_weight_sim's, checked by its own Config
            check_nested("rtn_weight_sim", {key: getattr(self, key) for key in _RTN_KEYS}, "grid")

    kind: ClassVar[str] = "qat_sim"
    simulated: ClassVar[bool] = True

    def __init__(self, config: Config):
        self.config = config
        self.rtn = build_pass("rtn_weight_sim", {key: getattr(config, key) for key in _RTN_KEYS}, "grid")

    def _fake(self, weight: torch.Tensor, group: str) -> torch.Tensor:
        """RTN-quantized ``weight`` of ``group`` whose gradient is the identity (straight-through)."""
        fake = self.rtn.decode(self.rtn.encode(weight.detach(), group), weight.shape)
        return weight + (fake - weight).detach()

    def _loss(
        self, model: nn.Module, targets: Targets, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        fakes = {name: self._fake(param, group) for name, (param, group) in targets.items()}
        return ((functional_call(model, fakes, (x,)) - y) ** 2).mean()

    def _train(
        self, model: nn.Module, targets: Targets, trainable: list[nn.Parameter],
        calib: torch.Tensor, teacher: torch.Tensor,
    ) -> list[float]:
        """Adam with the STE; the mean distillation loss of each epoch."""
        c = self.config
        optimizer = torch.optim.Adam(trainable, lr=c.lr)
        generator = torch.Generator().manual_seed(c.seed)
        history = []
        for _ in range(c.epochs):
            total = 0.0
            for idx in torch.randperm(calib.shape[0], generator=generator).split(c.batch_size):
                optimizer.zero_grad()
                loss = self._loss(model, targets, calib[idx], teacher[idx])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            history.append(total / calib.shape[0])
        return history

    def _fine_tune(
        self, model: nn.Module, targets: Targets, frozen: set[str], calib: torch.Tensor,
        teacher: torch.Tensor,
    ) -> list[float]:
        """Train every parameter but the ``frozen`` ones in place; the loss of each epoch."""
        params = dict(model.named_parameters())
        requires = {name: p.requires_grad for name, p in params.items()}
        for name, p in params.items():
            p.requires_grad_(name not in frozen)
        trainable = [p for name, p in params.items() if name not in frozen]
        history = self._train(model, targets, trainable, calib, teacher) if targets else []
        for name, p in params.items():
            p.requires_grad_(requires[name])
        return history

    def apply(self, model: nn.Module, calib: torch.Tensor | None) -> tuple[nn.Module, dict[str, Any]]:
        """Fine-tune on ``calib`` inputs (N, L, C) against the fp32 outputs, then RTN-quantize."""
        if calib is None:
            raise ValueError(f"{self.kind} needs calibration windows (N, L, C): it distils the fp32 model's outputs on them")
        params = list(named_groups(model))
        targets = {name: (p, group) for name, _, _, p, group in params if group in self.config.groups}
        frozen = {name for name, _, _, _, group in params if name not in targets and group == "recurrent"}
        with torch.no_grad():
            teacher = model(calib)
            before = float(self._loss(model, targets, calib, teacher))
        history = self._fine_tune(model, targets, frozen, calib, teacher)
        with torch.no_grad():
            trained = {name: self._fake(p, group) for name, (p, group) in targets.items()}
        model, report = self.rtn.apply(model, None)
        for name, (p, _) in targets.items():
            if not torch.equal(p.detach(), trained[name]):
                raise RuntimeError(f"{name}: rtn_weight_sim quantized it differently from the grid QAT trained against")
        for row in report["layers"]:
            if row["action"] != KEPT:
                row["action"] = f"{row['action']} after QAT"
            elif row["name"] not in frozen:
                row["fine_tuned"] = True  # kept fp32, but trained along
        with torch.no_grad():
            after = float(((model(calib) - teacher) ** 2).mean())
        c = self.config
        record = {
            "epochs": c.epochs, "lr": c.lr, "batch_size": c.batch_size, "seed": c.seed, "calib_windows": calib.shape[0],
            "distill_mse_rtn": before,  # fake-quant model vs fp32 outputs on calib, before training
            "distill_mse_qat": after,  # the same after training
            "epoch_loss": history,
            "weight_rel_err": "of each stored weight vs its fine-tuned latent weight, not the original",
        }
        return model, {**report, "pass": self.kind, "simulated": self.simulated, "qat": record}

    def pack(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """RTN's stored form of the fine-tuned weights."""
        return self.rtn.pack(model)

    def unpack(self, skeleton: nn.Module, stored: dict[str, torch.Tensor]) -> nn.Module:
        return self.rtn.unpack(skeleton, stored)
