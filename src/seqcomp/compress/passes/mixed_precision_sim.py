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
   summed sensitivity within the budget.
4. The final choice is measured, since the sum assumes the layers' errors add up and the
   label-free objective need not rank assignments as test error does. Candidates: the ILP's
   solutions at the fractions ``ilp_budgets`` of the budget (default 1, 0.95, 0.9) and every
   uniform assignment within the budget. Each is quantized as it would be stored and scored on
   ``select_on``:
   - ``validation`` (default): the task's loss (MSE; cross-entropy for class ids) on the
     labeled windows of the val split, which the compress stage passes (``uses_validation``).
     Label-free output error on train windows chose worse than uniform 3-bit on PatchTST's
     test MSE; choosing on validation is what the project allows (test never chooses).
   - ``calibration``: the output MSE vs fp32 on the calibration windows (no labels needed).
   With ``calibration`` the lowest score is kept; ties go to the earlier candidate (the ILP
   first). With ``validation`` the widest uniform assignment within the budget is the
   incumbent, and the best other candidate replaces it only if it is better with a one-sided
   paired t-test p < ``select_alpha`` (default 0.05) over the val windows' loss differences,
   averaged in blocks of ``horizon`` consecutive windows (blocks whose targets do not overlap;
   overlapping windows are not independent evidence). Why: picking the lowest val loss chose
   assignments 0.1-0.3% better on val and up to 5% worse on test (S4D, PatchTST at 3 bits):
   a difference within the val noise is no reason to leave uniform precision. The report's
   ``selection`` lists every candidate with its score, the incumbent, the challenger and its
   p-value; ``achieved.chosen_by`` names the winner. At uniform b-bit's own size the result is
   never worse on the selection data than the same quantizer at b bits everywhere.

Per-layer quantizer: RTN (quant/uniform.py's quantize), or with ``quantizer: gptq`` GPTQ (quant/gptq.py, its default
settings) for nn.Linear weights and RTN for the rest. The ILP needs every layer's candidates
before it picks any, so its sensitivity table codes each layer with GPTQ on the inputs the fp32
model gives it. Each candidate assignment is then quantized sequentially, as gptq_weight_sim
does (quant/gptq.py's code_in_order: each layer on the outputs of the already quantized layers before
it), so the uniform assignment reproduces gptq_weight_sim exactly.

The report's ``uniform`` rows give, for each candidate bit-width used everywhere, its average
bits, predicted and measured calibration MSE (of the sensitivity table's codes), and the ILP's
predicted MSE at that same budget: the Pareto points the ILP sees.

Stored form: per layer the bit-packed codes and scales (fp16, or fp8 codes + one fp32 unit) of
RTN's grid (GPTQ only rounds differently) plus a 1-byte bit-width tag. Simulated: fp32 kernels on the dequantized weights,
no speed-up claimed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.stats import ttest_1samp
from torch import nn

from seqcomp.compress import check_nested
from seqcomp.compress.quant.coded import CodedPass, Parts, Target, row
from seqcomp.compress.quant.common import KEPT, summary
from seqcomp.compress.quant.gptq import DEFAULT_SETTINGS, code_in_order, gptq_able, gptq_quantize, hessian
from seqcomp.compress.quant.groups import DEFAULT_GROUPS, OTHER, kept_reason, named_groups
from seqcomp.compress.quant.rtn import parts_of, quantized_weight
from seqcomp.compress.quant.size import BITS_SUFFIX, CODES_SUFFIX, SCALE_UNIT_SUFFIX, SCALES_SUFFIX, stored_size
from seqcomp.compress.quant.uniform import GRID_SCALE_DTYPES, QuantizedWeight, dequantize, quantize
from seqcomp.compress.quant.validation import window_losses
from seqcomp.errors import ConfigError
from seqcomp.registry import check

SENSITIVITIES = ("measured", "hessian")
QUANTIZERS = ("rtn", "gptq")
SELECT_ON = ("validation", "calibration")
RELATIVE_STEP = 1e-3  # finite-difference step of hutchinson_traces, relative to the weights' RMS


def _output_mse(model: nn.Module, calib: torch.Tensor, reference: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(calib) - reference) ** 2).mean())


