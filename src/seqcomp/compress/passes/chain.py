"""Several passes in order, e.g. low-rank factors then 8-bit RTN codes of the factors.

Config: ``steps``, a list of pass entries ``{kind: ..., <its params>}``. Each step is validated
like a pass of its own at config time (an error names ``steps[i]``); a chain may not contain a
chain.

Stored form: what is on disk is the last step's stored form of the final model (so order
matters: prune then rtn stores int codes of the pruned weights, rtn then prune stores the
fp32 values of the kept weights). An earlier step that changed the model's structure (lowrank
turns a Linear into two) must replay that change on the skeleton before the last step's
unpack can run, so the chain also stores, for each such step, the shape of every state-dict
tensor after it (int64 metadata keyed ``__chain__.<i>.<key>``, counted in the size). unpack
gives each such step a zero-filled state dict of those shapes (a plain state dict, which
every pass's unpack loads as is), then lets the last step fill in the values. A step that
leaves modules a plain state dict cannot describe (torch.ao int8 modules) can only be last;
apply says so if it is not.

Report: every step's report under ``steps``; ``simulated`` if any step is; the per-layer rows
and counts at the top level are the last step's, since its stored form is what is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from seqcomp.compress import apply_pass, build_pass, check_nested
from seqcomp.registry import check

PREFIX = "__chain__."
_STATE_ATTR = "_seqcomp_chain"  # on the model: {step index: {state-dict key: shape}}


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]] | None:
    """Shape of every state-dict tensor, or None if the state dict holds anything else."""
    shapes = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor) or value.is_quantized:
            return None
        shapes[key] = tuple(value.shape)
    return shapes


def _params(step: dict[str, Any]) -> dict[str, Any]:
    """A step's parameters: its entry without ``kind``."""
    return {k: v for k, v in step.items() if k != "kind"}


class Chain:
    """Run ``steps`` in order; store the last step's form plus the structure of earlier steps."""

    @dataclass(frozen=True)
    class Config:
        steps: list[dict[str, Any]] | None = None

        def __post_init__(self) -> None:
            check(
                isinstance(self.steps, list) and bool(self.steps),
                "steps",
                f"must be a non-empty list of passes ({{kind: ..., <params>}}), got {self.steps!r}",
            )
            for i, step in enumerate(self.steps):
                where = f"steps[{i}]"
                is_pass = isinstance(step, dict) and "kind" in step
                check(is_pass, where, f"must be a mapping with a 'kind', got {step!r}")
                check(step["kind"] != "chain", where, "a chain cannot contain a chain; list its steps instead")
                check_nested(step["kind"], _params(step), where)

    kind: ClassVar[str] = "chain"

    def __init__(self, config: Config):
        self.config = config
        self.steps = [build_pass(step["kind"], _params(step), f"steps[{i}]") for i, step in enumerate(config.steps)]

    @property
    def simulated(self) -> bool:
        return any(step.simulated for step in self.steps)

    @property
    def uses_validation(self) -> bool:
        return any(getattr(step, "uses_validation", False) for step in self.steps)

    def apply(
        self, model: nn.Module, calib: torch.Tensor | None, validation: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[nn.Module, dict[str, Any]]:
        """Apply every step to the same copy in turn; record structure changes for unpack."""
        reports, structure = [], {}
        before = _shapes(model)
        for i, step in enumerate(self.steps):
            model, report = apply_pass(step, model, calib, validation)
            reports.append(report)
            if i == len(self.steps) - 1:
                break
            after = _shapes(model)
            if after is None:
                raise ValueError(
                    f"chain steps[{i}] ({step.kind}) leaves modules whose state is not plain tensors "
                    "(torch.ao quantized): later steps cannot work on them; make it the last step"
                )
            if after != before:
                structure[i] = after
            before = after
        model.__dict__[_STATE_ATTR] = structure
        last = reports[-1]
        header = {
            "pass": self.kind,
            "simulated": self.simulated,
            "kernels": " then ".join(str(r.get("kernels")) for r in reports),
            "note": "stored form and layers: the last step's; each step's report under 'steps'",
        }
        counts = {key: last[key] for key in ("quantized_layers", "fp32_layers", "quantized_numel", "total_numel")}
        if "skipped" in last:
            header["skipped"] = f"last step: {last['skipped']}"
        return model, {**header, **counts, "layers": last["layers"], "steps": reports}

    def pack(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The last step's stored form, plus the shapes that earlier structure changes left."""
        structure = model.__dict__.get(_STATE_ATTR)
        if structure is None:
            raise ValueError("chain.pack needs a model returned by apply() or unpack()")
        stored = self.steps[-1].pack(model)
        for i, shapes in structure.items():
            for key, shape in shapes.items():
                meta = f"{PREFIX}{i}.{key}"
                if meta in stored:
                    raise ValueError(f"chain metadata key {meta!r} collides with a stored tensor")
                stored[meta] = torch.tensor(shape, dtype=torch.int64)
        return stored

    def unpack(self, skeleton: nn.Module, stored: dict[str, torch.Tensor]) -> nn.Module:
        """Replay the earlier steps' structure on the skeleton, then the last step's unpack."""
        structure: dict[int, dict[str, tuple[int, ...]]] = {}
        for key, value in stored.items():
            if key.startswith(PREFIX):
                index, _, name = key[len(PREFIX):].partition(".")
                structure.setdefault(int(index), {})[name] = tuple(value.tolist())
        if any(not 0 <= i < len(self.steps) - 1 for i in structure):
            raise ValueError(f"chain metadata for steps {sorted(structure)} does not fit {len(self.steps)} steps")
        model = skeleton
        for i in sorted(structure):
            model = self.steps[i].unpack(model, {key: torch.zeros(shape) for key, shape in structure[i].items()})
        model = self.steps[-1].unpack(model, {k: v for k, v in stored.items() if not k.startswith(PREFIX)})
        model.__dict__[_STATE_ATTR] = structure
        return model

