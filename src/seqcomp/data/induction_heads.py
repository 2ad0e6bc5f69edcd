"""Induction heads (Gu & Dao 2023, "Mamba", section 4.1.2; set up as in Fu et al. 2023, "Hungry
Hungry Hippos", section 3.1): recall the token that followed a special token earlier on.

A sample is ``length`` random tokens from 0..vocab-2. The special token (vocab-1) appears
exactly twice: once at a random position i <= length-3, and as the last token. The target is
the token at i+1, the one that followed the special token the first time ("... s v ... s" ->
v): associative recall that needs content-based look-up, not a fixed lag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqcomp.data.tokens import TokenTask, TokenTaskConfig
from seqcomp.registry import check


@dataclass
class InductionHeadsConfig(TokenTaskConfig):
    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.vocab >= 3, "vocab", f"must be >= 3 (the special token and at least 2 others), got {self.vocab}")
        check(self.length >= 3, "length",
              f"must be >= 3 (special token, the token after it, the final special token), got {self.length}")


class InductionHeads(TokenTask):
    Config = InductionHeadsConfig

    @property
    def special(self) -> int:
        return self.cfg.vocab - 1

    @property
    def targets(self) -> int:
        return 1

    @property
    def chance(self) -> float:
        return 1.0 / (self.cfg.vocab - 1)

    def generate(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        length = self.cfg.length
        x = rng.integers(0, self.special, size=(n, length))  # (n, L): every ordinary token
        first = rng.integers(0, length - 2, size=n)  # (n,): the first special token's position
        rows = np.arange(n)
        x[rows, first] = self.special
        x[:, -1] = self.special
        return x, x[rows, first + 1][:, None]  # (n, 1): the token after the first special token
