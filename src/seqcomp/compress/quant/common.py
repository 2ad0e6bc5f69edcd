"""Helpers shared by the passes: copying a model safely, walking its layers, running it on
calibration windows, report entries."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

# A parameter carrying this attribute is an SSM recurrent parameter (A, log_dt, ...): the
# models tag it so that the optimiser can treat it specially, and it is known to be the part
# of an SSM most sensitive to quantization, so every pass keeps it in fp32.
RECURRENT_TAG = "_optim"


def copy_model(model: nn.Module) -> nn.Module:
    """Deep-copy ``model`` in eval mode, keeping attributes set on its parameters.

    ``nn.Parameter.__deepcopy__`` (torch 2.13) drops a parameter's ``__dict__``, so a plain
    ``copy.deepcopy`` silently loses the ``_optim`` tag of SSM recurrent parameters and a pass
    would then quantize them. Always copy models through this function.
    """
    clone = copy.deepcopy(model)
    originals = dict(model.named_parameters(remove_duplicate=False))
    for name, param in clone.named_parameters(remove_duplicate=False):
        param.__dict__.update(copy.deepcopy(originals[name].__dict__))
    return clone.eval()


def is_recurrent(param: nn.Parameter) -> bool:
    """True for SSM recurrent parameters (tagged ``_optim``), which stay fp32."""
    return hasattr(param, RECURRENT_TAG)


def param_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters directly (not through children), in definition order.

    These are the units a report lists: a Linear, an LSTM, a norm, an SSM kernel holding
    raw parameters, or a container such as MultiheadAttention holding ``in_proj_weight``.
    """
    return [
        (name, module)
        for name, module in model.named_modules()
        if next(module.parameters(recurse=False), None) is not None
    ]


CALIB_BATCH = 64  # calibration windows per forward pass


def run_calibration(model: nn.Module, calib: torch.Tensor, hooks: Sequence[RemovableHandle] = ()) -> list[Any]:
    """Outputs of ``model`` on ``calib`` (N, L, C), ``CALIB_BATCH`` windows at a time, without grad.

    ``hooks`` (forward hooks that observe the run) are removed afterwards, also on error.
    """
    try:
        with torch.no_grad():
            return [model(calib[start : start + CALIB_BATCH]) for start in range(0, len(calib), CALIB_BATCH)]
    finally:
        for handle in hooks:
            handle.remove()


def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's outputs on windows ``x``, batched without grad: (N, H, C) or (N, H, vocab)."""
    return torch.cat(run_calibration(model, x))


def losses_of(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) per-window loss of predictions ``pred`` against targets ``y``: MSE for forecasts,
    cross-entropy for class ids (a classification task's integer targets, the model emitting logits)."""
    if y.is_floating_point():
        return ((pred - y) ** 2).flatten(1).mean(1)
    return F.cross_entropy(pred.flatten(0, 1), y.flatten(), reduction="none").view(len(y), -1).mean(1)


def window_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) the loss the evaluation scores, per labeled window, so that a pass choosing or
    stopping on the val windows (mixed_precision_sim, pv_tune_sim, allocate_sim) uses the metric
    the test split is reported in."""
    return losses_of(predictions(model, x), y)


def task_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The mean of :func:`window_losses` (every window has the same number of targets)."""
    return float(window_losses(model, x, y).mean())


KEPT = "kept fp32"


def entry(name: str, kind: str, numel: int, action: str, reason: str | None = None) -> dict[str, Any]:
    """One row of a report's ``layers`` list; ``reason`` says why a layer stayed fp32."""
    row: dict[str, Any] = {"name": name, "type": kind, "numel": numel, "action": action}
    if reason is not None:
        row["reason"] = reason
    return row


def summary(layers: list[dict[str, Any]]) -> dict[str, int]:
    """Counts over report rows, so that a pass that quantized nothing is visible at a glance."""
    quantized = [row for row in layers if row["action"] != KEPT]
    return {
        "quantized_layers": len(quantized),
        "fp32_layers": len(layers) - len(quantized),
        "quantized_numel": sum(row["numel"] for row in quantized),
        "total_numel": sum(row["numel"] for row in layers),
    }


def own_numel(module: nn.Module) -> int:
    """Number of parameter elements a module owns directly."""
    return sum(p.numel() for p in module.parameters(recurse=False))
