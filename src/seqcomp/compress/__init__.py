"""Compression passes: one file per registry key, one registry.

``passes/<key>.py`` holds the pass registered as ``<key>``; ``quant/`` holds the machinery
they share (uniform grids, coded parts, parameter groups, bit packing, sizes, activation
ranges, the RTN grid and GPTQ's rounding). A pass never imports another pass: one that runs
another (chain, qat_sim) builds it through this registry, so editing one pass's file reruns
only the jobs of the passes that use it (seqcomp.stamps).

A pass maps a trained fp32 model to a compressed one. Each pass class has a ``Config``
dataclass, a class attribute ``simulated`` (True when it runs as fake-quant on fp32 kernels:
then its name says so and no latency gain is claimed) and three methods:

- ``apply(model, calib) -> (model, report)``: compress ``model`` (a deep copy is passed in);
  ``calib`` is a tensor (N, L, C) of training windows or None. ``report`` is JSON-able and
  lists, per layer, what was done or why the layer stayed fp32.
  A pass that chooses among candidates on labeled data (mixed precision) sets the class
  attribute ``uses_validation`` and takes ``apply(model, calib, validation)``: ``validation``
  is (x, y), the windows of the val split and their targets, or None. Only those passes are
  given it (:func:`apply_pass`); the test split never reaches a pass.
- ``pack(model) -> dict[str, Tensor]``: the stored form, exactly what is written to disk.
- ``unpack(skeleton, stored) -> model``: rebuild a runnable model from a fresh fp32
  skeleton of the same architecture and the stored form.

Always copy a model with :func:`copy_model` (or go through :func:`compress`): a plain
``copy.deepcopy`` drops the ``_optim`` tag of SSM recurrent parameters, which the passes
rely on to keep them fp32. Helpers that import torch (``copy_model``, ``stored_size``,
``fp32_model_bytes``) are loaded on first use, so that importing this registry imports nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from seqcomp.errors import ConfigError
from seqcomp.registry import Registry, make_config

if TYPE_CHECKING:
    import torch
    from torch import nn

PASSES = Registry(
    "pass",
    {
        "fp32": "seqcomp.compress.passes.fp32:Identity",
        "int8_dynamic": "seqcomp.compress.passes.int8_dynamic:Int8Dynamic",
        "rtn_weight_sim": "seqcomp.compress.passes.rtn_weight_sim:RTNWeightSim",
        "gptq_weight_sim": "seqcomp.compress.passes.gptq_weight_sim:GPTQ",
        "int8_static_sim": "seqcomp.compress.passes.int8_static_sim:Int8StaticSim",
        "float_weight_sim": "seqcomp.compress.passes.float_weight_sim:FloatWeightSim",
        "lowrank": "seqcomp.compress.passes.lowrank:LowRank",
        "prune_sim": "seqcomp.compress.passes.prune_sim:Prune",
        "vq_sim": "seqcomp.compress.passes.vq_sim:VectorQuant",
        "vptq_sim": "seqcomp.compress.passes.vptq_sim:VPTQ",
        "chain": "seqcomp.compress.passes.chain:Chain",
        "mixed_precision_sim": "seqcomp.compress.passes.mixed_precision_sim:MixedPrecision",
        "qat_sim": "seqcomp.compress.passes.qat_sim:QAT",
        "ssm_pole_sim": "seqcomp.compress.passes.ssm_pole_sim:SSMPole",
        "pv_tune_sim": "seqcomp.compress.passes.pv_tune_sim:PVTune",
        "allocate_sim": "seqcomp.compress.passes.allocate_sim:Allocate",
    },
)


def build_pass(kind: str, params: dict[str, Any] | None, where: str = "pass") -> Any:
    """Instantiate registered pass ``kind`` with its validated config."""
    cls = PASSES.get(kind, where)
    return cls(make_config(cls.Config, params, where))


def pass_config(kind: str, params: dict[str, Any] | None, where: str) -> Any:
    """Validate a pass's parameters without running it (used at DAG build time)."""
    return make_config(PASSES.get(kind, where).Config, params, where)


def check_nested(kind: str, params: dict[str, Any] | None, where: str) -> None:
    """Validate a pass configured inside another pass's ``Config`` (a chain step, an RTN grid).

    Called from that ``Config.__post_init__``: the ConfigError is re-raised as a ValueError so
    that make_config prefixes the outer pass's key path.
    """
    try:
        pass_config(kind, params, where)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def compress(
    kind: str,
    params: dict[str, Any] | None,
    model: nn.Module,
    calib: torch.Tensor | None,
    where: str = "pass",
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, Any]]:
    """Run pass ``kind`` on a copy of ``model``: (compressed model, stored form, report).

    ``model`` itself is left untouched; size the stored form with :func:`stored_size`.
    ``validation`` (x, y) reaches only the passes that use it (see :func:`apply_pass`).
    """
    from seqcomp.compress.quant.common import copy_model

    compression = build_pass(kind, params, where)
    compressed, report = apply_pass(compression, copy_model(model), calib, validation)
    return compressed, compression.pack(compressed), report


def apply_pass(
    compression: Any, model: nn.Module, calib: torch.Tensor | None, validation: tuple[torch.Tensor, torch.Tensor] | None
) -> tuple[nn.Module, dict[str, Any]]:
    """``compression.apply``, given the labeled ``validation`` windows if it ``uses_validation``."""
    if getattr(compression, "uses_validation", False):
        return compression.apply(model, calib, validation)
    return compression.apply(model, calib)


def load_compressed(
    kind: str,
    params: dict[str, Any] | None,
    skeleton: nn.Module,
    stored: dict[str, torch.Tensor],
    where: str = "pass",
) -> nn.Module:
    """Rebuild a compressed model from a fresh fp32 ``skeleton`` and its stored form."""
    return build_pass(kind, params, where).unpack(skeleton, stored)


_LAZY = {
    "copy_model": "seqcomp.compress.quant.common",
    "stored_size": "seqcomp.compress.quant.size",
    "fp32_model_bytes": "seqcomp.compress.quant.size",
}


def __getattr__(name: str) -> Any:
    """Lazy access to the torch-importing helpers listed in ``_LAZY``."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
