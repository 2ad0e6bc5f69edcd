"""Dynamic int8 quantization with torch.ao: the one pass here that runs real int8 kernels.

Weights of nn.Linear / nn.LSTM become qint8 (per-tensor symmetric, MinMax); activations are
quantized to quint8 on the fly at every call, so no calibration data is needed. On x86 CPUs
the matmuls run in fbgemm's int8 kernels. Every other layer (convolutions, norms, SSM
kernels, FFT convolutions, attention projections held as raw parameters) has no dynamic
int8 kernel on CPU and stays fp32; the report says so per layer, and counts only modules
that torch.ao actually swapped.

``torch.ao.quantization`` is deprecated in torch 2.13 but still present; its deprecation
warnings are silenced around our calls only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.ao.nn.quantized.dynamic as nnqd
from torch import nn
from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from seqcomp.compress.quant.common import KEPT, entry, is_recurrent, own_numel, param_modules, summary
from seqcomp.registry import check

_LAYERS = {"linear": nn.Linear, "lstm": nn.LSTM}
_QCONFIGS = {"qint8": default_dynamic_qconfig}
_QUANTIZED = (nnqd.Linear, nnqd.LSTM)
KERNELS = "int8 dynamic (torch.ao, fbgemm/x86)"


@contextmanager
def _quiet_ao_deprecation() -> Iterator[None]:
    """Silence torch.ao's deprecation notices (and only those) for the enclosed calls."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", message=r"torch\.quantize_per_tensor, .* are deprecated", category=UserWarning
        )
        yield


def _fp32_reason(module: nn.Module) -> str:
    """Why a module that owns parameters is not a candidate for dynamic int8."""
    if any(is_recurrent(p) for p in module.parameters(recurse=False)):
        return "SSM recurrent parameter kept in fp32 (no int8 kernel on CPU)"
    if isinstance(module, NonDynamicallyQuantizableLinear):
        return (
            "MultiheadAttention out_proj (NonDynamicallyQuantizableLinear): the attention "
            "kernel reads its weight directly, so torch.ao does not swap it; kept fp32"
        )
    if isinstance(module, nn.MultiheadAttention):
        return "MultiheadAttention in_proj is a raw parameter: no dynamic int8 path; kept fp32"
    if type(module) in _LAYERS.values():
        return "layer type not selected by the 'layers' option; kept fp32"
    return f"no int8 kernel on CPU for {type(module).__name__}; kept fp32"


def _module_tensors(name: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of a dynamic quantized module, keyed like the fp32 state dict.

    Its own state dict cannot be stored: a dynamic LSTM's holds TorchScript objects that
    ``torch.load(weights_only=True)`` refuses. The qint8 weights and fp32 biases they wrap
    are plain tensors, and the modules' ``set_weight_bias`` rebuilds them.
    """
    if isinstance(module, nnqd.LSTM):
        tensors = {**module.get_weight(), **module.get_bias()}
    else:
        tensors = {"weight": module.weight(), "bias": module.bias()}
    return {f"{name}.{key}": t.detach().clone() for key, t in tensors.items() if t is not None}


def _restore(name: str, module: nn.Module, stored: dict[str, torch.Tensor]) -> None:
    """Put stored qint8 weights and biases into a freshly converted dynamic module."""
    prefix = name + "."
    local = {key[len(prefix):]: t for key, t in stored.items() if key.startswith(prefix)}
    if isinstance(module, nnqd.LSTM):
        module.set_weight_bias(local)
    else:
        module.set_weight_bias(local["weight"], local.get("bias"))


def _no_fast_path(module: nn.Module, args: tuple[Any, ...]) -> None:
    """A no-op forward pre-hook: its presence turns off TransformerEncoderLayer's fast path."""


def _keep_encoder_layers_runnable(model: nn.Module) -> list[str]:
    """Send encoder layers holding int8 Linears down the regular (module-calling) path.

    In eval mode nn.TransformerEncoderLayer's fused fast path reads ``linear1.weight.device``,
    but a dynamic int8 Linear's ``weight`` is a method, so the forward pass would crash. torch
    skips the fast path for a layer with hooks attached; the regular path calls the
    quantized Linears as modules. Returns the names of the layers so treated.
    """
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.TransformerEncoderLayer) and any(
            isinstance(child, _QUANTIZED) for child in module.children()
        ):
            module.register_forward_pre_hook(_no_fast_path)
            names.append(name)
    return names


def _under(key: str, names: list[str]) -> bool:
    return any(key.startswith(name + ".") for name in names)


