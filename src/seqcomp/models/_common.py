"""Small helpers shared by the model files: config range checks and head layers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from seqcomp.registry import check


def check_positive(cfg: Any, *keys: str) -> None:
    """Every named field of ``cfg`` must be a positive int (sizes, counts, lengths)."""
    for key in keys:
        value = getattr(cfg, key)
        check(isinstance(value, int) and not isinstance(value, bool) and value > 0, key, f"must be a positive integer, got {value!r}")


def check_dropout(cfg: Any, key: str = "dropout") -> None:
    value = getattr(cfg, key)
    check(isinstance(value, (int, float)) and 0.0 <= value < 1.0, key, f"must be in [0, 1), got {value!r}")


def check_choice(value: Any, key: str, choices: tuple[str, ...]) -> None:
    check(value in choices, key, f"unknown value {value!r}; valid: {', '.join(choices)}")


def as_complex(p: Tensor) -> Tensor:
    """A real (..., 2) parameter as a complex tensor (...): SSM layers store complex values as
    real/imaginary pairs because quantization tooling drops imaginary parts of complex tensors."""
    return torch.complex(p[..., 0], p[..., 1])


class TemporalHead(nn.Module):
    """(B, L, D) -> (B, H, C): a linear map over time (L -> H), then over features (D -> C).

    Used by the sequence models (S4D, Mamba) instead of flattening, so the head stays small
    (L*H + D*C weights) and both maps are nn.Linear (int8 dynamic quantization applies).
    """

    def __init__(self, lookback: int, horizon: int, d_model: int, channels: int):
        super().__init__()
        self.time = nn.Linear(lookback, horizon)
        self.out = nn.Linear(d_model, channels)

    def forward(self, h: Tensor) -> Tensor:
        h = self.time(h.transpose(1, 2)).transpose(1, 2)  # (B, H, D)
        return self.out(h)  # (B, H, C)


class OptimTagged(nn.Module):
    """A module whose parameters carry per-parameter optimizer settings in ``p._optim``.

    ``tag_optim`` records the settings on the module too, because ``copy.deepcopy`` (used by
    the compression stage) and pickling rebuild parameters without their Python attributes;
    ``__setstate__`` puts them back on the copies.
    """

    def tag_optim(self, settings: dict[str, float], *names: str) -> None:
        spec = dict(self.__dict__.get("_optim_spec", {}))
        spec.update({name: dict(settings) for name in names})
        self._optim_spec = spec
        self._attach_optim()

    def _attach_optim(self) -> None:
        for name, settings in self.__dict__.get("_optim_spec", {}).items():
            getattr(self, name)._optim = dict(settings)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._attach_optim()


def fft_conv(u: Tensor, kernel: Callable[[int], Tensor], skip: Tensor) -> Tensor:
    """The layer map of a convolutional SSM: y = K * u + skip * u along time, per feature.

    ``u`` is (B, L, H); ``kernel(L)`` returns K (H, L); ``skip`` is (H,). Runs in fp32 with
    autocast off, kernel included: bf16 FFTs and exponentials lose the kernel's tail.
    """
    length = u.shape[1]
    with torch.autocast(device_type=u.device.type, enabled=False):
        uf = u.float().transpose(1, 2)  # (B, H, L)
        k = kernel(length)  # (H, L)
        # Zero-padding to 2L turns the FFT's circular convolution into a causal linear one.
        y = torch.fft.irfft(torch.fft.rfft(uf, n=2 * length) * torch.fft.rfft(k, n=2 * length), n=2 * length)
        y = y[..., :length] + skip.float()[:, None] * uf  # (B, H, L)
    return y.transpose(1, 2).to(u.dtype)  # (B, L, H)


class SSMStack(nn.Module):
    """The forecaster around a convolutional SSM layer (S4D, the companion SSM): a linear
    encoder C -> d_model, ``n_layers`` blocks of SSM -> GELU -> Linear + GLU with a post-norm
    residual (the S4 example model), and a :class:`TemporalHead`.

    ``make_layer()`` builds one SSM layer (B, L, D) -> (B, L, D) that also has
    ``forward_recurrent``, so the whole forecast can be run step by step too.
    """

    def __init__(self, shape: Any, d_model: int, n_layers: int, dropout: float, make_layer: Callable[[], nn.Module]):
        super().__init__()
        self.encoder = nn.Linear(shape.channels, d_model)
        self.layers = nn.ModuleList(make_layer() for _ in range(n_layers))
        self.mix = nn.ModuleList(nn.Linear(d_model, 2 * d_model) for _ in range(n_layers))  # then GLU
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.drop = nn.Dropout(dropout)
        self.head = TemporalHead(shape.lookback, shape.horizon, d_model, shape.channels)

    def _run(self, x: Tensor, recurrent: bool) -> Tensor:
        h = self.encoder(x)  # (B, L, D)
        for ssm, mix, norm in zip(self.layers, self.mix, self.norms):
            z = ssm.forward_recurrent(h) if recurrent else ssm(h)  # (B, L, D)
            z = self.drop(F.gelu(z))
            z = self.drop(F.glu(mix(z), dim=-1))  # (B, L, D)
            h = norm(h + z)  # post-norm residual
        return self.head(h)  # (B, H, C)

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x, recurrent=False)

    def forward_recurrent(self, x: Tensor) -> Tensor:
        """Same forecast with every SSM layer run as a step-by-step recurrence."""
        return self._run(x, recurrent=True)
