"""Shared base of the simulated passes that store each compressed weight as a few tensors.

Such a pass replaces every weight it compresses by an fp32 tensor decoded from a few "parts"
(bit-packed codes and scales; a bitmask and the kept values; codebook indices and a codebook
...) and keeps running fp32 kernels on it: simulated. The parts, keyed
``<state-dict key><suffix>``, plus ``<key>.shape`` (int64) are the stored form of that weight;
every other tensor of the state dict is stored as is. size.py files each part under weights,
scales or metadata by its suffix and dtype, so the byte count is exactly what is written.

A subclass of :class:`CodedPass` names the suffixes of its parts (``part_suffixes``, and
``optional_parts`` for those only some weights have, which its ``decode`` then checks) and
implements ``decode``. Then either

- it codes each selected parameter alone (``encode``, ``action``, ``header``) and keeps the
  default ``apply``: every parameter of the groups in ``config.groups`` (see groups.py) is
  coded, each report row names its group, and with calibration windows the report gives the
  output error of each group's coding and, for an SSM layer with a ``kernel`` whose parameters
  it coded, the relative error of that convolution kernel (``kernel_rel_err``). Hooks:
  ``encode_targets`` (GPTQ, which codes with the model's activations) and ``calibrate`` /
  ``pack_extra`` / ``unpack_extra`` (static activation ranges); or
- it writes its own ``apply`` (pruning, vector quantization, mixed precision): it lists the
  parameters with :func:`candidates`, calls :meth:`CodedPass.start`, then
  :meth:`CodedPass.commit` for each weight it compresses.

pack and unpack are common: unpack decodes every weight that has parts in the stored form
and loads the rest, and a plain state dict (no parts at all) loads as is, which ``chain``
relies on. The default ``apply`` codes a complex parameter as real/imaginary pairs
(``torch.view_as_real``), so the stored shape is the (..., 2) real view.

Every other tensor is stored in ``keep_dtype()`` (float32 by default: as is). With float16 the
default ``apply`` rounds each floating state-dict tensor it did not code to fp16 in place (a
complex one to complex32, integer and bool buffers stay as they are), so the evaluated model
is exactly the stored one; ``pack`` refuses a tensor that fp16 would change.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from seqcomp.compress.quant.common import KEPT, entry, run_calibration, summary
from seqcomp.compress.quant.groups import BASE_GROUPS, OTHER, kept_reason, named_groups

SHAPE_SUFFIX = ".shape"
_STATE_ATTR = "_seqcomp_parts"  # on the model: {state-dict key: {suffix: part}} from apply() / unpack()

Parts = dict[str, torch.Tensor]
KEEP_DTYPES = {"float32": torch.float32, "float16": torch.float16}  # how tensors left uncoded are stored


def kept_form(value: torch.Tensor, keep: torch.dtype) -> torch.Tensor:
    """``value`` as stored when no pass codes it: in ``keep`` if floating (its complex
    counterpart if complex); as is if integer/bool, or if ``keep`` is float32 (today's form)."""
    if keep == torch.float32 or not (value.is_floating_point() or value.is_complex()):
        return value
    return value.to(keep.to_complex() if value.is_complex() else keep)


@dataclass(frozen=True)
class Target:
    """A parameter selected for coding: full name (= state-dict key), owner, local name, group."""

    name: str
    module: nn.Module
    pname: str
    group: str

    @property
    def param(self) -> nn.Parameter:
        return self.module.get_parameter(self.pname)


def owner_names(targets: list[Target]) -> list[str]:
    """Names of the modules owning ``targets``, in order, without repeats."""
    return list(dict.fromkeys(t.name[: -len(t.pname)].rstrip(".") for t in targets))


def real_view(tensor: torch.Tensor) -> torch.Tensor:
    """A detached real view: (..., 2) real/imaginary pairs for a complex tensor."""
    tensor = tensor.detach()
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor


def write_back(param: nn.Parameter, real: torch.Tensor) -> None:
    """Copy a decoded real tensor into ``param`` (re-assembling complex values)."""
    with torch.no_grad():
        param.copy_(torch.view_as_complex(real.contiguous()) if param.is_complex() else real)


def relative_error(new: torch.Tensor, old: torch.Tensor) -> float:
    """||new - old|| / ||old||, rounded for the report."""
    return round(float((new - old).norm() / old.norm().clamp(min=1e-30)), 6)


def candidates(model: nn.Module, groups: Sequence[str]) -> Iterator[tuple[str, str, nn.Parameter, str, str | None]]:
    """(name, module type, parameter, group, reason it stays fp32 or None) for every parameter.

    For passes that compress whole matrices: a parameter is a candidate when its group (see
    groups.py) is selected and it is a real tensor of at least 2 dimensions. A 1-D tensor
    (bias, norm, skip term) is too small to be worth a codec, and a complex one would need
    its own treatment of the real/imaginary pairs.
    """
    for name, module, pname, param, group in named_groups(model):
        if group not in groups:
            reason: str | None = kept_reason(module, pname, group)
        elif param.dim() < 2:
            reason = "1-D parameter kept in fp32"
        elif param.is_complex():
            reason = "complex parameter kept in fp32"
        else:
            reason = None
        yield name, type(module).__name__, param, group, reason


def row(
    name: str, kind: str, param: nn.Parameter, group: str, action: str, reason: str | None = None
) -> dict[str, Any]:
    """Report row of one parameter, with its group."""
    return {**entry(name, kind, param.numel(), action, reason), "group": group}


def coded_parts(model: nn.Module) -> dict[str, Parts]:
    """{state-dict key: parts} of the weights a coded pass's apply() or unpack() coded in ``model``
    (empty if none), for a pass that tunes another's codes (pv_tune_sim)."""
    return dict(model.__dict__.get(_STATE_ATTR, {}))


class CodedPass:
    """Subclasses set ``kind`` and a ``Config`` with a ``groups`` field, and define
    ``part_suffixes`` and ``decode``; with the default ``apply`` also ``encode``, ``action``
    and ``header``."""

    kind: ClassVar[str]
    simulated: ClassVar[bool] = True
    optional_parts: ClassVar[tuple[str, ...]] = ()  # suffixes of parts only some weights have
    stage: ClassVar[str] = "compression"  # what apply() did to a weight, for pack's error message

    def __init__(self, config: Any):
        self.config = config

    def part_suffixes(self) -> tuple[str, ...]:
        """Suffixes of the parts every coded weight has (:data:`SHAPE_SUFFIX` excluded)."""
        raise NotImplementedError

    def decode(self, parts: Parts, shape: torch.Size) -> torch.Tensor:
        """The fp32 (real) weight of ``shape`` that ``parts`` describe."""
        raise NotImplementedError

    def encode(self, weight: torch.Tensor) -> Parts:
        raise NotImplementedError

    def action(self) -> str:
        raise NotImplementedError

    def keep_dtype(self) -> torch.dtype:
        """The dtype of the tensors this pass leaves uncoded, in the stored form and the model."""
        return torch.float32

    def header(self) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self, note: str, kernels: str = "fake-quant on fp32", **settings: Any) -> dict[str, Any]:
        """The head of a report: the pass, that it is simulated, its kernels, a note, its settings."""
        return {"pass": self.kind, "simulated": self.simulated, "kernels": kernels, "note": note, **settings}

    def encode_targets(
        self, model: nn.Module, targets: list[Target], calib: torch.Tensor | None
    ) -> dict[str, tuple[Parts, str]]:
        """{name: (parts, action)} for every target; by default each is coded alone, data-free."""
        return {t.name: (self.encode(real_view(t.param)), self.action()) for t in targets}

    def calibrate(self, model: nn.Module, targets: list[Target], calib: torch.Tensor | None) -> dict[str, Any]:
        """Runs after the weights are coded; returns extra report entries."""
        return {}

    def pack_extra(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Stored tensors besides the parameters (e.g. activation ranges)."""
        return {}

    def unpack_extra(self, skeleton: nn.Module, stored: dict[str, torch.Tensor]) -> set[str]:
        """Restore what ``pack_extra`` stored into ``skeleton``; returns the keys it used."""
        return set()

    def start(self, model: nn.Module) -> None:
        """Forget parts recorded by an earlier pass (a chain may run two coded passes)."""
        model.__dict__[_STATE_ATTR] = {}

    def commit(
        self, model: nn.Module, name: str, param: nn.Parameter, parts: Parts, original: torch.Tensor | None = None
    ) -> float:
        """Write the weight decoded from ``parts`` into ``param``; remember the parts for pack.

        Call :meth:`start` first. Returns the relative error of the decoded weight against
        ``original`` (the real view of ``param`` before coding; by default its current value).
        """
        real = real_view(param).float() if original is None else original
        decoded = self.decode(parts, real.shape)
        error = relative_error(decoded, real)  # before the write: ``real`` may be a view of ``param``
        write_back(param, decoded)
        model.__dict__[_STATE_ATTR][name] = parts
        return error

    def apply(self, model: nn.Module, calib: torch.Tensor | None) -> tuple[nn.Module, dict[str, Any]]:
        """Code the parameters of the selected groups in place; one report row per parameter."""
        everything = list(named_groups(model))
        targets = [
            Target(name, module, pname, group)
            for name, module, pname, _, group in everything
            if group in self.config.groups
        ]
        originals = {t.name: real_view(t.param).float().clone() for t in targets}
        coded = self.encode_targets(model, targets, calib)
        self.start(model)
        done = {}
        for t in targets:
            parts, action = coded[t.name]
            done[t.name] = action, self.commit(model, t.name, t.param, parts, originals[t.name])
        stored_as = self.keep_rest(model, set(done))
        layers = []
        for name, module, pname, param, group in everything:
            kind = type(module).__name__
            if name in done:
                action, error = done[name]
                layers.append({**row(name, kind, param, group, action), "weight_rel_err": error})
            else:
                layers.append({**row(name, kind, param, group, KEPT, kept_reason(module, pname, group)), **stored_as})
        report = {**self.header(), "groups": list(self.config.groups), **summary(layers)}
        if not targets:
            report["skipped"] = f"no parameter of groups {list(self.config.groups)} in this model; it stays fp32"
        report["group_summary"] = _group_summary(layers)
        if calib is not None and targets:
            errors = _group_sensitivity(model, targets, originals, calib)
            report["output_rel_err"] = round(errors.pop("all"), 6)
            for group, err in errors.items():
                report["group_summary"][group]["output_rel_err"] = round(err, 6)
            report["sensitivity"] = SENSITIVITY
            kernels = kernel_errors(model, targets, originals, calib.shape[1])
            if kernels:
                report["kernel_rel_err"] = kernels
        extra = self.calibrate(model, targets, calib)
        return model, {**report, **extra, "layers": layers}

    def keep_rest(self, model: nn.Module, coded: set[str]) -> dict[str, str]:
        """Round every state-dict tensor not in ``coded`` to ``keep_dtype()`` in place, so the
        evaluated model is exactly the stored one; the report entry saying so (none for fp32)."""
        keep = self.keep_dtype()
        with torch.no_grad():
            for key, value in model.state_dict().items():  # detached views: copy_ writes the model
                if key not in coded:
                    value.copy_(kept_form(value, keep))
        return {} if keep == torch.float32 else {"stored_dtype": str(keep).removeprefix("torch.")}

    def pack(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Parts and shape per coded weight, every other state-dict tensor as is, plus extras."""
        state: dict[str, Parts] | None = model.__dict__.get(_STATE_ATTR)
        if state is None:
            raise ValueError(f"{self.kind}.pack needs a model returned by apply() or unpack()")
        stored: dict[str, torch.Tensor] = {}
        for key, value in model.state_dict().items():
            if key not in state:
                stored[key] = kept_form(value.detach(), self.keep_dtype()).clone()
                if stored[key].dtype != value.dtype and not torch.equal(stored[key].to(value.dtype), value):
                    raise ValueError(f"{key} is not exactly {self.keep_dtype()}: apply() rounds what it keeps")
                continue
            real = real_view(value)
            if not torch.equal(self.decode(state[key], real.shape), real):
                raise ValueError(f"{key} changed after {self.stage}; its stored parts no longer describe it")
            stored.update({key + suffix: part.clone() for suffix, part in state[key].items()})
            stored[key + SHAPE_SUFFIX] = torch.tensor(real.shape, dtype=torch.int64)
        return {**stored, **self.pack_extra(model)}

    def unpack(self, skeleton: nn.Module, stored: dict[str, torch.Tensor]) -> nn.Module:
        """Decode every weight with parts in ``stored``; load the other tensors as they are."""
        required = (*self.part_suffixes(), SHAPE_SUFFIX)
        state: dict[str, Parts] = {}
        values: dict[str, torch.Tensor] = {}
        for key, value in skeleton.state_dict().items():
            present = [s for s in (*required, *self.optional_parts) if key + s in stored]
            if not present:
                values[key] = stored.get(key, value)  # a missing key is caught by the check below
                continue
            if not set(required) <= set(present):
                raise ValueError(f"{key}: stored parts {present}, expected all of {list(required)}")
            shape, real = torch.Size(stored[key + SHAPE_SUFFIX].tolist()), real_view(value)
            if shape != real.shape:
                raise ValueError(f"{key}: stored shape {tuple(shape)} != model's {tuple(real.shape)}")
            state[key] = {s: stored[key + s] for s in present if s != SHAPE_SUFFIX}
            decoded = self.decode(state[key], shape)
            values[key] = torch.view_as_complex(decoded.contiguous()) if value.is_complex() else decoded
        expected = set(values) - set(state)
        expected |= {key + suffix for key, parts in state.items() for suffix in (*parts, SHAPE_SUFFIX)}
        expected |= self.unpack_extra(skeleton, stored)
        if expected != set(stored):
            raise ValueError(
                f"stored form does not match the model: missing {sorted(expected - set(stored))}, "
                f"unexpected {sorted(set(stored) - expected)}"
            )
        skeleton.load_state_dict(values)
        skeleton.__dict__[_STATE_ATTR] = state
        return skeleton.eval()


SENSITIVITY = (
    "group_summary.<group>.output_rel_err: ||f_g(x) - f(x)|| / ||f(x)|| over the calibration windows, "
    "f_g with only that group's coded weights; output_rel_err: with all of them; activations not quantized"
)


def _outputs(model: nn.Module, calib: torch.Tensor) -> torch.Tensor:
    outs = run_calibration(model, calib)
    return torch.cat([o if isinstance(o, torch.Tensor) else o[0] for o in outs]).float()


def _group_sensitivity(
    model: nn.Module, targets: list[Target], originals: dict[str, torch.Tensor], calib: torch.Tensor
) -> dict[str, float]:
    """Output error on ``calib`` with one group coded at a time (and with all), so a report shows
    which part of a model (e.g. an SSM's recurrent parameters) its accuracy loss comes from."""
    coded = {t.name: real_view(t.param).clone() for t in targets}

    def only(group: str | None) -> torch.Tensor:
        for t in targets:
            write_back(t.param, coded[t.name] if group in (t.group, "all") else originals[t.name])
        return _outputs(model, calib)

    reference = only(None)
    norm = reference.norm().clamp(min=1e-30)
    errors = {g: float((only(g) - reference).norm() / norm) for g in dict.fromkeys(t.group for t in targets)}
    errors["all"] = float((only("all") - reference).norm() / norm)  # leaves every coded weight in place
    return errors


def kernel_errors(
    model: nn.Module, targets: list[Target], originals: dict[str, torch.Tensor], length: int
) -> dict[str, float]:
    """{SSM layer: ||K_coded - K|| / ||K||} of the length-``length`` convolution kernel of every
    layer with a ``kernel(length)`` method (S4, S4D, SpaceTime's companion SSM) that owns a coded
    target. The kernel is the whole linear map of such a layer (besides its skip term), so this
    is the error its coded parameters make, free of what the layers around it do; ``model``
    keeps its coded weights."""
    owners = {
        t.name[: -len(t.pname)].rstrip("."): t.module for t in targets if callable(getattr(t.module, "kernel", None))
    }
    if not owners:
        return {}
    mine = [t for t in targets if t.module in owners.values()]
    coded = {t.name: real_view(t.param).clone() for t in mine}
    with torch.no_grad():
        after = {name: module.kernel(length).double() for name, module in owners.items()}
        for t in mine:
            write_back(t.param, originals[t.name])
        before = {name: module.kernel(length).double() for name, module in owners.items()}
        for t in mine:
            write_back(t.param, coded[t.name])
    return {name: relative_error(after[name], before[name]) for name in owners}


def _group_summary(layers: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per group: parameter count, elements, and elements coded (so each group's share is visible).
    The MoE groups appear only for a model that has them."""
    out = {g: {"params": 0, "numel": 0, "quantized_numel": 0} for g in (*BASE_GROUPS, OTHER)}
    for r in layers:
        g = out.setdefault(r["group"], {"params": 0, "numel": 0, "quantized_numel": 0})
        g["params"] += 1
        g["numel"] += r["numel"]
        g["quantized_numel"] += r["numel"] if r["action"] != KEPT else 0
    return out
