"""Low-rank factorisation of nn.Linear weights by truncated SVD: a real pass, not simulated.

A weight W (out, in) = U S V^T is replaced by its rank-r truncation, run as two Linears:
in -> r with weight sqrt(S_r) V_r^T (no bias), then r -> out with weight U_r sqrt(S_r) and the
original bias. The model runs two smaller matmuls and stores only the factors, so FLOPs and
stored bytes both drop when r (in + out) < in * out. The singular values are split evenly
between the factors so that both have the same scale, which keeps a quantization step that
follows in a ``chain`` balanced.

The rank is ``rank_ratio`` of the full rank min(in, out) (rounded, at least 1), or the
smallest r whose squared singular values hold an ``energy`` share of ||W||_F^2 (the relative
Frobenius error is then at most sqrt(1 - energy)). A layer whose factors would not be smaller
than W stays as is, and the report says so, as it does for every module that is not a plain
nn.Linear (LSTM, Conv1d, attention's out_proj, which its parent reads as a weight) and for
Linears whose weight is an SSM recurrent parameter.

unpack rebuilds the factored structure from the stored shapes alone: a Linear ``x`` of the
skeleton whose stored form holds ``x.0.weight`` (r, in) and ``x.1.weight`` (out, r) instead
of ``x.weight`` becomes a rank-r :class:`LowRankLinear`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from seqcomp.compress.quant.common import KEPT, entry, own_numel, param_modules, summary
from seqcomp.compress.quant.groups import param_group
from seqcomp.registry import check


class LowRankLinear(nn.Sequential):
    """Linear(in, rank, bias=False) then Linear(rank, out): a rank-``rank`` nn.Linear."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool):
        super().__init__(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias))
        self.in_features, self.out_features, self.rank = in_features, out_features, rank


def energy_rank(singular: torch.Tensor, energy: float) -> int:
    """Smallest r whose first r squared singular values hold ``energy`` of their sum."""
    power = singular.double() ** 2
    share = torch.cumsum(power, 0) / power.sum().clamp(min=1e-300)
    return min(int((share < energy - 1e-12).sum()) + 1, singular.numel())


def factor(linear: nn.Linear, rank: int) -> tuple[LowRankLinear, float]:
    """The rank-``rank`` truncated SVD of ``linear``, and the share of ||W||_F^2 it keeps."""
    u, s, vh = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    low = LowRankLinear(linear.in_features, linear.out_features, rank, linear.bias is not None)
    with torch.no_grad():
        low[0].weight.copy_(root[:, None] * vh[:rank])  # (r, in)
        low[1].weight.copy_(u[:, :rank] * root)  # (out, r)
        if linear.bias is not None:
            low[1].bias.copy_(linear.bias)
    power = s**2
    return low, float(power[:rank].sum() / power.sum().clamp(min=1e-300))


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


class LowRank:
    """nn.Linear -> two smaller Linears (truncated SVD); every other layer stays fp32."""

    @dataclass(frozen=True)
    class Config:
        rank_ratio: float | None = None
        energy: float | None = None

        def __post_init__(self) -> None:
            check(
                (self.rank_ratio is None) != (self.energy is None),
                "rank_ratio",
                "give exactly one of rank_ratio (share of the full rank) or energy (share of the "
                f"squared singular values); got rank_ratio={self.rank_ratio!r}, energy={self.energy!r}",
            )
            for key in ("rank_ratio", "energy"):
                value = getattr(self, key)
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                check(
                    value is None or (number and 0 < value <= 1),
                    key,
                    f"must be a number in (0, 1], got {value!r}",
                )

    kind: ClassVar[str] = "lowrank"
    simulated: ClassVar[bool] = False

    def __init__(self, config: Config):
        self.config = config

    def _rank(self, weight: torch.Tensor) -> int:
        """The rank this config keeps for a weight (out, in)."""
        if self.config.rank_ratio is not None:
            return max(1, round(self.config.rank_ratio * min(weight.shape)))
        return energy_rank(torch.linalg.svdvals(weight.detach().double()), self.config.energy)

    @staticmethod
    def _why_not(name: str, module: nn.Module) -> str | None:
        """None when ``module`` is a Linear this pass may factor, else why it stays fp32."""
        if type(module) is not nn.Linear:
            return f"not a plain nn.Linear ({type(module).__name__}): not factored; kept fp32"
        if param_group(module, "weight") != "linear":
            return "SSM recurrent parameter kept in fp32"
        if name == "":
            return "root module: cannot be replaced by two Linears; kept fp32"
        return None

    def _layer(self, model: nn.Module, name: str, module: nn.Module) -> dict[str, Any]:
        """Factor one module if it is worth it; its report row."""
        kind, numel = type(module).__name__, own_numel(module)
        reason = self._why_not(name, module)
        if reason is not None:
            return entry(name, kind, numel, KEPT, reason)
        out_f, in_f = module.weight.shape
        rank = self._rank(module.weight)
        if rank * (in_f + out_f) >= in_f * out_f:
            return entry(
                name, kind, numel, KEPT,
                f"rank {rank} of {min(in_f, out_f)} stores {rank * (in_f + out_f)} weights, not fewer "
                f"than the {in_f * out_f} of W; kept fp32",
            )
        low, kept_energy = factor(module, rank)
        approx = low[1].weight.detach() @ low[0].weight.detach()
        error = float((approx - module.weight.detach()).norm() / module.weight.detach().norm().clamp(min=1e-30))
        _replace(model, name, low)
        row = entry(name, kind, numel, f"low rank {rank} of {min(in_f, out_f)}")
        return {
            **row,
            "rank": rank,
            "energy_kept": round(kept_energy, 6),
            "weights_ratio": round(rank * (in_f + out_f) / (in_f * out_f), 6),
            "weight_rel_err": round(error, 6),
        }

    def apply(self, model: nn.Module, calib: torch.Tensor | None) -> tuple[nn.Module, dict[str, Any]]:
        """Factor every eligible Linear in place; ``calib`` is unused (SVD is data-free)."""
        layers = [self._layer(model, name, module) for name, module in param_modules(model)]
        report = {
            "pass": self.kind,
            "simulated": self.simulated,
            "kernels": "fp32 (a factored Linear runs two smaller matmuls)",
            "rank_ratio": self.config.rank_ratio,
            "energy": self.config.energy,
        }
        if all(r["action"] == KEPT for r in layers):
            report["skipped"] = "no Linear worth factoring at this rank; the model stays fp32"
        return model, {**report, **summary(layers), "layers": layers}

    def pack(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The factored model's state dict: factors in place of the weights they replace."""
        return {key: value.detach().clone() for key, value in model.state_dict().items()}

    def unpack(self, skeleton: nn.Module, stored: dict[str, torch.Tensor]) -> nn.Module:
        """Factor the skeleton's Linears that the stored form holds as factors, then load it."""
        for name, module in list(skeleton.named_modules()):
            if type(module) is not nn.Linear or f"{name}.0.weight" not in stored or f"{name}.weight" in stored:
                continue
            first, second = stored[f"{name}.0.weight"], stored.get(f"{name}.1.weight")
            rank, out_f, in_f = first.shape[0], module.out_features, module.in_features
            if first.shape != (rank, in_f) or second is None or second.shape != (out_f, rank):
                raise ValueError(
                    f"{name}: stored factors {tuple(first.shape)} and "
                    f"{None if second is None else tuple(second.shape)} do not factor a ({out_f}, {in_f}) weight"
                )
            _replace(skeleton, name, LowRankLinear(in_f, out_f, rank, module.bias is not None))
        skeleton.load_state_dict(stored)
        return skeleton.eval()

