"""Deterministic synthetic multivariate series, so the default config needs no download.

Each channel is a sum of seasonal sines (random phase and amplitude per channel), a linear
trend, and AR(1) noise; channels share a common latent AR factor so cross-channel models have
something to exploit. Same seed, same series, on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seqcomp.data._common import hourly_frame, simulate
from seqcomp.registry import check

if TYPE_CHECKING:
    import polars as pl


@dataclass
class SyntheticConfig:
    n_steps: int = 4000
    channels: int = 4
    seed: int = 0
    periods: list[int] = field(default_factory=lambda: [24, 168])  # hourly data: day and week
    trend: float = 0.0005  # per step
    ar: float = 0.8  # AR(1) coefficient of the noise
    noise: float = 0.3  # innovation std of the noise
    common: float = 0.5  # weight of the shared latent factor

    def __post_init__(self) -> None:
        check(self.n_steps > 0, "n_steps", f"must be positive, got {self.n_steps}")
        check(self.channels > 0, "channels", f"must be positive, got {self.channels}")
        check(all(p > 1 for p in self.periods), "periods", f"must all be > 1, got {self.periods}")
        check(-1 < self.ar < 1, "ar", f"must lie in (-1, 1) for a stationary AR(1), got {self.ar}")
        check(self.noise >= 0, "noise", f"must be >= 0, got {self.noise}")


def _ar1(rng: np.random.Generator, n: int, coef: float, std: float, width: int) -> np.ndarray:
    return simulate(rng.normal(0.0, std, size=(n, width)), [coef])  # starts at eps_0: no burn-in


class SyntheticSource:
    Config = SyntheticConfig

    def __init__(self, cfg: SyntheticConfig, base_dir: Path | None = None, where: str = "dataset"):
        self.cfg = cfg

    def n_rows(self) -> int:
        return self.cfg.n_steps

    def identity(self) -> str:
        """What the data depends on (logged as the dataset's provenance)."""
        return f"synthetic:{self.cfg}"

    def values(self) -> np.ndarray:
        """The generated series, (T, C) float32."""
        c = self.cfg
        rng = np.random.default_rng(c.seed)
        t = np.arange(c.n_steps, dtype=np.float64)[:, None]  # (T, 1)
        values = np.zeros((c.n_steps, c.channels))  # (T, C)
        for period in c.periods:
            amp = rng.uniform(0.5, 1.5, size=c.channels)
            phase = rng.uniform(0, 2 * np.pi, size=c.channels)
            values += amp * np.sin(2 * np.pi * t / period + phase)
        values += c.trend * t * rng.uniform(-1, 1, size=c.channels)
        values += _ar1(rng, c.n_steps, c.ar, c.noise, c.channels)
        values += c.common * _ar1(rng, c.n_steps, c.ar, c.noise, 1)
        return values.astype(np.float32)

    def load(self) -> tuple[pl.DataFrame, dict]:
        return hourly_frame(self.values()), {"filled_values": 0}
