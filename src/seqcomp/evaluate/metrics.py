"""Forecast error over every window of a split, and CPU latency.

Errors are accumulated as sums over windows and divided once at the end, so they do not
depend on the batch size and no window is dropped (Time-Series-Library's old test loader
dropped the last batch, i.e. the most recent windows; see PITFALLS.md section 1).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def forecast_errors(model: torch.nn.Module, windows: Dataset, batch_size: int = 256, device: str = "cpu") -> dict:
    """MSE and MAE averaged over all windows, horizon steps and channels; plus per-step MSE."""
    model.eval()
    sq_sum = abs_sum = None
    n = 0
    for x, y in DataLoader(windows, batch_size=batch_size, shuffle=False, drop_last=False):
        pred = model(x.to(device)).float().cpu()  # (B, H, C)
        err = pred - y
        sq = (err**2).sum(dim=(0, 2), dtype=torch.float64)  # (H,)
        ab = err.abs().sum(dim=(0, 2), dtype=torch.float64)
        sq_sum = sq if sq_sum is None else sq_sum + sq
        abs_sum = ab if abs_sum is None else abs_sum + ab
        n += x.shape[0]
    if n == 0:
        raise ValueError("no windows to evaluate")
    channels = windows[0][1].shape[1]
    per_step = sq_sum / (n * channels)  # (H,)
    return {
        "mse": float(per_step.mean()),
        "mae": float((abs_sum / (n * channels)).mean()),
        "n_windows": n,
        "mse_per_step": per_step.tolist(),
    }


@torch.no_grad()
def latency_ms(model: torch.nn.Module, example: torch.Tensor, warmup: int, repeats: int, threads: int) -> dict:
    """Median and spread of wall time per forward call on CPU, with fixed threads and a warm-up."""
    model.eval()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            model(example)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(example)
            times.append((time.perf_counter() - start) * 1e3)
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
