"""Generated token-sequence classification tasks: what the sample kinds share.

Unlike a series, such a dataset is a set of independent samples with a fixed shape: an input
of ``length`` tokens and ``targets`` target tokens, drawn from a vocabulary of ``vocab``
tokens (special tokens included; every token is also a class). Models see the input one-hot,
(L, vocab), and emit logits (targets, vocab), so they keep the (B, L, C) -> (B, H, C) contract
with C = vocab. Each split has a fixed sample count and its own random stream, so changing
``n_train`` does not change the test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqcomp.data.split import SPLITS
from seqcomp.registry import check


@dataclass
class TokenTaskConfig:
    length: int = 64  # L: input tokens per sample
    vocab: int = 8  # tokens, special ones included (= number of classes)
    n_train: int = 4000
    n_val: int = 500
    n_test: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("length", "vocab", "n_train", "n_val", "n_test"):
            value = getattr(self, key)
            check(isinstance(value, int) and not isinstance(value, bool) and value > 0, key,
                  f"must be a positive integer, got {value!r}")


class TokenTask:
    """Base of the sample kinds: subclasses set ``Config`` and define ``targets``, ``chance``
    and ``generate``."""

    Config = TokenTaskConfig
    task = "classification"

    def __init__(self, cfg: TokenTaskConfig, base_dir: Path | None = None, where: str = "dataset"):
        self.cfg = cfg

    @property
    def targets(self) -> int:
        """H: target tokens per sample."""
        raise NotImplementedError

    @property
    def chance(self) -> float:
        """Per-token accuracy of uniform guessing among the tokens a target can be."""
        raise NotImplementedError

    def generate(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` samples: inputs (n, length) and targets (n, targets), int64 token ids."""
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int]:
        """(lookback, horizon) the samples have: the only window a model can be run at."""
        return self.cfg.length, self.targets

    def counts(self) -> dict[str, int]:
        return {"train": self.cfg.n_train, "val": self.cfg.n_val, "test": self.cfg.n_test}

    def identity(self) -> str:
        return f"{type(self).__name__}:{self.cfg}"

    def samples(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """split -> (inputs, targets); split i draws from the stream (seed, i)."""
        return {
            split: self.generate(np.random.default_rng([self.cfg.seed, i]), self.counts()[split])
            for i, split in enumerate(SPLITS)
        }
