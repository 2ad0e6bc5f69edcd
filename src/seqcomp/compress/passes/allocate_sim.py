"""Accuracy-budgeted allocation: per weight the format with the fewest stored bytes, the whole
model within a validation-loss budget (HAWQ-V3 style integer program, then verified).

HAWQ-V3 (Yao et al. 2021, arXiv:2011.10680) chooses per-layer precisions with an integer
linear program over measured sensitivities. Here the choices are whole stored formats, not
only bit-widths, and the constraint is accuracy, not size:

1. Formats. Every floating state-dict tensor may stay ``fp32`` or be stored ``fp16``; besides,
   each entry of ``candidates`` (name -> a nested config of any registered coded pass: RTN or
   GPTQ grids at several bits, vector codes, pruning, ...) is run once on a copy of the fp32
   model with the calibration windows, and every weight it coded (the parts a CodedPass keeps
   for its stored form) becomes one more format of that weight. The allocator knows nothing of
   the candidates' codes: it keeps their parts and calls their ``decode``, so any coded pass
   added to the registry can be a candidate. A candidate coding a weight in no fewer bytes than
   fp16 is dropped for that weight (fp16 is within ~1e-3 of fp32, nothing to gain), and so is
   one whose decoded weight equals a cheaper or equal format's. GPTQ-style candidates code each
   layer on the outputs of their own already-coded layers, not of the final mix: the parts stay
   valid codes of the weight, only their error feedback was tuned to another upstream.
2. Sensitivity of each (weight, format): the weight alone takes the decoded value, every other
   tensor stays fp32, on ``sensitivity_windows`` evenly spaced windows of the val split:
   - ``output`` (default): mean squared change of the model's output vs fp32;
   - ``loss``: the change of the task's loss (negative values count as 0 in the program).
   Both are measured from the same forward pass and both are in the report. ``output`` is the
   default because it is never negative and adds up across weights (independent errors add in
   the mean square), while a lone weight's loss change is mostly a signed cross term with the
   residual that does not add up and is noise at the scale of a +1% budget: on the ETTh1 H96
   PatchTST, ``loss`` at a +0.5% val budget chose 10.8x at +0.35% val but +5.4% test MSE,
   ``output`` 10.1x at +0.49% val, +0.37% test (it fits the val labels' noise).
3. ``scipy.optimize.milp`` (HiGHS, zero MIP gap): one format per tensor, fewest total stored
   bytes (counted as quant/size.py counts them: parts, shape, 1-byte tag), summed sensitivity
   at most a proxy budget.
4. Verification on the full val split: the chosen model's task loss must be at most
   (1 + ``budget``) times the fp32 model's. The proxy starts at ``budget`` times the fp32 val
   loss; an assignment over budget shrinks it (x1/4 until one fits), one within grows it (x4
   until one does not), then geometric bisection between the largest proxy that fitted and the
   smallest that did not, for at most ``rounds`` verifications. The fewest-bytes assignment
   that fitted is kept; if none did, every tensor stays fp32 (exactly the fp32 loss), and the
   report says so. ``budget: 0`` thus keeps the val loss from rising at all.

With ``target_ratio: r`` the allocator runs HAWQ-V3's own program instead, a size budget: the
assignment of at most fp32 bytes / r with the least summed sensitivity (one milp), verified on
the full val split and reported with its val increase; ``budget`` is then not used. Why both:
at a +1% val budget the fewest-bytes assignment goes as far as val allows (16-20x on the ETTh1
H96 linear models, S-Mamba, SpaceTime, the Transformer), and on five of the twelve models test
MSE rose more than val (+1.3% to +2.5% test at +0.3% to +1.0% val); at a fixed size the most
accurate assignment keeps the whole val margin instead of spending it.

The choice is made on the val split (``uses_validation``: the compress stage passes it, the
test split never reaches a pass) and reported on test by the evaluation stage.

Stored form: per coded weight its candidate's parts, its shape and a 1-byte ``.format`` tag
(the candidate's index in ``candidates``, whose order the config fixes), so that unpack rebuilds
every candidate through the registry and calls the tagged one's ``decode``; a tensor kept in
fp16 is stored as fp16, every other tensor as is. Simulated: fp32 kernels on decoded weights,
no speed-up claimed.

Report: per tensor its format, bytes, bits per element and sensitivities (and every format
that was on offer); the verification rounds (proxy, predicted, measured val loss, bytes); the
achieved val loss and stored bytes; and ``bounds``: per parameter group its share of the
stored bytes and bits per element, and the tensors that kept more bytes than their cheapest
format because the budget did not allow it (what limits the ratio).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from seqcomp.compress import PASSES, apply_pass, build_pass, check_nested
from seqcomp.compress.quant.coded import _STATE_ATTR, SHAPE_SUFFIX, CodedPass, Parts, real_view, relative_error, row
from seqcomp.compress.quant.common import KEPT, copy_model, losses_of, predictions, summary
from seqcomp.compress.quant.groups import GRID_GROUPS, GROUPS, named_groups
from seqcomp.compress.quant.size import fp32_model_bytes, stored_size
from seqcomp.registry import check

TAG_SUFFIX = ".format"  # uint8: index of the candidate whose parts a weight stores (metadata bytes)
FP32, FP16 = "fp32", "fp16"  # the formats every floating tensor has
SENSITIVITIES = ("output", "loss")
GROW = 4.0  # proxy factor while no verified assignment is over (or within) budget yet
_FP16_ATTR = "_seqcomp_alloc_fp16"  # on the model: the state-dict keys stored in fp16


GPTQ, VPTQ, POLE = {"kind": "gptq_weight_sim"}, {"kind": "vptq_sim"}, {"kind": "ssm_pole_sim"}  # literal kinds: seqcomp.jobs finds them


def _grid(base: dict[str, str], bits: int, symmetric: bool = True) -> dict[str, Any]:
    return {**base, "bits": bits, "symmetric": symmetric, "calibration": "mse", "scale_dtype": "float8_e4m3",
            "groups": list(GRID_GROUPS)}


# Grids with MSE-searched fp8 scales over every group (each parameter has a coded choice): GPTQ
# at 8..2 bits (RTN where GPTQ does not apply), asymmetric at 3 and 2 bits (the symmetric 2-bit
# grid is ternary); VPTQ's Hessian-aware vector codes at about 1.5, 2 and 3 index bits per
# weight (the Transformer's head at 3 bits of GPTQ cost +1.1% test, VPTQ 256x4 +0.5% at 14.9x);
# and the SSM recurrent parameters on per-mode grids (ssm_pole_sim: S4's P and B took 49% of
# its bytes in a k-means codebook without them). Minmax grids in place of the MSE-searched ones
# gave linear 8.5x instead of 10.2x within +1% val; RTN grids and plain k-means codebooks
# (vq_sim) were candidates too, and VPTQ / GPTQ beat them at the same sizes.
DEFAULT_CANDIDATES: dict[str, dict[str, Any]] = {
    **{f"gptq{b}": _grid(GPTQ, b) for b in (8, 6, 4, 3, 2)},
    **{f"gptq{b}a": _grid(GPTQ, b, symmetric=False) for b in (3, 2)},
    **{f"vptq{k}x{d}": {**VPTQ, "codebook_size": k, "dim": d} for k, d in ((64, 4), (256, 4), (64, 2))},
    **{f"pole{b}": {**POLE, "bits": b} for b in (4, 3, 2)},
}


def _nested(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "kind"}


def _check_candidate(name: Any, entry: Any) -> None:
    where = f"candidates.{name}"
    check(isinstance(name, str) and name not in (FP32, FP16), where, f"a candidate's name may not be {FP32} or {FP16}")
    check(isinstance(entry, dict) and "kind" in entry, where, f"must be a mapping with a 'kind', got {entry!r}")
    kind = entry["kind"]
    check(kind != Allocate.kind, where, "an allocator cannot be a candidate of an allocator")
    check_nested(kind, _nested(entry), where)
    cls = PASSES.get(kind, where)
    check(
        issubclass(cls, CodedPass),
        where,
        f"{kind} is not a coded pass storing each weight as its own parts (quant/coded.py's CodedPass), "
        "so its weights cannot be mixed with other formats",
    )


def cheapest_within(owner: np.ndarray, cost: np.ndarray, sens: np.ndarray, proxy: float) -> np.ndarray:
    """Indices of the chosen options: exactly one per owner, fewest summed ``cost``, summed
    ``sens`` at most ``proxy`` (HiGHS, zero MIP gap).

    ``owner``, ``cost``, ``sens`` are flat (options,) arrays. Feasible whenever each owner has
    an option of sensitivity 0 (fp32) and ``proxy >= 0``.
    """
    return _one_each(owner, cost, sens, proxy)


def most_accurate_within(owner: np.ndarray, cost: np.ndarray, sens: np.ndarray, max_bytes: float) -> np.ndarray | None:
    """Indices of the chosen options: exactly one per owner, least summed ``sens``, summed
    ``cost`` at most ``max_bytes``; None when even the cheapest options exceed it."""
    return _one_each(owner, sens, cost, max_bytes, required=False)


def _one_each(owner: np.ndarray, objective: np.ndarray, bounded: np.ndarray, limit: float,
              required: bool = True) -> np.ndarray | None:
    """One option per owner minimising ``objective`` with summed ``bounded`` at most ``limit``;
    both sides normalised, since HiGHS's tolerances are absolute."""
    if len(owner) == 0:  # nothing to choose (a model without parameters)
        return np.zeros(0, dtype=int)
    owners = int(owner.max()) + 1
    one_each = LinearConstraint(np.eye(owners)[owner].T, 1, 1)
    scale = max(float(bounded.max()), 1e-300)
    within = LinearConstraint((bounded / scale).reshape(1, -1), -np.inf, limit / scale)
    result = milp(
        objective / max(float(objective.max()), 1e-300),
        constraints=[one_each, within],
        integrality=np.ones(len(objective)),
        bounds=Bounds(0, 1),
        options={"mip_rel_gap": 0.0},
    )
    if result.status == 2 and not required:  # infeasible
        return None
    if result.status != 0:
        raise RuntimeError(f"allocation program failed: {result.message}")
    return np.flatnonzero(np.round(result.x) == 1)


