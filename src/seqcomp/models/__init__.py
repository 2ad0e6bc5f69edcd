"""Forecasting networks: one file per architecture, one registry.

Contract shared by every model: ``model(x)`` maps a window ``x`` of shape (B, L, C) to a
forecast of shape (B, H, C), where L is the lookback, H the horizon and C the channels.
Each class carries a ``Config`` dataclass of its hyper-parameters (range-checked in
``__post_init__``) and is built as ``cls(shape, cfg)``.

Optional hooks the training stage looks for:
- ``fit_closed_form(x, y)``: the model is fit in closed form on all training windows
  (tensors (N, L, C) and (N, H, C)) instead of by SGD;
- a parameter attribute ``_optim`` (dict, e.g. ``{"lr": 1e-3, "weight_decay": 0.0}``):
  per-parameter optimizer settings, used for SSM recurrent parameters.

Model-level keys, valid for every model and handled here, not by the model's Config:
- ``revin`` (bool, default False): wrap the model in reversible instance normalisation
  (``seqcomp.models.revin.RevIN``);
- ``cycle`` (int >= 2 or None, default None): wrap it (outermost) in residual cycle
  forecasting with that period in rows (``seqcomp.models.cycle.ResidualCycle``); the model
  then takes the phase of each lookback step as its input's last column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seqcomp.errors import ConfigError
from seqcomp.registry import Registry, make_config

if TYPE_CHECKING:  # torch is imported by the model modules, not by the registry (DAG build stays fast)
    import torch.nn as nn

MODELS = Registry(
    "model",
    {
        "naive": "seqcomp.models.naive:Naive",
        "linear": "seqcomp.models.linear:ClosedFormLinear",
        "dlinear": "seqcomp.models.dlinear:DLinear",
        "lstm": "seqcomp.models.lstm:LSTMForecaster",
        "transformer": "seqcomp.models.transformer:TransformerForecaster",
        "patchtst": "seqcomp.models.patchtst:PatchTST",
        "tsmixer": "seqcomp.models.tsmixer:TSMixer",
        "s4d": "seqcomp.models.s4d:S4DForecaster",
        "s4": "seqcomp.models.s4:S4Forecaster",
        "mamba": "seqcomp.models.mamba:MambaForecaster",
        "smamba": "seqcomp.models.smamba:SMambaForecaster",
        "spacetime": "seqcomp.models.spacetime:SpaceTimeForecaster",
        "ttm": "seqcomp.models.ttm:TTM",
        "moe_transformer": "seqcomp.models.moe_transformer:MoETransformer",
    },
)


# How the training stage fits a kind that needs no SGD (seqcomp.train.core.fit), kept beside the
# entries so that building the DAG knows without importing torch (tests/test_models.py holds it
# equal to the classes): a training job of such a model asks the scheduler for no GPU.
FIT_WITHOUT_SGD = {"linear": "closed form", "naive": "no trainable parameters"}


def trains_by_sgd(kind: str, params: dict[str, Any] | None) -> bool:
    """Whether a model of ``kind`` with ``params`` is fit by SGD: not a closed-form kind, nor a
    parameter-free one unless ``cycle`` adds its (trainable) cycle; ``revin`` keeps a
    parameter-free model parameter-free (see :func:`build_model`)."""
    how = FIT_WITHOUT_SGD.get(kind)
    return how is None or (how == "no trainable parameters" and (params or {}).get("cycle") is not None)


@dataclass(frozen=True)
class SeriesShape:
    """What a model needs to know about its data: lookback L, horizon H, channels C."""

    lookback: int
    horizon: int
    channels: int


# Keys every model accepts; popped before the model's own Config is built.
MODEL_LEVEL_KEYS = {"revin": False, "cycle": None}


def _split_model_level(params: dict[str, Any] | None, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the model's own params, the model-level options), with the latter type-checked."""
    own = dict(params or {})
    options = {key: own.pop(key, default) for key, default in MODEL_LEVEL_KEYS.items()}
    if not isinstance(options["revin"], bool):
        raise ConfigError(f"{where}: revin: must be true or false, got {options['revin']!r}")
    period = options["cycle"]
    if period is not None and (not isinstance(period, int) or isinstance(period, bool) or period < 2):
        raise ConfigError(f"{where}: cycle: must be an integer period >= 2 (rows) or null, got {period!r}")
    return own, options


def _make_config(cls: type, own: dict[str, Any], where: str) -> Any:
    try:
        return make_config(cls.Config, own, where)
    except ConfigError as exc:
        if "unknown key" not in str(exc):
            raise
        raise ConfigError(f"{exc}; model-level keys: {', '.join(MODEL_LEVEL_KEYS)}", exc.key) from None


def model_config(kind: str, params: dict[str, Any] | None, where: str) -> Any:
    """Validate a model's hyper-parameters without building it (used at DAG build time).

    Returns the model's own Config; model-level keys (``revin``, ``cycle``) are checked and left out.
    """
    own, _ = _split_model_level(params, where)
    return _make_config(MODELS.get(kind, where), own, where)


def build_model(kind: str, params: dict[str, Any] | None, shape: SeriesShape, where: str = "model") -> nn.Module:
    """Instantiate registered model ``kind`` with ``params`` for data of ``shape``."""
    cls = MODELS.get(kind, where)
    own, options = _split_model_level(params, where)
    cfg = _make_config(cls, own, where)
    try:
        model = cls(shape, cfg)
    except ValueError as exc:  # checks that need the data shape (e.g. patch_len > lookback)
        raise ConfigError(f"{where}: {exc}") from None
    if options["revin"]:
        from seqcomp.models.revin import RevIN, RevINClosedForm

        wrapper = RevINClosedForm if hasattr(model, "fit_closed_form") else RevIN
        # A parameter-free model stays parameter-free (the trainer then skips optimisation);
        # at init the affine map is the identity anyway.
        affine = any(True for _ in model.parameters())
        model = wrapper(model, shape.channels, affine=affine)
    if options["cycle"] is not None:
        from seqcomp.models.cycle import ResidualCycle, ResidualCycleClosedForm

        wrapper = ResidualCycleClosedForm if hasattr(model, "fit_closed_form") else ResidualCycle
        model = wrapper(model, shape.channels, shape.horizon, options["cycle"])
    return model
