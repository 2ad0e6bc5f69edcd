"""Magnitude pruning, unstructured or 2:4 semi-structured, with an honest sparse stored form.

- ``unstructured``: zero the ``sparsity`` share of weights with the smallest |w|, ranked
  within each weight (``scope: layer``) or across all selected weights at once
  (``scope: global``, Han et al. 2015, arXiv:1506.02626; layers with small weights then lose
  more). Stored as a bitmask (1 bit per weight) plus the kept values in fp32.
- ``2:4``: in every run of 4 consecutive input weights of a row keep the 2 largest |w|
  (NVIDIA's sparse tensor-core pattern, arXiv:2104.08378): sparsity exactly 0.5. Stored as the
  kept values plus a 2-bit position per kept value. A weight whose rows are not a multiple of
  4 long does not fit the pattern and stays dense, as the report says.

A dense fp32 tensor full of zeros is not smaller, so only the sparse form is stored and
counted: bitmask/positions under metadata, kept values under fp32. Where that form would not
be smaller than the dense weight (very low sparsity, or a layer the global ranking barely
touched) the weight is left unpruned and dense, and the report says why. Ties in |w| go to
the earlier weight, so the result is deterministic.

Simulated: the model runs dense fp32 kernels on the zero-filled weights (no sparse kernels on
this CPU), so no speed-up is claimed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from seqcomp.compress.quant.bitpack import pack_bits, unpack_bits
from seqcomp.compress.quant.coded import CodedPass, candidates, row
from seqcomp.compress.quant.common import KEPT, summary
from seqcomp.compress.quant.groups import DEFAULT_GROUPS, check_groups
from seqcomp.registry import check

MASK, INDEX, VALUES = ".mask", ".index", ".values"
PATTERNS = ("unstructured", "2:4")
SCOPES = ("layer", "global")


def smallest(magnitudes: torch.Tensor, count: int) -> torch.Tensor:
    """Boolean mask of the ``count`` smallest entries of a flat tensor (ties: lower index)."""
    order = torch.argsort(magnitudes, stable=True)
    mask = torch.zeros(magnitudes.numel(), dtype=torch.bool)
    mask[order[:count]] = True
    return mask


def two_of_four(weight: torch.Tensor) -> torch.Tensor:
    """Positions (out, K/4, 2), ascending, of the 2 largest |w| in each run of 4 of a row."""
    runs = weight.detach().reshape(weight.shape[0], -1, 4).abs()  # (out, K/4, 4)
    top = torch.argsort(-runs, dim=2, stable=True)[..., :2]
    return top.sort(dim=2).values


class Prune(CodedPass):
    """Zero small weights; store a bitmask (or 2:4 positions) and the kept values."""

    @dataclass(frozen=True)
    class Config:
        pattern: str = "unstructured"
        sparsity: float = 0.5
        scope: str = "layer"
        groups: list[str] = field(default_factory=lambda: list(DEFAULT_GROUPS))

        def __post_init__(self) -> None:
            check(self.pattern in PATTERNS, "pattern", f"must be one of {list(PATTERNS)}, got {self.pattern!r}")
            number = isinstance(self.sparsity, (int, float)) and not isinstance(self.sparsity, bool)
            check(
                number and 0 < self.sparsity < 1,
                "sparsity",
                f"must be a number in (0, 1), got {self.sparsity!r}",
            )
            check(self.scope in SCOPES, "scope", f"must be one of {list(SCOPES)}, got {self.scope!r}")
            if self.pattern == "2:4":
                check(self.sparsity == 0.5, "sparsity", f"2:4 keeps exactly half: must be 0.5, got {self.sparsity!r}")
                check(self.scope == "layer", "scope", "2:4 ranks within runs of 4 weights: must be 'layer'")
            check_groups(self.groups)

    kind: ClassVar[str] = "prune_sim"

    def part_suffixes(self) -> tuple[str, ...]:
        return (INDEX, VALUES) if self.config.pattern == "2:4" else (MASK, VALUES)

    def decode(self, parts: dict[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
        values = parts[VALUES]
        if self.config.pattern == "2:4":
            rows = torch.zeros(shape[0], shape.numel() // shape[0] // 4, 4)  # (out, K/4, 4)
            index = unpack_bits(parts[INDEX], 2, values.numel()).long().view(shape[0], -1, 2)
            return rows.scatter_(2, index, values.view(index.shape)).reshape(shape)
        mask = unpack_bits(parts[MASK], 1, shape.numel()).bool()
        if int(mask.sum()) != values.numel():
            raise ValueError(f"bitmask keeps {int(mask.sum())} weights but {values.numel()} values are stored")
        dense = torch.zeros(shape.numel())
        dense[mask] = values
        return dense.view(shape)

    def _parts(self, weight: torch.Tensor, pruned: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Stored parts of ``weight`` with the flat boolean mask ``pruned`` (unstructured)."""
        w = weight.detach().float()
        if self.config.pattern == "2:4":
            index = two_of_four(w)  # (out, K/4, 2)
            values = w.reshape(w.shape[0], -1, 4).gather(2, index)
            return {INDEX: pack_bits(index.reshape(-1).to(torch.uint8), 2), VALUES: values.reshape(-1).clone()}
        keep = ~pruned
        return {MASK: pack_bits(keep.to(torch.uint8), 1), VALUES: w.reshape(-1)[keep].clone()}

    def _masks(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Flat boolean masks of the weights to zero (unstructured), per layer or global."""
        s = self.config.sparsity
        if self.config.scope == "layer" or not weights:
            return {name: smallest(w.detach().abs().reshape(-1), round(s * w.numel())) for name, w in weights.items()}
        flat = torch.cat([w.detach().abs().reshape(-1) for w in weights.values()])
        mask = smallest(flat, round(s * flat.numel()))
        return dict(zip(weights, mask.split([w.numel() for w in weights.values()])))

    @staticmethod
    def _sparse_bytes(parts: dict[str, torch.Tensor], weight: torch.Tensor) -> int:
        """Bytes of the sparse form, the int64 shape tag included."""
        return sum(p.numel() * p.element_size() for p in parts.values()) + 8 * weight.dim()

    def _why_dense(self, weight: torch.Tensor) -> str | None:
        """Why ``weight`` cannot take the pattern at all (2:4 needs rows a multiple of 4 long)."""
        width = weight.numel() // weight.shape[0]
        if self.config.pattern == "2:4" and width % 4:
            return f"rows of {width} weights are not a multiple of 4: no 2:4 pattern; kept dense fp32"
        return None

    def apply(self, model: nn.Module, calib: torch.Tensor | None) -> tuple[nn.Module, dict[str, Any]]:
        """Prune the selected weights in place; ``calib`` is unused (magnitude is data-free)."""
        self.start(model)
        rows = list(candidates(model, self.config.groups))
        for i, (name, kind, param, group, reason) in enumerate(rows):
            if reason is None and (why := self._why_dense(param)) is not None:
                rows[i] = (name, kind, param, group, why)
        weights = {name: param for name, _, param, _, reason in rows if reason is None}
        masks = self._masks(weights) if self.config.pattern == "unstructured" else {}
        layers, zeroed, pruned_numel = [], 0, 0
        for name, kind, param, group, reason in rows:
            if reason is not None:
                layers.append(row(name, kind, param, group, KEPT, reason))
                continue
            parts = self._parts(param, masks.get(name))
            sparse, dense = self._sparse_bytes(parts, param), param.numel() * 4
            if sparse >= dense:
                why = f"sparse form ({sparse} B) not smaller than dense fp32 ({dense} B); kept dense, unpruned"
                layers.append(row(name, kind, param, group, KEPT, why))
                continue
            zeros = param.numel() - parts[VALUES].numel()
            zeroed, pruned_numel = zeroed + zeros, pruned_numel + param.numel()
            error = self.commit(model, name, param, parts)
            action = f"pruned {self.config.pattern} ({self.config.scope}) (simulated)"
            layers.append({
                **row(name, kind, param, group, action),
                "sparsity": round(zeros / param.numel(), 6),
                "weight_rel_err": error,
            })
        report = self.describe(
            "simulated: stored sparse (bitmask or 2:4 positions + kept fp32 values), "
            "computed dense; no speed-up claimed",
            kernels="dense fp32 on zero-filled weights (no sparse kernels)",
            pattern=self.config.pattern,
            scope=self.config.scope,
            sparsity=self.config.sparsity,
            achieved_sparsity=round(zeroed / max(1, pruned_numel), 6),  # over the pruned weights
            groups=list(self.config.groups),
        )
        if all(r["action"] == KEPT for r in layers):
            report["skipped"] = "no selected weight could be pruned; the model stays fp32"
        return model, {**report, **summary(layers), "layers": layers}