class Int8Dynamic:
    """nn.Linear / nn.LSTM -> torch.ao dynamic int8 modules; everything else fp32."""

    @dataclass(frozen=True)
    class Config:
        dtype: str = "qint8"
        layers: list[str] = field(default_factory=lambda: ["linear", "lstm"])

        def __post_init__(self) -> None:
            check(
                self.dtype in _QCONFIGS, "dtype", f"must be one of {sorted(_QCONFIGS)}, got {self.dtype!r}"
            )
            check(
                isinstance(self.layers, (list, tuple))
                and bool(self.layers)
                and set(self.layers) <= set(_LAYERS),
                "layers",
                f"must be a non-empty list drawn from {sorted(_LAYERS)}, got {self.layers!r}",
            )

    kind: ClassVar[str] = "int8_dynamic"
    simulated: ClassVar[bool] = False

    def __init__(self, config: Config):
        self.config = config

    def _why_not(self, name: str, module: nn.Module) -> str | None:
        """None when ``module`` will be quantized, else the reason it stays fp32."""
        selected = {_LAYERS[layer] for layer in self.config.layers}
        recurrent = any(is_recurrent(p) for p in module.parameters(recurse=False))
        if recurrent or type(module) not in selected:  # exact type: torch.ao swaps exact types only
            return _fp32_reason(module)
        if name == "":
            return "root module: quantize_dynamic swaps submodules only; kept fp32"
        if isinstance(module, nn.LSTM) and (not module.bias or module.proj_size):
            return "dynamic int8 LSTM needs bias=True and proj_size=0; kept fp32"
        return None

    def _convert(self, model: nn.Module) -> tuple[list[str], list[str]]:
        """Quantize the eligible modules in place.

        Returns the names torch.ao really swapped, and the encoder layers whose fused fast
        path had to be turned off for them.
        """
        names = [name for name, module in param_modules(model) if self._why_not(name, module) is None]
        qconfig = _QCONFIGS[self.config.dtype]
        with _quiet_ao_deprecation():
            quantize_dynamic(model, {name: qconfig for name in names}, inplace=True)
        swapped = [name for name in names if isinstance(model.get_submodule(name), _QUANTIZED)]
        return swapped, _keep_encoder_layers_runnable(model)

    def apply(self, model: nn.Module, calib: torch.Tensor | None) -> tuple[nn.Module, dict[str, Any]]:
        """Convert ``model`` in place and report, per layer, what torch.ao actually did.

        ``calib`` is unused: activation ranges are computed at run time.
        """
        before = [
            (name, type(m).__name__, own_numel(m), self._why_not(name, m))
            for name, m in param_modules(model)
        ]
        swapped, slow_layers = self._convert(model)
        converted = set(swapped)
        layers = [
            entry(name, kind, numel, "int8 dynamic")
            if name in converted
            else entry(name, kind, numel, KEPT, reason or "selected, but torch.ao did not convert it")
            for name, kind, numel, reason in before
        ]
        report = {
            "pass": self.kind,
            "simulated": self.simulated,
            "kernels": KERNELS if converted else "fp32 (no layer quantized)",
            "engine": torch.backends.quantized.engine,
            "weights": f"{self.config.dtype}, per-tensor symmetric (min/max, zero point 0)",
            "activations": "quint8 per-tensor, range computed from each input at run time",
            "fast_path_disabled": slow_layers,  # see _keep_encoder_layers_runnable
        }
        return model, {**report, **summary(layers), "layers": layers}

    def pack(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """qint8 weights + fp32 biases of swapped modules, and the fp32 state of the rest."""
        quantized = {name: m for name, m in model.named_modules() if isinstance(m, _QUANTIZED)}
        stored: dict[str, torch.Tensor] = {}
        for name, module in quantized.items():
            stored.update(_module_tensors(name, module))
        for key, value in model.state_dict().items():
            if not _under(key, list(quantized)):
                stored[key] = value.detach().clone()
        return stored

    def unpack(self, skeleton: nn.Module, stored: dict[str, torch.Tensor]) -> nn.Module:
        """Convert the skeleton the same way, then load the stored tensors into it."""
        converted, _ = self._convert(skeleton)
        state = skeleton.state_dict()  # holds the skeleton's own packed params for swapped modules
        fp32_keys = [key for key in state if not _under(key, converted)]
        expected = set(fp32_keys)
        for name in converted:
            expected |= set(_module_tensors(name, skeleton.get_submodule(name)))
        if expected != set(stored):
            raise ValueError(
                f"stored form does not match the model: missing {sorted(expected - set(stored))}, "
                f"unexpected {sorted(set(stored) - expected)}"
            )
        state.update({key: stored[key] for key in fp32_keys})
        skeleton.load_state_dict(state)
        for name in converted:
            _restore(name, skeleton.get_submodule(name), stored)
        return skeleton.eval()
