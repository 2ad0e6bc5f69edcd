"""What a compression pass did to a mixture-of-experts model, expert by expert, for its report.

A sparse MoE layer sends each token to a few of its experts, so an expert that is rarely
chosen can take coarser weights than a busy one, and one expert whose rounding hurts can sink
a whole model. The compress report of a model with experts (groups.py: a module declaring
``experts`` through ``compression_groups()``) therefore carries, under ``experts``:

- ``sensitivity`` (val split): per layer and expert, the increase of the validation loss (MSE
  for a forecast, cross-entropy for class ids: :func:`~seqcomp.compress.quant.common.losses_of`)
  when only that expert's weights are the pass's and every other weight stays fp32. The
  expert's weights are taken from the model the pass produced (its module swapped into a copy
  of the fp32 model), not recomputed with the pass coding that expert alone: one forward per
  expert instead of one pass per expert. For a pass that codes each weight on its own (RTN, the
  grids, pruning, vector codes) this is the same thing; for GPTQ, whose codes depend on the
  already-coded layers upstream, it is the expert as coded within the whole pass. An expert the
  pass did not select (``groups`` without ``experts``) scores exactly 0. Beside it: the loss of
  the fp32 model, of the whole compressed model and of the fp32 model with every routed expert
  taken from the pass (``all_experts``), on the same windows. At most
  :data:`SENSITIVITY_WINDOWS` validation windows, evenly spaced, are used (the count is reported),
  so the cost stays (layers x experts + 3) forwards over a few hundred windows.
- ``routing`` (test split): per layer, the fraction of the token assignments that went to each
  expert (each token counts once for each of its top-k experts, so a layer's fractions sum to
  1) over every test window, from the model's ``routing_counts()``, for the fp32 model and
  for the compressed one (a coded router or coded upstream layers can move tokens), with the
  raw counts. The routing is only reported: no choice of the pass looks at the test split.

A model with experts provides ``routing_counts()`` ((layers, experts) assignments since the last
``reset_routing_counts()``) on itself or on a submodule (the model under a RevIN wrapper).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from seqcomp.compress.quant.common import copy_model, losses_of, predictions, run_calibration
from seqcomp.compress.quant.groups import expert_layers

SENSITIVITY_WINDOWS = 512  # validation windows the per-expert sensitivity is measured on, at most
_DIGITS = 8


def expert_report(
    net: nn.Module, compressed: nn.Module, validation: tuple[torch.Tensor, torch.Tensor], test_inputs: torch.Tensor
) -> dict[str, Any] | None:
    """The report's ``experts`` entry (see the module docstring), or None if ``net`` has no experts.

    ``net`` is the fp32 model (left untouched: a copy runs), ``compressed`` the pass's model (its
    routing counts are reset and read), ``validation`` the labeled val windows (x, y),
    ``test_inputs`` the test windows' inputs (N, L, C).
    """
    layers = expert_layers(net)
    if not layers:
        return None
    start = time.perf_counter()
    probe = copy_model(net)
    sensitivity = _sensitivity(probe, compressed, layers, *_spaced(validation))
    routing = {"fp32": _routing(probe, test_inputs, layers), "compressed": _routing(compressed, test_inputs, layers)}
    return {
        "layers": len(layers),
        "experts_per_layer": [len(names) for names in layers],
        "modules": layers,
        "sensitivity": sensitivity,
        "routing": {"split": "test", "windows": len(test_inputs), **routing},
        "wall_s": round(time.perf_counter() - start, 3),
    }


def _spaced(validation: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """At most SENSITIVITY_WINDOWS windows, evenly spaced over the split (all if fewer)."""
    x, y = validation
    if len(x) <= SENSITIVITY_WINDOWS:
        return x, y
    idx = torch.linspace(0, len(x) - 1, SENSITIVITY_WINDOWS).round().long()
    return x[idx], y[idx]


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(losses_of(predictions(model, x), y).mean())


def _sensitivity(
    probe: nn.Module, compressed: nn.Module, layers: list[list[str]], x: torch.Tensor, y: torch.Tensor
) -> dict[str, Any]:
    """Val-loss increase per (layer, expert) with that expert's module taken from ``compressed``
    in ``probe`` (an fp32 copy, restored after each), and the reference losses."""
    fp32 = _loss(probe, x, y)
    increase = []
    for names in layers:
        row = []
        for name in names:
            with _swapped(probe, compressed, [name]):
                row.append(round(_loss(probe, x, y) - fp32, _DIGITS))
        increase.append(row)
    with _swapped(probe, compressed, [name for names in layers for name in names]):
        all_experts = _loss(probe, x, y)
    return {
        "split": "val",
        "windows": len(x),
        "loss": "mse" if y.is_floating_point() else "cross_entropy",
        "measure": "val loss with only this expert's weights from the pass, minus the fp32 model's",
        "loss_fp32": round(fp32, _DIGITS),
        "loss_compressed": round(_loss(compressed, x, y), _DIGITS),
        "loss_all_experts": round(all_experts, _DIGITS),
        "increase": increase,
    }


@contextmanager
def _swapped(into: nn.Module, source: nn.Module, names: list[str]) -> Iterator[None]:
    """The modules ``names`` of ``into`` replaced by those of ``source`` while the body runs."""
    saved = {name: into.get_submodule(name) for name in names}
    for name in names:
        _set(into, name, source.get_submodule(name))
    try:
        yield
    finally:
        for name, module in saved.items():
            _set(into, name, module)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def _routing(model: nn.Module, x: torch.Tensor, layers: list[list[str]]) -> dict[str, Any]:
    """Assignments per (layer, expert) of ``model`` on windows ``x`` and their fractions per layer."""
    owner = next((m for m in model.modules() if hasattr(m, "routing_counts")), None)
    if owner is None:
        raise ValueError(f"{type(model).__name__} declares experts but no module of it has routing_counts()")
    owner.reset_routing_counts()
    run_calibration(model, x)
    counts = owner.routing_counts()
    owner.reset_routing_counts()
    if list(counts.shape) != [len(layers), max(len(names) for names in layers)]:
        raise ValueError(f"routing_counts() has shape {tuple(counts.shape)}, the declared experts are {layers}")
    totals = counts.sum(dim=1, keepdim=True).clamp(min=1)
    return {"counts": counts.tolist(), "fractions": (counts.double() / totals).round(decimals=6).tolist()}
