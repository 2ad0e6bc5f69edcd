"""Mixed precision: one bit-width per layer chosen by an integer program (HAWQ-V3 style).

HAWQ-V3 (Yao et al. 2021, arXiv:2011.10680) picks per-layer bit-widths with an integer linear
program: minimise the summed sensitivity of the choices subject to a size budget. Here:

1. Budget, in stored bits of codes + scales over the layers it quantizes: ``avg_bits`` per
   weight, or ``uniform_bits: b``, exactly what uniform b-bit RTN stores on this model. Per-row
   fp16 scales cost 16/in_features bits per weight, so uniform 3-bit is 3.0-3.5 bits on the
   ETTh1 models (LSTM, Mamba: many short rows); a fixed ``avg_bits`` compares unequal sizes.
2. Sensitivity of layer l at b bits, on the calibration windows only (label-free: the
   reference is the fp32 model's own output, never test data):
   - ``measured``: the output MSE vs fp32 when only layer l is quantized to b bits (one
     forward pass per layer and bit-width). Measuring it instead as the increase over the
     widest uniform precision within the budget (the others at that base) was tried on the
     eight ETTh1 H96 models and lost: its deltas stop adding up away from the base (the summed
     prediction went negative), and its choices were worse on S4D and the Transformer.
   - ``hessian``: 1/2 Tr(H_l)/n_l * ||Q_b(W_l) - W_l||^2, the second-order estimate of the MSE
     vs fp32, where H is the Hessian of the output MSE at the fp32 weights and its per-layer
     trace is estimated by Hutchinson's method (E[v^T H v] over Rademacher v, ``hutchinson_samples``
     draws, seeded), Hv by central differences of gradients (see ``hutchinson_traces``).
3. ``scipy.optimize.milp`` (HiGHS) chooses exactly one bit-width per layer minimising the
   summed sensitivity within the budget. The sum assumes the layers' errors add up, so the
   choice is then measured on the calibration windows against every uniform assignment within
   the budget, and the lowest measured MSE is kept (``achieved.chosen_by`` says which): at
   uniform b-bit's own size the result is never worse on calibration data than the same
   quantizer at b bits everywhere.

Per-layer quantizer: RTN (rtn.quantize), or with ``quantizer: gptq`` GPTQ (gptq.py, its default
settings) for nn.Linear weights and RTN for the rest. The ILP needs every layer's candidates
before it picks any, so each layer's GPTQ runs on the inputs the fp32 model gives it, not on
those of the already quantized layers before it as gptq_weight_sim does (its sequential scheme).

The report's ``uniform`` rows give, for each candidate bit-width used everywhere, its average
bits, predicted and measured calibration MSE, and the ILP's predicted MSE at that same budget:
the Pareto points to compare.

Stored form: per layer the bit-packed codes and scales (fp16, or fp8 codes + one fp32 unit) of
RTN's grid (GPTQ only rounds differently) plus a 1-byte bit-width tag. Simulated: fp32 kernels on the dequantized weights,
no speed-up claimed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from seqcomp.compress import check_nested
from seqcomp.compress.coded import CodedPass, candidates, row
from seqcomp.compress.common import KEPT, summary
from seqcomp.compress.gptq import GPTQ, GPTQSettings, gptq_quantize, hessian
from seqcomp.compress.groups import DEFAULT_GROUPS
from seqcomp.compress.rtn import QuantizedWeight, dequantize, parts_of, quantize, quantized_weight
from seqcomp.compress.size import CODES_SUFFIX, SCALE_UNIT_SUFFIX, SCALES_SUFFIX, stored_size
from seqcomp.compress.uniform import GRID_SCALE_DTYPES
from seqcomp.errors import ConfigError
from seqcomp.registry import check

BITS_SUFFIX = ".bits"
SENSITIVITIES = ("measured", "hessian")
QUANTIZERS = ("rtn", "gptq")
RELATIVE_STEP = 1e-3  # finite-difference step of hutchinson_traces, relative to the weights' RMS


def _output_mse(model: nn.Module, calib: torch.Tensor, reference: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(calib) - reference) ** 2).mean())


def hutchinson_traces(
    model: nn.Module, params: list[nn.Parameter], calib: torch.Tensor, reference: torch.Tensor, samples: int, seed: int
) -> list[float]:
    """Per-parameter trace of the Hessian of the output MSE vs ``reference`` (Hutchinson).

    Hv by central differences of gradients, (g(w + eps v) - g(w - eps v)) / 2 eps, exact up to
    O(eps^2), with eps = RELATIVE_STEP times each parameter's RMS. Only first-order backward is
    needed, so it works through kernels that have no double backward (the chunked selective
    scan's hand-written backward in Mamba, fused attention); ``params`` are restored after.
    """
    generator = torch.Generator().manual_seed(seed)
    originals = [p.detach().clone() for p in params]
    steps = [RELATIVE_STEP * (float(o.abs().pow(2).mean().sqrt()) or 1.0) for o in originals]

    def gradients(vs: list[torch.Tensor], sign: float) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            for p, o, v, step in zip(params, originals, vs, steps):
                p.copy_(o + sign * step * v)
        return torch.autograd.grad(((model(calib) - reference) ** 2).mean(), params)

    traces = [0.0] * len(params)
    try:
        for _ in range(samples):
            vs = [torch.randint(0, 2, p.shape, generator=generator).float() * 2 - 1 for p in params]
            plus, minus = gradients(vs, 1.0), gradients(vs, -1.0)
            for i, (v, step) in enumerate(zip(vs, steps)):
                traces[i] += float(((plus[i] - minus[i]) * v).sum()) / (2 * step * samples)
    finally:
        with torch.no_grad():
            for p, o in zip(params, originals):
                p.copy_(o)
    return traces


def choose_bits(sensitivity: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray | None:
    """Column index per row of the cheapest-sensitivity assignment within ``budget``, or None.

    ``sensitivity`` and ``cost`` are (layers, choices); exactly one choice per layer, summed
    cost at most ``budget``, summed sensitivity minimal (HiGHS, zero MIP gap).
    """
    n, m = sensitivity.shape
    scale = max(float(np.abs(sensitivity).max()), 1e-300)  # normalised: HiGHS tolerances are absolute
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


class Weights:
    """The fp32 values of ``params`` and their dequantized candidates ``at[layer][column]``,
    swapped in and out of the model to measure assignments."""

    def __init__(self, params: list[nn.Parameter], at: list[list[torch.Tensor]]):
        self.params, self.at = params, at
        self.originals = [p.detach().clone() for p in params]

    @torch.no_grad()
    def assign_one(self, i: int, j: int) -> None:
        self.params[i].copy_(self.at[i][j])

    def assign(self, columns: list[int]) -> None:
        for i, j in enumerate(columns):
            self.assign_one(i, j)

    @torch.no_grad()
    def restore(self) -> None:
        for p, original in zip(self.params, self.originals):
            p.copy_(original)


class MixedPrecision(CodedPass):
    """Per-layer RTN bit-widths minimising calibration sensitivity under an average-bits budget."""

    @dataclass(frozen=True)
    class Config:
        avg_bits: float | None = None
        uniform_bits: int | None = None
        bits: list[int] = field(default_factory=lambda: [2, 3, 4, 8])
        group_size: int | None = None
        scale_dtype: str = "float16"
        sensitivity: str = "measured"
        quantizer: str = "rtn"
        hutchinson_samples: int = 16
        seed: int = 0
        groups: list[str] = field(default_factory=lambda: list(DEFAULT_GROUPS))

        def __post_init__(self) -> None:
            check(
                (self.avg_bits is None) != (self.uniform_bits is None),
                "avg_bits",
                "set exactly one budget: avg_bits (stored bits of codes + scales per weight) or "
                "uniform_bits (the stored bits uniform RTN at that bit-width has); "
                f"got {self.avg_bits!r}, {self.uniform_bits!r}",
            )
            number = isinstance(self.avg_bits, (int, float)) and not isinstance(self.avg_bits, bool)
            check(
                self.avg_bits is None or (number and self.avg_bits > 0),
                "avg_bits",
                f"must be a number > 0 (stored bits of codes + scales per weight), got {self.avg_bits!r}",
            )
            check(
                self.uniform_bits is None or (type(self.uniform_bits) is int and 2 <= self.uniform_bits <= 8),
                "uniform_bits",
                f"must be an integer in 2..8, got {self.uniform_bits!r}",
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
                self.quantizer in QUANTIZERS, "quantizer", f"must be one of {list(QUANTIZERS)}, got {self.quantizer!r}"
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

    def _stored_bits(self, qw: QuantizedWeight, bits: int) -> int:
        """Stored bits of codes + scales (+ the fp8 scales' unit), counted by size.py as for the
        stored model; the bit tag and shape are not counted, as for rtn_weight_sim."""
        return 8 * stored_size(parts_of(qw))["bytes"]

    def _codes(
        self, model: nn.Module, targets: dict[str, nn.Parameter], calib: torch.Tensor
    ) -> tuple[list[list[QuantizedWeight]], list[str]]:
        """Per layer its codes at every candidate bit-width, and the method that made them: RTN,
        or with ``quantizer: gptq`` GPTQ for nn.Linear weights (others RTN), each layer from the
        inputs the fp32 model gives it: the table must exist before the ILP picks anything."""
        c = self.config
        settings = GPTQSettings(GPTQ.Config.percdamp, GPTQ.Config.act_order, GPTQ.Config.block_size)
        table, methods = [], []
        for name, param in targets.items():
            module_name, _, pname = name.rpartition(".")
            module = model.get_submodule(module_name)
            if c.quantizer == "gptq" and isinstance(module, nn.Linear) and pname == "weight":
                h = hessian(model, module, calib)
                dtype = GRID_SCALE_DTYPES[c.scale_dtype]
                table.append([gptq_quantize(param, h, b, c.group_size, dtype, settings) for b in self.bits])
                methods.append("gptq")
            else:
                table.append([self._quantize(param, b) for b in self.bits])
                methods.append("rtn" if c.quantizer == "rtn" else "rtn, gptq fallback: not an nn.Linear weight")
        return table, methods

    def _budget(self, params: list[nn.Parameter], numel: int) -> float:
        """Stored bits allowed: ``avg_bits`` per weight, or exactly uniform ``uniform_bits``-bit RTN's."""
        b = self.config.uniform_bits
        if b is None:
            return self.config.avg_bits * numel
        return float(sum(self._stored_bits(self._quantize(p, b), b) for p in params))

    def _sensitivities(
        self, model: nn.Module, fakes: Weights, calib: torch.Tensor, reference: torch.Tensor
    ) -> tuple[np.ndarray, list[float] | None]:
        """Sensitivity table (layers, bit-widths), and the Hessian traces if used."""
        params = fakes.params
        sens = np.zeros((len(params), len(self.bits)))
        if self.config.sensitivity == "hessian":
            c = self.config
            traces = hutchinson_traces(model, params, calib, reference, c.hutchinson_samples, c.seed)
            for i, (param, original) in enumerate(zip(params, fakes.originals)):
                for j in range(len(self.bits)):
                    error = float(((fakes.at[i][j] - original) ** 2).sum())
                    sens[i, j] = 0.5 * traces[i] / param.numel() * error
            return sens, traces
        for i, param in enumerate(params):
            for j in range(len(self.bits)):
                fakes.assign_one(i, j)
                sens[i, j] = _output_mse(model, calib, reference)
            fakes.restore()
        return sens, None

    def apply(self, model: nn.Module, calib: torch.Tensor | None) -> tuple[nn.Module, dict[str, Any]]:
        """Measure sensitivities on ``calib`` (N, L, C) inputs, solve the ILP, check its choice
        against the uniform assignments within the budget, quantize in place."""
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
        numel = sum(p.numel() for p in params)
        table, methods = self._codes(model, targets, calib)
        at = [[dequantize(qw, b, self.config.group_size) for qw, b in zip(codes, self.bits)] for codes in table]
        fakes = Weights(params, at)
        cost = np.array([[self._stored_bits(qw, b) for qw, b in zip(codes, self.bits)] for codes in table], dtype=float)
        budget = self._budget(params, numel)
        fits = [j for j in range(len(self.bits)) if cost[:, j].sum() <= budget]  # the bits are sorted
        if not fits:
            c = self.config
            asked = f"avg_bits: {c.avg_bits}" if c.uniform_bits is None else f"uniform_bits: {c.uniform_bits}"
            raise ConfigError(
                f"{self.kind}: {asked} ({budget / numel:.4f} bits per weight) is below the smallest average "
                f"this model allows with bits {self.bits} (codes + scales): {cost[:, 0].sum() / numel:.4f}"
            )
        reference = model(calib).detach()
        sens, traces = self._sensitivities(model, fakes, calib, reference)
        uniform = [self._uniform_row(model, fakes, calib, reference, j, sens, cost, numel)
                   for j in range(len(self.bits))]
        choice = choose_bits(sens, cost, budget)
        fakes.assign(list(choice))
        ilp_mse = _output_mse(model, calib, reference)
        fakes.restore()
        best = min((uniform[j]["calib_mse"], j) for j in fits)  # the measured check: never worse than these
        chosen_by = "ilp"
        if best[0] < ilp_mse:
            choice, chosen_by = np.full(len(params), best[1]), f"uniform int{self.bits[best[1]]}"
        index = {name: i for i, name in enumerate(targets)}
        layers = []
        for name, kind, param, group, reason in rows:
            if reason is not None:
                layers.append(row(name, kind, param, group, KEPT, reason))
                continue
            i = index[name]
            bits, qw = self.bits[choice[i]], table[i][choice[i]]
            tag = torch.tensor(bits, dtype=torch.uint8)
            parts = {**parts_of(qw), BITS_SUFFIX: tag}
            error = self.commit(model, name, param, parts)
            layers.append({
                **row(name, kind, param, group, f"int{bits} {methods[i]} (mixed precision) (simulated)"),
                "bits": bits,
                "sensitivity": {str(b): float(s) for b, s in zip(self.bits, sens[i])},
                **({"hessian_trace": traces[i]} if traces is not None else {}),
                "weight_rel_err": error,
            })
        picked = np.arange(len(choice))
        achieved = {
            "avg_bits": float(cost[picked, choice].sum() / numel),
            "budget_avg_bits": budget / numel,
            "chosen_by": chosen_by,
            "ilp_calib_mse": ilp_mse,
            "predicted_mse": float(sens[picked, choice].sum()),
            "calib_mse": _output_mse(model, calib, reference),
        }
        report = {**self.header(), "achieved": achieved, "uniform": uniform}
        return model, {**report, **summary(layers), "layers": layers}

    def _uniform_row(
        self, model: nn.Module, fakes: Weights, calib: torch.Tensor, reference: torch.Tensor, j: int,
        sens: np.ndarray, cost: np.ndarray, numel: int,
    ) -> dict[str, Any]:
        """Uniform precision at bit-width column ``j``: its average bits, predicted and measured
        calibration MSE, and the ILP's prediction at that same budget (the Pareto points)."""
        fakes.assign([j] * len(fakes.params))
        measured = _output_mse(model, calib, reference)
        fakes.restore()
        best = choose_bits(sens, cost, cost[:, j].sum())
        ilp = None if best is None else float(sens[np.arange(len(best)), best].sum())
        return {
            "bits": self.bits[j],
            "avg_bits": float(cost[:, j].sum() / numel),
            "predicted_mse": float(sens[:, j].sum()),
            "calib_mse": measured,
            "ilp_predicted_mse_at_same_bits": ilp,
        }

    def header(self) -> dict[str, Any]:
        c = self.config
        return self.describe(
            "simulated: per-layer packed codes + scales + bit-width tag, computed in fp32; no speed-up claimed",
            sensitivity=c.sensitivity,
            quantizer=c.quantizer,
            candidate_bits=self.bits,
            group_size=c.group_size,
            scale_dtype=c.scale_dtype,
            groups=list(c.groups),
            budget_avg_bits=c.avg_bits,
            budget_uniform_bits=c.uniform_bits,
            bits_accounting="stored bits of codes + scales per weight, over the layers it quantizes",
        )
