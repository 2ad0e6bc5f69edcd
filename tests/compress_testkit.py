"""Shared by the tests of the compression passes: tiny models and a checked disk round trip.

``registry_model`` builds every registered forecaster at a tiny size (untrained weights are
enough to check structure, sizes and round trips); ``round_trip`` runs a pass, writes and
reads its stored form with torch.save/load(weights_only=True), rebuilds the model from a
skeleton with other weights and checks the outputs are identical.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from seqcomp.compress import compress, load_compressed, stored_size
from seqcomp.models import MODELS, SeriesShape, build_model

SHAPE = SeriesShape(lookback=24, horizon=8, channels=3)
TINY = {
    "naive": {},
    "linear": {},
    "dlinear": {"kernel_size": 5},
    "lstm": {"hidden": 8},
    "transformer": {"d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 16},
    "patchtst": {"patch_len": 8, "stride": 4, "d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 16},
    "tsmixer": {"n_blocks": 1, "ff_dim": 8},
    "s4d": {"d_model": 8, "d_state": 8, "n_layers": 1},
    "s4": {"d_model": 8, "d_state": 8, "n_layers": 1},
    "mamba": {"d_model": 8, "d_state": 4, "n_layers": 1},
    "smamba": {"d_model": 8, "d_ff": 16, "n_layers": 1},
    "spacetime": {"d_model": 8, "d_state": 8, "n_layers": 1},
    "ttm": {"patch_len": 4, "d_model": 8, "levels": 2, "n_layers": 1, "decoder_d_model": 8, "decoder_layers": 1},
    "moe_transformer": {"d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 16, "n_experts": 4, "top_k": 2},
}
assert set(TINY) == set(MODELS.names()), "a new model needs a tiny config here"


def registry_model(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(kind, TINY[kind], SHAPE).eval()


def windows(n: int, seed: int = 0) -> torch.Tensor:
    """(n, L, C) random input windows for the tiny models."""
    return torch.randn(n, SHAPE.lookback, SHAPE.channels, generator=torch.Generator().manual_seed(seed))


def through_disk(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    buffer = io.BytesIO()
    torch.save(stored, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def round_trip(
    kind: str, params: dict[str, Any], make: Callable[[int], nn.Module], x: torch.Tensor, calib: torch.Tensor | None = None,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, Any]]:
    """Compress ``make(0)``, rebuild from ``make(1)`` and the stored form; outputs must match exactly."""
    compressed, stored, report = compress(kind, params, make(0), calib, validation=validation)
    rebuilt = load_compressed(kind, params, make(1), through_disk(stored))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), compressed(x), rtol=0, atol=0)
    assert json.loads(json.dumps(report)) == report
    size = stored_size(stored)
    assert size["bytes"] == sum(size[k] for k in ("weights_bytes", "scales_bytes", "fp32_bytes", "meta_bytes"))
    return compressed, stored, report


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def output_mse(model: nn.Module, reference: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(x) - reference(x)) ** 2).mean())


class TwoBranch(nn.Module):
    """Layers that differ in sensitivity: a sensitive path and a big side branch whose output is
    damped 20x (the mixed-precision and allocator tests' model)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp, self.head, self.side = nn.Linear(16, 64), nn.Linear(64, 8), nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 16) -> (N, 8)
        h = torch.tanh(self.inp(x))
        return self.head(h) + 0.05 * self.side(h).view(-1, 8, 8).sum(-1)
