"""Peak memory of one call (seqcomp.evaluate.memory), as the micro-benchmarks measure it."""

from __future__ import annotations

import pytest
import torch

from seqcomp.evaluate.memory import peak_mib


def test_peak_memory_counts_what_a_call_allocates_even_when_freed() -> None:
    small = peak_mib(lambda: None)
    big = peak_mib(lambda: torch.ones(16 * 2**20))  # 64 MiB of float32, written, freed on return
    if big is None:
        pytest.skip("no resettable resident-set high-water mark (/proc/self/clear_refs) here")
    assert big >= 60 and small is not None and small < 16