def task_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The mean of :func:`window_losses` (every window has the same number of targets)."""
    return float(window_losses(model, x, y).mean())


def paired_p_value(challenger: torch.Tensor, incumbent: torch.Tensor, block: int) -> float:
    """One-sided p-value that ``challenger``'s per-window losses are lower than ``incumbent``'s:
    a t-test on the differences averaged over blocks of ``block`` consecutive windows (1.0 when
    fewer than two blocks or no spread: no evidence either way)."""
    d = (challenger - incumbent).double()
    n = len(d) // block
    if n < 2:
        return 1.0
    means = d[: n * block].view(n, block).mean(1).numpy()
    if np.ptp(means) == 0:
        return 1.0
    return float(ttest_1samp(means, 0.0, alternative="less").pvalue)


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


def _rows(model: nn.Module, groups: list[str]) -> Iterator[tuple[str, str, nn.Parameter, str, str | None]]:
    """(name, module type, parameter, group, why it stays fp32 or None) for every parameter.

    Coded: every real parameter of the selected groups, 1-D ones too (S4D's skip term D, one
    scale), exactly what rtn_weight_sim and gptq_weight_sim code, so that the uniform assignment
    is those passes and the budget their stored bits.
    """
    for name, module, pname, param, group in named_groups(model):
        reason = kept_reason(module, pname, group) if group not in groups else None
        if reason is None and param.is_complex():
            reason = "complex parameter kept in fp32"
        yield name, type(module).__name__, param, group, reason


def _target(model: nn.Module, name: str, group: str) -> Target:
    module_name, _, pname = name.rpartition(".")
    return Target(name, model.get_submodule(module_name), pname, group)


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
    """Per-layer bit-widths (RTN or GPTQ codes): the ILP's choices and the uniform ones within a
    stored-bits budget, the best on ``select_on`` kept."""

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
        select_on: str = "validation"  # validation (labeled val windows) | calibration (output error vs fp32)
        select_alpha: float = 0.05  # validation: leave the uniform incumbent only at paired p < this
        ilp_budgets: list[float] = field(default_factory=lambda: [1.0, 0.95, 0.9])  # fractions of the budget

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
            check(
                self.select_on in SELECT_ON, "select_on", f"must be one of {list(SELECT_ON)}, got {self.select_on!r}"
            )
            check(
                type(self.select_alpha) in (int, float) and 0 < self.select_alpha <= 1,
                "select_alpha",
                f"must be a significance level in (0, 1], got {self.select_alpha!r}",
            )
            check(
                isinstance(self.ilp_budgets, list)
                and bool(self.ilp_budgets)
                and all(type(f) in (int, float) and 0 < f <= 1 for f in self.ilp_budgets),
                "ilp_budgets",
                f"must be a non-empty list of fractions of the budget in (0, 1], got {self.ilp_budgets!r}",
            )
            # group_size, scale_dtype and groups mean what they mean for rtn_weight_sim
            grid = {"group_size": self.group_size, "scale_dtype": self.scale_dtype, "groups": self.groups}
            check_nested("rtn_weight_sim", grid, "grid")
            # RTN codes `other` tensors flattened; the ILP's per-layer rows have no such case
            check(OTHER not in self.groups, "groups", f"mixed precision does not code the {OTHER!r} group")

    kind: ClassVar[str] = "mixed_precision_sim"
    uses_validation: ClassVar[bool] = True  # compress() passes it the labeled val windows
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
        """Stored bits of codes + scales (+ the fp8 scales' unit), counted by quant/size.py as for the
        stored model; the bit tag and shape are not counted, as for rtn_weight_sim."""
        return 8 * stored_size(parts_of(qw))["bytes"]

    def _codes(
        self, model: nn.Module, targets: list[Target], calib: torch.Tensor
    ) -> tuple[list[list[QuantizedWeight]], list[str]]:
        """Per layer its codes at every candidate bit-width, and the method that made them: RTN,
        or with ``quantizer: gptq`` GPTQ for nn.Linear weights (others RTN), each layer from the
        inputs the fp32 model gives it: the sensitivity table must exist before the ILP picks."""
        c = self.config
        table, methods = [], []
        for t in targets:
            if c.quantizer == "gptq" and gptq_able(t):
                h = hessian(model, t.module, calib)
                table.append([self._gptq(t.param, h, b) for b in self.bits])
                methods.append("gptq")
            else:
                table.append([self._quantize(t.param, b) for b in self.bits])
                methods.append("rtn" if c.quantizer == "rtn" else "rtn, gptq fallback: not an nn.Linear weight")
        return table, methods

    def _gptq(self, weight: torch.Tensor, h: torch.Tensor, bits: int) -> QuantizedWeight:
        c = self.config
        return gptq_quantize(weight, h, bits, c.group_size, GRID_SCALE_DTYPES[c.scale_dtype], DEFAULT_SETTINGS)

    def _stored_parts(
        self, model: nn.Module, targets: list[Target], table: list[list[QuantizedWeight]], columns: tuple[int, ...],
        calib: torch.Tensor,
    ) -> list[Parts]:
        """Per layer the stored parts (with the bit tag) of the assignment ``columns``, written
        into the model: RTN's from the table; GPTQ's coded anew in forward order, each layer on
        the already quantized layers before it (quant/gptq.py's code_in_order, as gptq_weight_sim)."""

        def tagged(qw: QuantizedWeight, bits: int) -> Parts:
            return {**parts_of(qw), BITS_SUFFIX: torch.tensor(bits, dtype=torch.uint8)}

        if self.config.quantizer == "rtn":
            parts = [tagged(table[i][j], self.bits[j]) for i, j in enumerate(columns)]
            for t, p in zip(targets, parts):
                with torch.no_grad():
                    t.param.copy_(self.decode(p, t.param.shape))
            return parts
        index = {t.name: i for i, t in enumerate(targets)}

        def code(t: Target, h: torch.Tensor | None) -> tuple[Parts, str]:
            bits = self.bits[columns[index[t.name]]]
            return tagged(self._quantize(t.param, bits) if h is None else self._gptq(t.param, h, bits), bits), ""

        coded = code_in_order(model, targets, calib, code, self.decode)
        return [coded[t.name][0] for t in targets]

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

    def apply(
        self, model: nn.Module, calib: torch.Tensor | None, validation: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[nn.Module, dict[str, Any]]:
        """Measure sensitivities on ``calib`` (N, L, C) inputs, solve the ILP, score its choices and
        the uniform assignments within the budget on ``select_on``, quantize in place with the best.

        ``validation``: (x, y) labeled windows of the val split, needed with ``select_on: validation``.
        """
        c = self.config
        if calib is None:
            raise ValueError(f"{self.kind} needs calibration windows (N, L, C): it measures sensitivities on them")
        if c.select_on == "validation" and (validation is None or len(validation[0]) == 0):
            raise ValueError(
                f"{self.kind} with select_on: validation needs the labeled val windows (x, y), which the compress "
                "stage passes (compress(..., validation=...)); or set select_on: calibration"
            )
        self.start(model)
        rows = list(_rows(model, c.groups))
        targets = [_target(model, name, group) for name, _, _, group, reason in rows if reason is None]
        if not targets:
            layers = [row(name, kind, param, group, KEPT, reason) for name, kind, param, group, reason in rows]
            skipped = f"no parameter of groups {list(c.groups)} to quantize; the model stays fp32"
            return model, {**self.header(), "skipped": skipped, **summary(layers), "layers": layers}
        params = [t.param for t in targets]
        numel = sum(p.numel() for p in params)
        table, methods = self._codes(model, targets, calib)
        at = [[dequantize(qw, b, c.group_size) for qw, b in zip(codes, self.bits)] for codes in table]
        fakes = Weights(params, at)
        cost = np.array([[self._stored_bits(qw, b) for qw, b in zip(codes, self.bits)] for codes in table], dtype=float)
        budget = self._budget(params, numel)
        fits = [j for j in range(len(self.bits)) if cost[:, j].sum() <= budget]  # the bits are sorted
        if not fits:
            asked = f"avg_bits: {c.avg_bits}" if c.uniform_bits is None else f"uniform_bits: {c.uniform_bits}"
            raise ConfigError(
                f"{self.kind}: {asked} ({budget / numel:.4f} bits per weight) is below the smallest average "
                f"this model allows with bits {self.bits} (codes + scales): {cost[:, 0].sum() / numel:.4f}"
            )
        reference = model(calib).detach()
        sens, traces = self._sensitivities(model, fakes, calib, reference)
        uniform = [self._uniform_row(model, fakes, calib, reference, j, sens, cost, numel)
                   for j in range(len(self.bits))]
        picked = np.arange(len(targets))
        scored = []
        for columns, name in self._candidates(sens, cost, budget, fits).items():
            parts = self._stored_parts(model, targets, table, columns, calib)
            calib_mse = _output_mse(model, calib, reference)
            losses = None if c.select_on == "calibration" else window_losses(model, *validation)
            fakes.restore()
            scored.append({
                "name": name,
                "avg_bits": float(cost[picked, list(columns)].sum() / numel),
                "predicted_mse": float(sens[picked, list(columns)].sum()),
                "calib_mse": calib_mse,
                "score": calib_mse if losses is None else float(losses.mean()),
                "parts": parts,
                "losses": losses,
            })
        best, test = self._select(scored, f"uniform int{self.bits[fits[-1]]}", validation)
        layers = self._commit_all(model, rows, targets, best["parts"], methods, sens, traces)
        achieved = {
            "avg_bits": best["avg_bits"],
            "budget_avg_bits": budget / numel,
            "chosen_by": best["name"],
            "predicted_mse": best["predicted_mse"],
            "calib_mse": best["calib_mse"],
        }
        selection = {
            "on": c.select_on,
            "score": "output MSE vs fp32 on the calibration windows" if c.select_on == "calibration"
            else f"task loss on the {len(validation[0])} labeled val windows",
            "candidates": [{k: v for k, v in cand.items() if k not in ("parts", "losses")} for cand in scored],
            **test,
        }
        report = {**self.header(), "achieved": achieved, "selection": selection, "uniform": uniform}
        return model, {**report, **summary(layers), "layers": layers}

    def _select(
        self, scored: list[dict[str, Any]], incumbent_name: str, validation: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the chosen candidate, what the report says of the choice); see the module docstring, 4."""
        if self.config.select_on == "calibration":
            return min(scored, key=lambda cand: cand["score"]), {}  # min keeps the first of equal scores
        incumbent = next(cand for cand in scored if incumbent_name in cand["name"].split(" = "))
        others = [cand for cand in scored if cand is not incumbent]
        if not others:
            return incumbent, {"incumbent": incumbent["name"]}
        challenger = min(others, key=lambda cand: cand["score"])
        y = validation[1]
        block = y.shape[1] if y.is_floating_point() else 1  # forecasts: windows whose targets do not overlap
        p = paired_p_value(challenger["losses"], incumbent["losses"], block)
        wins = challenger["score"] < incumbent["score"] and p < self.config.select_alpha
        test = {"incumbent": incumbent["name"], "challenger": challenger["name"], "p_value": p,
                "alpha": self.config.select_alpha, "block_windows": block}
        return (challenger if wins else incumbent), test

    def _candidates(
        self, sens: np.ndarray, cost: np.ndarray, budget: float, fits: list[int]
    ) -> dict[tuple[int, ...], str]:
        """{assignment (a column per layer): its name}: the ILP's solutions at ``ilp_budgets``
        (those feasible), then every uniform assignment that fits; one entry per distinct
        assignment, named by all that produced it."""
        named: dict[tuple[int, ...], list[str]] = {}
        for fraction in self.config.ilp_budgets:
            choice = choose_bits(sens, cost, fraction * budget)
            if choice is not None:
                named.setdefault(tuple(int(j) for j in choice), []).append(
                    "ilp" if fraction == 1 else f"ilp at {fraction:g} of the budget"
                )
        for j in fits:
            named.setdefault((j,) * len(sens), []).append(f"uniform int{self.bits[j]}")
        return {columns: " = ".join(names) for columns, names in named.items()}

    def _commit_all(
        self, model: nn.Module, rows: list[tuple], targets: list[Target], parts: list[Parts], methods: list[str],
        sens: np.ndarray, traces: list[float] | None,
    ) -> list[dict[str, Any]]:
        """Write the chosen parts into the model (remembered for pack); the report's layer rows."""
        index = {t.name: i for i, t in enumerate(targets)}
        layers = []
        for name, kind, param, group, reason in rows:
            if reason is not None:
                layers.append(row(name, kind, param, group, KEPT, reason))
                continue
            i = index[name]
            bits = int(parts[i][BITS_SUFFIX])
            error = self.commit(model, name, param, parts[i])
            layers.append({
                **row(name, kind, param, group, f"int{bits} {methods[i]} (mixed precision) (simulated)"),
                "bits": bits,
                "sensitivity": {str(b): float(s) for b, s in zip(self.bits, sens[i])},
                **({"hessian_trace": traces[i]} if traces is not None else {}),
                "weight_rel_err": error,
            })
        return layers

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
            select_on=c.select_on,
            select_alpha=c.select_alpha,
            ilp_budgets=list(c.ilp_budgets),
            bits_accounting="stored bits of codes + scales per weight, over the layers it quantizes",
        )
