"""Selective copying (Gu & Dao 2023, "Mamba", section 4.1.1; the variable-spacing copying task
of state-spaces/s4): remember K data tokens scattered among noise and emit them in order.

A sample's input has ``length`` tokens: a region of ``length - n_tokens`` tokens holding the
K data tokens at random distinct positions (noise token elsewhere), then K marker tokens that
ask for the copy. The target is the K data tokens in order. Token ids: 0 = noise, 1..vocab-2
= data, vocab-1 = marker. Which positions matter depends on the content, so a time-invariant
(LTI) convolution cannot pick them out; an input-dependent (selective) state space can.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqcomp.data.tokens import TokenTask, TokenTaskConfig
from seqcomp.registry import check


@dataclass
class SelectiveCopyingConfig(TokenTaskConfig):
    n_tokens: int = 4  # K: data tokens to copy (= targets per sample)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(isinstance(self.n_tokens, int) and self.n_tokens > 0, "n_tokens",
              f"must be a positive integer, got {self.n_tokens!r}")
        check(self.vocab >= 4, "vocab", f"must be >= 4 (noise, marker and at least 2 data tokens), got {self.vocab}")
        check(self.length >= 2 * self.n_tokens, "length",
              f"must be >= 2 * n_tokens = {2 * self.n_tokens} (a region holding the {self.n_tokens} data tokens, "
              f"then {self.n_tokens} markers), got {self.length}")


class SelectiveCopying(TokenTask):
    Config = SelectiveCopyingConfig
    NOISE = 0

    @property
    def marker(self) -> int:
        return self.cfg.vocab - 1

    @property
    def targets(self) -> int:
        return self.cfg.n_tokens

    @property
    def chance(self) -> float:
        return 1.0 / (self.cfg.vocab - 2)

    def generate(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        k, region = self.cfg.n_tokens, self.cfg.length - self.cfg.n_tokens
        data = rng.integers(1, self.marker, size=(n, k))  # (n, K) in 1..vocab-2
        # K distinct positions per sample, in increasing order: the first K of a random permutation.
        positions = np.sort(np.argsort(rng.random((n, region)), axis=1)[:, :k], axis=1)  # (n, K)
        x = np.full((n, self.cfg.length), self.NOISE, dtype=np.int64)
        np.put_along_axis(x, positions, data, axis=1)
        x[:, region:] = self.marker
        return x, data.astype(np.int64)
