"""Mixed-precision RTN: one bit-width per layer chosen by an integer program (HAWQ-V3 style).

HAWQ-V3 (Yao et al. 2021, arXiv:2011.10680) picks per-layer bit-widths with an integer linear
program: minimise the summed sensitivity of the choices subject to a size budget. Here:

1. Sensitivity of layer l at b bits, on the calibration windows only (label-free: the
   reference is the fp32 model's own output, never test data):
   - ``measured``: the output MSE vs fp32 when only layer l is RTN-quantized to b bits
     (one forward pass per layer and bit-width);
   - ``hessian``: 1/2 Tr(H_l)/n_l * ||Q_b(W_l) - W_l||^2, the second-order estimate of that
     MSE, where H is the Hessian of the output MSE vs fp32 at the fp32 weights and its
     per-layer trace is estimated by Hutchinson's method (E[v^T H v] over Rademacher v, Hv by
     double backprop; ``hutchinson_samples`` draws, seeded).
2. ``scipy.optimize.milp`` (HiGHS) chooses exactly one bit-width per layer minimising the
   summed sensitivity with the stored bits of codes + scales of the chosen layers at most
   ``avg_bits`` times their weight count. The sum assumes the layers' errors add up; the
   report gives the calibration MSE actually reached beside the predicted sum, and the same
   for uniform precision at every candidate bit-width.

The report's ``uniform`` rows give, for each candidate bit-width used everywhere, its average
bits, predicted and measured calibration MSE, and the ILP's predicted MSE at that same budget:
the Pareto points to compare (on its own objective the ILP can only tie or beat uniform).

Stored form: per layer the bit-packed codes and scales of RTN (rtn.quantize) plus a
1-byte bit-width tag. Simulated: fp32 kernels on the dequantized weights, no speed-up claimed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from seqcomp.compress import check_nested
from seqcomp.compress.bitpack import packed_nbytes
from seqcomp.compress.coded import CodedPass, candidates, row
from seqcomp.compress.common import KEPT, summary
from seqcomp.compress.groups import DEFAULT_GROUPS
from seqcomp.compress.rtn import QuantizedWeight, dequantize, parts_of, quantize, quantized_weight
from seqcomp.compress.size import CODES_SUFFIX, SCALE_UNIT_SUFFIX, SCALES_SUFFIX
from seqcomp.compress.uniform import GRID_SCALE_DTYPES
from seqcomp.errors import ConfigError
from seqcomp.registry import check

BITS_SUFFIX = ".bits"
SENSITIVITIES = ("measured", "hessian")


def _output_mse(model: nn.Module, calib: torch.Tensor, reference: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(calib) - reference) ** 2).mean())


def hutchinson_traces(
    model: nn.Module, params: list[nn.Parameter], calib: torch.Tensor, reference: torch.Tensor, samples: int, seed: int
) -> list[float]:
    """Per-parameter trace of the Hessian of the output MSE vs ``reference`` (Hutchinson)."""
    generator = torch.Generator().manual_seed(seed)
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention kernels have no double backward
        loss = ((model(calib) - reference) ** 2).mean()
        grads = torch.autograd.grad(loss, params, create_graph=True)
    traces = [0.0] * len(params)
    for _ in range(samples):
        vs = [torch.randint(0, 2, p.shape, generator=generator).float() * 2 - 1 for p in params]
        hvs = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
        for i, (hv, v) in enumerate(zip(hvs, vs)):
            traces[i] += float((hv * v).sum()) / samples
    return traces


def choose_bits(sensitivity: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray | None:
    """Column index per row of the cheapest-sensitivity assignment within ``budget``, or None.

    ``sensitivity`` and ``cost`` are (layers, choices); exactly one choice per layer, summed
    cost at most ``budget``, summed sensitivity minimal (HiGHS, zero MIP gap).
    """
    n, m = sensitivity.shape
    scale = max(float(sensitivity.max()), 1e-300)  # normalised: HiGHS tolerances are absolute
    one_each = LinearConstraint(np.kron(np.eye(n), np.ones(m)), 1, 1)
    within = LinearConstraint(cost.reshape(1, -1), -np.inf, budget)
    result = milp(
        sensitivity.reshape(-1) / scale,
        constraints=[one_each, within],
        integrality=np.ones(n * m),
        bounds=Bounds(0, 1),
        options={"mip_rel_gap": 0.0},
    )
    if result.status != 0:
        return None
    return np.round(result.x).reshape(n, m).argmax(axis=1)


class MixedPrecision(CodedPass):
    """Per-layer RTN bit-widths minimising calibration sensitivity under an average-bits budget."""

    @dataclass(frozen=True)
    class Config:
        avg_bits: float | None = None
        bits: list[int] = field(default_factory=lambda: [2, 3, 4, 8])
        group_size: int | None = None
        scale_dtype: str = "float16"
        sensitivity: str = "measured"
        hutchinson_samples: int = 16
        seed: int = 0
        groups: list[str] = field(default_factory=lambda: list(DEFAULT_GROUPS))

        def __post_init__(self) -> None:
            number = isinstance(self.avg_bits, (int, float)) and not isinstance(self.avg_bits, bool)
            check(
                number and self.avg_bits > 0,
                "avg_bits",
                f"required: the budget in stored bits (codes + scales) per weight, > 0; got {self.avg_bits!r}",
            )
            check(
                isinstance(self.bits, list)
                and bool(self.bits)
                and all(type(b) is int and 2 <= b <= 8 for b in self.bits)
                and len(set(self.bits)) == len(self.bits),
                "bits",
                f"must be a non-empty list of distinct integers in 2..8, got {self.bits!r}",
            )
            check(
                self.sensitivity in SENSITIVITIES,
                "sensitivity",
                f"must be one of {list(SENSITIVITIES)}, got {self.sensitivity!r}",
            )
            check(
                type(self.hutchinson_samples) is int and self.hutchinson_samples > 0,
                "hutchinson_samples",
                f"must be a positive integer, got {self.hutchinson_samples!r}",
            )
            check(type(self.seed) is int, "seed", f"must be an integer, got {self.seed!r}")
            # group_size, scale_dtype and groups mean what they mean for rtn_weight_sim
            grid = {"group_size": self.group_size, "scale_dtype": self.scale_dtype, "groups": self.groups}
            check_nested("rtn_weight_sim", grid, "grid")

    kind: ClassVar[str] = "mixed_precision_sim"
    optional_parts: ClassVar[tuple[str, ...]] = (SCALE_UNIT_SUFFIX,)  # fp8 scales only

    def __init__(self, config: Config):
        super().__init__(config)
        self.bits = sorted(config.bits)

    def part_suffixes(self) -> tuple[str, ...]:
        return (CODES_SUFFIX, SCALES_SUFFIX, BITS_SUFFIX)

    def decode(self, parts: dict[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
        return dequantize(quantized_weight(parts, shape), int(parts[BITS_SUFFIX]), self.config.group_size)

    def _quantize(self, weight: torch.Tensor, bits: int) -> QuantizedWeight:
        return quantize(weight, bits, self.config.group_size, GRID_SCALE_DTYPES[self.config.scale_dtype])

    def _candidate(self, param: nn.Parameter, bits: int) -> tuple[torch.Tensor, int]:
        """(dequantized weight, stored bits of codes + scales) of ``param`` at ``bits``."""
        qw = self._quantize(param, bits)
        unit = 0 if qw.unit is None else qw.unit.element_size()
        stored = packed_nbytes(param.numel(), bits) + qw.scales.numel() * qw.scales.element_size() + unit
        return dequantize(qw, bits, self.config.group_size), 8 * stored

    def _sensitivities(
        self, model: nn.Module, params: list[nn.Parameter], calib: torch.Tensor, reference: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, list[float] | None]:
        """(sensitivity, cost in bits) tables (layers, bit-widths), and Hessian traces if used."""
        sens, cost = np.zeros((len(params), len(self.bits))), np.zeros((len(params), len(self.bits)))
        traces = None
        if self.config.sensitivity == "hessian":
            samples, seed = self.config.hutchinson_samples, self.config.seed
            traces = hutchinson_traces(model, params, calib, reference, samples, seed)
        for i, param in enumerate(params):
            original = param.detach().clone()
            for j, bits in enumerate(self.bits):
                fake, cost[i, j] = self._candidate(param, bits)
                if traces is not None:
                    sens[i, j] = 0.5 * traces[i] / param.numel() * float(((fake - original) ** 2).sum())
                    continue
                with torch.no_grad():
                    param.copy_(fake)
                sens[i, j] = _output_mse(model, calib, reference)
                with torch.no_grad():
                    param.copy_(original)
        return sens, cost, traces

    def apply(self, model: nn.Module, calib: torch.Tensor | None) -> tuple[nn.Module, dict[str, Any]]:
        """Measure sensitivities on ``calib`` (N, L, C) inputs, solve the ILP, quantize in place."""
        if calib is None:
            raise ValueError(f"{self.kind} needs calibration windows (N, L, C): it measures sensitivities on them")
        self.start(model)
        rows = list(candidates(model, self.config.groups))
        targets = {name: param for name, _, param, _, reason in rows if reason is None}
        if not targets:
            layers = [row(name, kind, param, group, KEPT, reason) for name, kind, param, group, reason in rows]
            skipped = f"no parameter of groups {list(self.config.groups)} to quantize; the model stays fp32"
            return model, {**self.header(), "skipped": skipped, **summary(layers), "layers": layers}
        params = list(targets.values())
        reference = model(calib).detach()
        sens, cost, traces = self._sensitivities(model, params, calib, reference)
        numel = sum(p.numel() for p in params)
        uniform = self._uniform(model, params, calib, reference, sens, cost, numel)
        choice = self._solve(sens, cost, numel)
        index = {name: i for i, name in enumerate(targets)}
        layers = []
        for name, kind, param, group, reason in rows:
            if reason is not None:
                layers.append(row(name, kind, param, group, KEPT, reason))
                continue
            i = index[name]
            bits = self.bits[choice[i]]
            qw = self._quantize(param, bits)
            tag = torch.tensor(bits, dtype=torch.uint8)
            parts = {**parts_of(qw), BITS_SUFFIX: tag}
            error = self.commit(model, name, param, parts)
            layers.append({
                **row(name, kind, param, group, f"int{bits} rtn (mixed precision) (simulated)"),
                "bits": bits,
                "sensitivity": {str(b): float(s) for b, s in zip(self.bits, sens[i])},
                **({"hessian_trace": traces[i]} if traces is not None else {}),
                "weight_rel_err": error,
            })
        picked = np.arange(len(choice))
        achieved = {
            "avg_bits": float(cost[picked, choice].sum() / numel),
            "predicted_mse": float(sens[picked, choice].sum()),
            "calib_mse": _output_mse(model, calib, reference),
        }
        report = {**self.header(), "achieved": achieved, "uniform": uniform}
        return model, {**report, **summary(layers), "layers": layers}

    def _solve(self, sens: np.ndarray, cost: np.ndarray, numel: int) -> np.ndarray:
        budget = self.config.avg_bits * numel
        choice = choose_bits(sens, cost, budget)
        if choice is None:
            cheapest = cost.min(axis=1).sum() / numel
            raise ConfigError(
                f"{self.kind}: avg_bits: {self.config.avg_bits} is below the smallest average this "
                f"model allows with bits {self.bits} (codes + scales): {cheapest:.4f}"
            )
        return choice

    def _uniform(
        self, model: nn.Module, params: list[nn.Parameter], calib: torch.Tensor, reference: torch.Tensor,
        sens: np.ndarray, cost: np.ndarray, numel: int,
    ) -> list[dict[str, Any]]:
        """Uniform precision at each candidate bit-width, on the fp32 ``params``: its average
        bits, predicted and measured calibration MSE, and the ILP's prediction at that budget."""
        uniform = []
        originals = [p.detach().clone() for p in params]
        for j, bits in enumerate(self.bits):
            with torch.no_grad():
                for p in params:
                    p.copy_(self._candidate(p, bits)[0])
            best = choose_bits(sens, cost, cost[:, j].sum())
            ilp = None if best is None else float(sens[np.arange(len(best)), best].sum())
            uniform.append({
                "bits": bits,
                "avg_bits": float(cost[:, j].sum() / numel),
                "predicted_mse": float(sens[:, j].sum()),
                "calib_mse": _output_mse(model, calib, reference),
                "ilp_predicted_mse_at_same_bits": ilp,
            })
            with torch.no_grad():
                for p, original in zip(params, originals):
                    p.copy_(original)
        return uniform

    def header(self) -> dict[str, Any]:
        c = self.config
        return self.describe(
            "simulated: per-layer packed codes + scales + bit-width tag, computed in fp32; no speed-up claimed",
            sensitivity=c.sensitivity,
            candidate_bits=self.bits,
            group_size=c.group_size,
            scale_dtype=c.scale_dtype,
            groups=list(c.groups),
            budget_avg_bits=c.avg_bits,
            bits_accounting="stored bits of codes + scales per weight, over the layers it quantizes",
        )