@dataclass
class Option:
    """One format of one tensor: its value in the model, stored parts (None: kept), bytes."""

    key: str
    name: str
    value: torch.Tensor
    parts: Parts | None
    bytes: int
    output: float = 0.0  # output MSE vs fp32 with this tensor alone in this format
    loss: float = 0.0  # task-loss change on the same windows
    error: float | None = None  # relative error of the value vs fp32 (real tensors), once chosen


class Allocate(CodedPass):
    """Per weight the cheapest format (fp32, fp16 or a candidate's parts) within a val-loss budget."""

    @dataclass(frozen=True)
    class Config:
        budget: float = 0.01  # allowed relative increase of the val loss over the fp32 model's
        candidates: dict[str, dict[str, Any]] | None = None  # name -> {kind: <coded pass>, ...}; null: defaults
        sensitivity: str = "output"  # output | loss: what the program adds up (see the module docstring)
        sensitivity_windows: int = 256  # val windows (evenly spaced) the sensitivity table runs on
        rounds: int = 8  # verifications on the full val split, at most
        target_ratio: float | None = None  # a size budget instead: the most accurate within fp32 bytes / this

        def __post_init__(self) -> None:
            number = isinstance(self.budget, (int, float)) and not isinstance(self.budget, bool)
            check(
                number and math.isfinite(self.budget) and self.budget >= 0,
                "budget",
                f"must be a number >= 0 (allowed relative increase of the val loss), got {self.budget!r}",
            )
            candidates = self.candidates
            if candidates is not None:
                check(
                    isinstance(candidates, dict) and 0 < len(candidates) <= 256,
                    "candidates",
                    f"must be a mapping of 1..256 named passes (or null for the defaults), got {candidates!r}",
                )
                for name, entry in candidates.items():
                    _check_candidate(name, entry)
            check(
                self.sensitivity in SENSITIVITIES,
                "sensitivity",
                f"must be one of {list(SENSITIVITIES)}, got {self.sensitivity!r}",
            )
            ratio = self.target_ratio
            check(
                ratio is None or (math.isfinite(ratio) and ratio > 1),
                "target_ratio",
                f"must be a stored-size reduction > 1 (fp32 bytes / stored bytes) or null, got {ratio!r}",
            )
            for key in ("sensitivity_windows", "rounds"):
                value = getattr(self, key)
                check(type(value) is int and value > 0, key, f"must be a positive integer, got {value!r}")

    kind: ClassVar[str] = "allocate_sim"
    uses_validation: ClassVar[bool] = True
    stage: ClassVar[str] = "allocation"

    def __init__(self, config: Config):
        super().__init__(config)
        entries = DEFAULT_CANDIDATES if config.candidates is None else config.candidates
        self.names = list(entries)
        self.passes = [build_pass(e["kind"], _nested(e), f"candidates.{n}") for n, e in entries.items()]
        suffixes = (s for p in self.passes for s in (*p.part_suffixes(), *p.optional_parts))
        self.optional_parts = tuple(dict.fromkeys(suffixes))  # unpack finds any candidate's parts

    def part_suffixes(self) -> tuple[str, ...]:
        return (TAG_SUFFIX,)

    def decode(self, parts: Parts, shape: torch.Size) -> torch.Tensor:
        """The tagged candidate's decode of the other parts."""
        index = int(parts[TAG_SUFFIX])
        if not 0 <= index < len(self.passes):
            raise ValueError(f"format tag {index} names no candidate (there are {len(self.passes)}): wrong config?")
        candidate = self.passes[index]
        rest = {s: p for s, p in parts.items() if s != TAG_SUFFIX}
        allowed = {*candidate.part_suffixes(), *candidate.optional_parts}
        if not set(candidate.part_suffixes()) <= set(rest) <= allowed:
            raise ValueError(
                f"parts {sorted(rest)} are not candidate {self.names[index]!r}'s ({sorted(allowed)}): wrong config?"
            )
        return candidate.decode(rest, shape)

    # -- formats -------------------------------------------------------------------------

    def _options(
        self, model: nn.Module, calib: torch.Tensor | None, validation: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[dict[str, list[Option]], dict[str, dict[str, Any]]]:
        """{state-dict key: its formats}, for every floating tensor, fp32 first; and per candidate
        what it coded and which other tensors it changed (those changes are not taken: a
        candidate that also tunes biases or norms gives only its coded weights here)."""
        state = model.state_dict()
        options: dict[str, list[Option]] = {}
        for key, value in state.items():
            if value.is_floating_point() or value.is_complex():
                half = value.to(torch.complex32 if value.is_complex() else torch.float16)
                options[key] = [
                    Option(key, FP32, value.clone(), None, value.untyped_storage().nbytes()),
                    Option(key, FP16, half.to(value.dtype), None, half.untyped_storage().nbytes()),
                ]
        notes = {}
        for index, (name, candidate) in enumerate(zip(self.names, self.passes)):
            try:
                coded = apply_pass(candidate, copy_model(model), calib, validation)[0]
            except (ValueError, RuntimeError) as exc:
                raise ValueError(f"{self.kind}: candidate {name!r} ({candidate.kind}) failed: {exc}") from exc
            if extra := candidate.pack_extra(coded):
                raise ValueError(
                    f"{self.kind}: candidate {name!r} ({candidate.kind}) stores {sorted(extra)[:3]} besides its "
                    "weights' parts (activation ranges?): its weights cannot be mixed with other formats"
                )
            coded_parts = coded.__dict__.get(_STATE_ATTR, {})
            changed = [
                key for key, value in coded.state_dict().items()
                if key in options and key not in coded_parts
                and not torch.equal(value, state[key]) and not torch.equal(value, options[key][1].value)
            ]
            notes[name] = {"kind": candidate.kind, "coded": len(coded_parts), "changed_not_coded": changed}
            for key, parts in coded_parts.items():
                original = state[key]
                shape = real_view(original).shape
                decoded = candidate.decode(parts, shape)
                value = torch.view_as_complex(decoded.contiguous()) if original.is_complex() else decoded
                stored = {**parts, TAG_SUFFIX: torch.tensor(index, dtype=torch.uint8)}
                size = stored_size({**stored, SHAPE_SUFFIX: torch.tensor(shape, dtype=torch.int64)})["bytes"]
                formats = options[key]
                if size < formats[1].bytes and not any(
                    o.bytes <= size and torch.equal(o.value, value) for o in formats
                ):
                    formats.append(Option(key, name, value, stored, size))
        return options, notes

    def _measure(self, model: nn.Module, options: dict[str, list[Option]], x: torch.Tensor, y: torch.Tensor) -> None:
        """Fill in each format's sensitivities: that tensor alone in it, all else fp32, on (x, y)."""
        state = model.state_dict()
        reference = predictions(model, x)
        base = float(losses_of(reference, y).mean())
        with torch.no_grad():
            for key, formats in options.items():
                for option in formats[1:]:
                    state[key].copy_(option.value)
                    pred = predictions(model, x)
                    option.output = float(((pred - reference) ** 2).mean())
                    option.loss = float(losses_of(pred, y).mean()) - base
                state[key].copy_(formats[0].value)

    def _assign(self, model: nn.Module, chosen: list[Option]) -> None:
        state = model.state_dict()
        with torch.no_grad():
            for option in chosen:
                state[option.key].copy_(option.value)

    # -- apply ---------------------------------------------------------------------------

    def apply(
        self, model: nn.Module, calib: torch.Tensor | None, validation: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[nn.Module, dict[str, Any]]:
        """Choose a format per tensor (see the module docstring) and store the model in them.

        ``validation``: (x, y), the labeled windows of the val split (required).
        """
        c = self.config
        if validation is None or len(validation[0]) == 0:
            raise ValueError(
                f"{self.kind} needs the labeled val windows (x, y), which the compress stage passes "
                "(compress(..., validation=...)): its budget is a val-loss budget"
            )
        x, y = validation
        pick = torch.linspace(0, len(x) - 1, min(len(x), c.sensitivity_windows)).round().long().unique()
        options, notes = self._options(model, calib, validation)
        self._measure(model, options, x[pick], y[pick])
        flat = [o for formats in options.values() for o in formats]
        cost = np.array([o.bytes for o in flat], dtype=float)
        sens = np.array([max(getattr(o, c.sensitivity), 0.0) for o in flat])
        fixed = sum(v.untyped_storage().nbytes() for k, v in model.state_dict().items() if k not in options)
        fp32_loss = float(losses_of(predictions(model, x), y).mean())

        if c.target_ratio is None:
            best, rounds = self._search(model, options, cost, sens, x, y, fp32_loss, fixed)
        else:
            best, rounds = self._sized(model, options, cost, sens, x, y, fp32_loss, fixed)
        fallback = best is None
        chosen = [formats[0] for formats in options.values()] if fallback else [flat[i] for i in best[0]]
        layers, buffers = self._commit_all(model, options, chosen)
        total = int(sum(o.bytes for o in chosen)) + fixed
        val_loss = fp32_loss if fallback else best[1]
        achieved = {
            "val_loss_fp32": fp32_loss,
            "val_loss": val_loss,
            "val_increase": val_loss / max(fp32_loss, 1e-30) - 1,
            "bytes": total,
            "fp32_bytes": fp32_model_bytes(model),
            "ratio": fp32_model_bytes(model) / total if total else None,
            "predicted": float(sum(getattr(o, c.sensitivity) for o in chosen)),
        }
        if fallback and c.target_ratio is not None:
            achieved["fallback"] = (f"no assignment reaches {c.target_ratio}x (the cheapest formats do not): "
                                    "stored fp32")
        elif fallback:
            achieved["fallback"] = f"no assignment verified within the budget in {len(rounds)} rounds: stored fp32"
        report = {
            **self.header(),
            "achieved": achieved,
            "rounds": rounds,
            "candidate_runs": notes,
            "bounds": _bounds(layers, total),
            **summary(layers),
            "layers": layers,
        }
        if buffers:
            report["buffers"] = buffers
        return model, report

    def _search(
        self, model: nn.Module, options: dict[str, list[Option]], cost: np.ndarray, sens: np.ndarray,
        x: torch.Tensor, y: torch.Tensor, fp32_loss: float, fixed: int,
    ) -> tuple[tuple[tuple[int, ...], float] | None, list[dict[str, Any]]]:
        """The verification rounds (module docstring, 4): ((options chosen, their val loss) of the
        fewest-bytes assignment within the budget, or None; a report row per round). ``fixed``: the
        bytes of the tensors that have no formats (integer buffers)."""
        c = self.config
        flat = [o for formats in options.values() for o in formats]
        owner = np.array([i for i, formats in enumerate(options.values()) for _ in formats])
        limit = fp32_loss * (1 + c.budget)
        rounds: list[dict[str, Any]] = []
        seen: dict[tuple[int, ...], dict[str, Any]] = {}
        best: tuple[int, ...] | None = None
        proxy, fits_at, over_at = c.budget * fp32_loss, None, None
        smallest = float(sens[sens > 0].min()) if (sens > 0).any() else 0.0
        cheapest = cheapest_within(owner, cost, sens, float(sens.sum()))  # the budget at infinity
        ceiling = float(sens[cheapest].sum())  # no proxy above this changes the choice
        for _ in range(c.rounds):
            picked = tuple(int(i) for i in cheapest_within(owner, cost, sens, proxy))
            if picked not in seen:
                self._assign(model, [flat[i] for i in picked])
                val_loss = float(losses_of(predictions(model, x), y).mean())
                self._assign(model, [formats[0] for formats in options.values()])
                seen[picked] = {"val_loss": val_loss, "bytes": int(cost[list(picked)].sum()) + fixed}
            result = seen[picked]
            fits = result["val_loss"] <= limit
            rounds.append({
                "proxy": proxy,
                "predicted": float(sens[list(picked)].sum()),
                **result,
                "val_increase": result["val_loss"] / max(fp32_loss, 1e-30) - 1,
                "fits": fits,
            })
            if fits and (best is None or result["bytes"] < seen[best]["bytes"]):
                best = picked
            if fits:
                fits_at = proxy
            else:
                over_at = proxy
            if over_at is None:
                proxy = max(proxy * GROW, smallest)
            elif fits_at is None:
                proxy = over_at / GROW
            else:
                proxy = math.sqrt(max(fits_at, smallest / GROW) * over_at)
            if (fits and fits_at >= ceiling) or over_at == 0 or (
                over_at is not None and fits_at is not None and over_at <= fits_at * 1.05
            ):
                break
        return (None if best is None else (best, seen[best]["val_loss"])), rounds

    def _sized(
        self, model: nn.Module, options: dict[str, list[Option]], cost: np.ndarray, sens: np.ndarray,
        x: torch.Tensor, y: torch.Tensor, fp32_loss: float, fixed: int,
    ) -> tuple[tuple[tuple[int, ...], float] | None, list[dict[str, Any]]]:
        """The size-budgeted program (``target_ratio``): the least summed sensitivity within
        fp32 bytes / target_ratio, measured once on the full val split; None if out of reach."""
        flat = [o for formats in options.values() for o in formats]
        owner = np.array([i for i, formats in enumerate(options.values()) for _ in formats])
        max_bytes = fp32_model_bytes(model) / self.config.target_ratio - fixed
        chosen = most_accurate_within(owner, cost, sens, max_bytes)
        if chosen is None:
            return None, [{"max_bytes": max_bytes, "fits": False}]
        picked = tuple(int(i) for i in chosen)
        self._assign(model, [flat[i] for i in picked])
        val_loss = float(losses_of(predictions(model, x), y).mean())
        self._assign(model, [formats[0] for formats in options.values()])
        row = {"max_bytes": max_bytes, "predicted": float(sens[list(picked)].sum()), "val_loss": val_loss,
               "bytes": int(cost[list(picked)].sum()) + fixed, "val_increase": val_loss / max(fp32_loss, 1e-30) - 1,
               "fits": True}
        return (picked, val_loss), [row]

    def _commit_all(
        self, model: nn.Module, options: dict[str, list[Option]], chosen: list[Option]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Write the chosen formats into ``model`` (remembered for pack); report rows for the
        parameters and for the floating buffers."""
        self.start(model)
        state, half = model.state_dict(), set()
        by_key = {o.key: o for o in chosen}
        with torch.no_grad():
            for option in chosen:
                error = relative_error(option.value, state[option.key]) if option.value.is_floating_point() else None
                state[option.key].copy_(option.value)
                if option.parts is not None:
                    model.__dict__[_STATE_ATTR][option.key] = option.parts
                elif option.name == FP16:
                    half.add(option.key)
                option.error = error
        model.__dict__[_FP16_ATTR] = half

        def describe(key: str, numel: int) -> dict[str, Any]:
            option = by_key[key]
            return {
                "format": option.name,
                "bytes": option.bytes,
                "bits_per_element": round(8 * option.bytes / numel, 4),
                "sensitivity": {"output": option.output, "loss": option.loss},
                **({"weight_rel_err": option.error} if option.error is not None else {}),
                "formats": {o.name: {"bytes": o.bytes, "output": o.output, "loss": o.loss} for o in options[key]},
            }

        layers, params = [], set()
        for name, module, _, param, group in named_groups(model):
            params.add(name)
            if name not in by_key:  # integer parameters: stored as they are
                layers.append(row(name, type(module).__name__, param, group, KEPT))
                continue
            option = by_key[name]
            action = f"{option.name} (allocated, simulated)" if option.parts is not None else KEPT
            extra = {"stored_dtype": "float16"} if option.name == FP16 else {}
            layers.append({**row(name, type(module).__name__, param, group, action), **extra,
                           **describe(name, param.numel())})
        buffers = [{"name": key, **describe(key, state[key].numel())} for key in options if key not in params]
        return layers, buffers

    # -- stored form ---------------------------------------------------------------------

    def pack(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """CodedPass.pack, with the tensors kept in fp16 stored as fp16 (they hold fp16 values)."""
        stored = super().pack(model)
        for key in model.__dict__[_FP16_ATTR]:
            value = stored[key]
            stored[key] = value.to(torch.complex32 if value.is_complex() else torch.float16)
            if not torch.equal(stored[key].to(value.dtype), value):
                raise ValueError(f"{key} is not exactly fp16 any more: it changed after allocation")
        return stored

    def unpack(self, skeleton: nn.Module, stored: dict[str, torch.Tensor]) -> nn.Module:
        model = super().unpack(skeleton, stored)
        half = (torch.float16, torch.complex32)
        model.__dict__[_FP16_ATTR] = {k for k in model.state_dict() if k in stored and stored[k].dtype in half}
        return model

    def header(self) -> dict[str, Any]:
        c = self.config
        return self.describe(
            "simulated: per weight the parts of the format chosen (fp16, or a candidate pass's codes + a "
            "1-byte format tag), decoded to fp32; no speed-up claimed",
            budget=c.budget if c.target_ratio is None else None,
            target_ratio=c.target_ratio,
            candidates=dict(zip(self.names, (p.kind for p in self.passes))),
            sensitivity=c.sensitivity,
            sensitivity_windows=c.sensitivity_windows,
            rounds_max=c.rounds,
        )


def _bounds(layers: list[dict[str, Any]], total: int) -> dict[str, Any]:
    """What limits the ratio: each group's share of the stored bytes and bits per element, and
    the tensors kept above their cheapest format (the budget's price), by bytes above it."""
    groups: dict[str, dict[str, float]] = {}
    above = []
    for r in layers:
        if "bytes" not in r:
            continue
        g = groups.setdefault(r["group"], {"numel": 0, "bytes": 0})
        g["numel"] += r["numel"]
        g["bytes"] += r["bytes"]
        cheapest = min(r["formats"].items(), key=lambda item: item[1]["bytes"])
        if r["bytes"] > cheapest[1]["bytes"]:
            above.append({
                "name": r["name"],
                "group": r["group"],
                "format": r["format"],
                "bits_per_element": r["bits_per_element"],
                "share_of_bytes": r["bytes"] / total,
                "cheapest": cheapest[0],
                "cheapest_bits_per_element": round(8 * cheapest[1]["bytes"] / r["numel"], 4),
                "cheapest_output": cheapest[1]["output"],
                "bytes_above_cheapest": r["bytes"] - cheapest[1]["bytes"],
            })
    for g in groups.values():
        g["share_of_bytes"] = g["bytes"] / total
        g["bits_per_element"] = round(8 * g["bytes"] / g["numel"], 4) if g["numel"] else None
    above.sort(key=lambda a: -a["bytes_above_cheapest"])
    return {"groups": groups, "above_cheapest": above}
