"""CPU latency of a model's forward call: the package's one latency timer (``call_ms``).

The scores over a split (errors, accuracy) are ``seqcomp.scores``, shared with training.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch


def call_ms(
    calls: Sequence[Callable[[], object]], warmup: int, repeats: int, budget_s: float = math.inf, cuda: bool = False
) -> list[list[float]]:
    """Wall milliseconds of each of ``calls``, one list per call: the package's one latency timer.

    ``warmup`` untimed rounds, then up to ``repeats`` timed rounds; within a round the calls are
    interleaved, so paired comparisons (fp32 vs int8) see the same machine state. Timing stops
    early once the timed rounds exceed ``budget_s`` (at least one round runs). ``cuda``:
    synchronise the GPU before each clock read, so a kernel is counted where it runs, not where
    it is launched.
    """
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        for call in calls:
            call()
    sync()
    times: list[list[float]] = [[] for _ in calls]
    spent = 0.0
    for round_ in range(repeats):
        if round_ and spent > budget_s * 1e3:
            break
        for call, out in zip(calls, times):
            start = time.perf_counter()
            call()
            sync()
            out.append((time.perf_counter() - start) * 1e3)
            spent += out[-1]
    return times


@torch.no_grad()
def latency_ms(model: torch.nn.Module, example: torch.Tensor, warmup: int, repeats: int, threads: int) -> dict:
    """Median and spread of wall time per forward call on CPU, with fixed threads and a warm-up."""
    model.eval()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        (times,) = call_ms([lambda: model(example)], warmup, repeats)
    finally:
        torch.set_num_threads(previous)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "repeats": repeats,
        "warmup": warmup,
        "threads": threads,
        "batch_size": example.shape[0],
    }
