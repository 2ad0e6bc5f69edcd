"""AR(p) processes with a known optimal forecast error, so a model's MSE can be read against it.

SpaceTime (Zhang et al. 2023, "Effectively Modeling Time Series with Simple Discrete State
Spaces", ICLR) fits AR(p) data to test whether a model class can represent an autoregressive
process at all. Here each channel is an independent stationary AR(p):

    x_t = phi_1 x_{t-1} + ... + phi_p x_{t-p} + eps_t,   eps_t ~ N(0, noise^2)

The best h-step forecast from the past (any lookback >= p: the process is Markov of order p)
has error variance noise^2 * sum_{j<h} psi_j^2, with psi the impulse response (psi_0 = 1,
psi_j = sum_i phi_i psi_{j-i}). ``optimal_mse_per_step`` turns that into the pipeline's scaled
units (each channel divided by its train-split std), so evaluation can report MSE / optimal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seqcomp.data._common import hourly_frame, simulate
from seqcomp.registry import check

if TYPE_CHECKING:
    import polars as pl

# Burn-in length: until the slowest mode has decayed to this fraction, so the kept series
# starts in the stationary distribution rather than at zero.
BURN_IN_DECAY = 1e-8


def roots(coefficients: list[float] | np.ndarray) -> np.ndarray:
    """Roots of z^p - phi_1 z^(p-1) - ... - phi_p: the process is stationary iff all |root| < 1."""
    return np.roots(np.concatenate([[1.0], -np.asarray(coefficients, dtype=np.float64)]))


def impulse_response(coefficients: list[float] | np.ndarray, steps: int) -> np.ndarray:
    """psi_0 .. psi_{steps-1}: the response of the process to one unit innovation."""
    unit = np.zeros(steps)
    unit[0] = 1.0
    return simulate(unit, coefficients)


def random_stable(rng: np.random.Generator, order: int, max_root: float) -> np.ndarray:
    """phi of a random stationary AR(order): conjugate root pairs (and one real root if the
    order is odd) with modulus in [max_root / 2, max_root], so every mode decays."""
    pairs = []
    for _ in range(order // 2):
        r, angle = rng.uniform(max_root / 2, max_root), rng.uniform(0.0, math.pi)
        pairs += [r * np.exp(1j * angle), r * np.exp(-1j * angle)]
    if order % 2:
        pairs.append(rng.uniform(-max_root, max_root))
    return -np.poly(pairs)[1:].real


@dataclass
class ARConfig:
    n_steps: int = 4000
    channels: int = 1
    order: int | None = None  # p; None = len(coefficients), or 4 for random coefficients
    coefficients: list[float] | None = None  # phi_1..phi_p; None = random stable ones (seeded)
    max_root: float = 0.95  # random coefficients: largest root modulus (the slowest mode)
    noise: float = 1.0  # innovation std
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("n_steps", "channels"):
            value = getattr(self, key)
            check(isinstance(value, int) and value > 0, key, f"must be a positive integer, got {value!r}")
        check(self.noise > 0, "noise", f"must be > 0, got {self.noise}")
        check(0 < self.max_root < 1, "max_root", f"must lie in (0, 1) for a stationary process, got {self.max_root}")
        if self.coefficients is None:
            self.order = 4 if self.order is None else self.order
        else:
            check(len(self.coefficients) > 0, "coefficients", "must list phi_1..phi_p (or be null for random ones)")
            check(self.order in (None, len(self.coefficients)), "order",
                  f"is {self.order} but {len(self.coefficients)} coefficients are given")
            self.order = len(self.coefficients)
            modulus = float(np.abs(roots(self.coefficients)).max())
            check(modulus < 1, "coefficients",
                  f"{self.coefficients} are not stationary (a root has modulus {modulus:.4g} >= 1)")
        check(isinstance(self.order, int) and self.order > 0, "order",
              f"must be a positive integer, got {self.order!r}")


class ARSource:
    Config = ARConfig

    def __init__(self, cfg: ARConfig, base_dir: Path | None = None, where: str = "dataset"):
        self.cfg = cfg
        # Separate streams for coefficients and noise: giving coefficients explicitly does not
        # change the noise drawn for the same seed.
        if cfg.coefficients is None:
            self.coefficients = random_stable(np.random.default_rng([cfg.seed, 0]), cfg.order, cfg.max_root)
        else:
            self.coefficients = np.asarray(cfg.coefficients, dtype=np.float64)

    def n_rows(self) -> int:
        return self.cfg.n_steps

    def identity(self) -> str:
        return f"ar:{self.cfg}"

    def values(self) -> np.ndarray:
        """(T, C) float32, every channel an independent draw of the same process."""
        c = self.cfg
        slowest = float(np.abs(roots(self.coefficients)).max())
        burn = math.ceil(math.log(BURN_IN_DECAY) / math.log(slowest)) if slowest > 0 else c.order
        eps = np.random.default_rng([c.seed, 1]).normal(0.0, c.noise, size=(burn + c.n_steps, c.channels))
        return simulate(eps, self.coefficients)[burn:].astype(np.float32)

    def optimal_mse_per_step(self, std: np.ndarray, steps: int) -> list[float]:
        """Expected MSE of the true process's optimal forecast at horizon steps 1..``steps``,
        in the pipeline's scaled units (channel c divided by ``std[c]``), averaged over channels."""
        psi = impulse_response(self.coefficients, steps)
        raw = self.cfg.noise**2 * np.cumsum(psi**2)  # (steps,)
        return (raw * np.mean(1.0 / np.asarray(std, dtype=np.float64) ** 2)).tolist()

    def load(self) -> tuple[pl.DataFrame, dict]:
        info = {"ar": {"coefficients": self.coefficients.tolist(), "noise": self.cfg.noise,
                       "max_root_modulus": float(np.abs(roots(self.coefficients)).max())}}
        return hourly_frame(self.values()), info
