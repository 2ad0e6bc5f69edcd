"""The fp32 baseline pass: no compression, so every other pass is compared on equal terms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from seqcomp.compress.quant.common import KEPT, entry, own_numel, param_modules, summary


class Identity:
    """Returns the model unchanged; its stored form is the plain fp32 state dict."""

    @dataclass(frozen=True)
    class Config:
        """No options."""

    kind: ClassVar[str] = "fp32"
    simulated: ClassVar[bool] = False

    def __init__(self, config: Config):
        self.config = config

    def apply(self, model: nn.Module, calib: torch.Tensor | None) -> tuple[nn.Module, dict[str, Any]]:
        """Report every parameterised module as kept fp32; ``calib`` is unused."""
        layers = [
            entry(name, type(module).__name__, own_numel(module), KEPT, "baseline")
            for name, module in param_modules(model)
        ]
        report = {"pass": self.kind, "simulated": self.simulated, "kernels": "fp32"}
        return model, {**report, **summary(layers), "layers": layers}

    def pack(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The state dict, with tensors cloned so that none is a view of a larger storage."""
        return {key: value.detach().clone() for key, value in model.state_dict().items()}

    def unpack(self, skeleton: nn.Module, stored: dict[str, torch.Tensor]) -> nn.Module:
        """Load the stored state dict (strictly) into the skeleton."""
        skeleton.load_state_dict(stored)
        return skeleton.eval()
