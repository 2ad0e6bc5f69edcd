"""A few test forecasts kept beside the metrics, so the summary can draw them against the truth.

The windows are fixed (first, middle and last test window) so that every model and pass is
drawn on the same inputs; one channel (the last: ETT's target ``OT``) keeps the file small.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

DECIMALS = 4  # values are on the scaled series: 1e-4 is far below any plotted difference


def example_indices(n_windows: int, n: int = 3) -> list[int]:
    """``n`` window indices spread evenly from the first to the last window."""
    if n_windows < 1:
        raise ValueError("no windows to draw examples from")
    if n == 1 or n_windows == 1:
        return [0]
    return sorted({round(i * (n_windows - 1) / (n - 1)) for i in range(n)})


def _rounded(t: torch.Tensor) -> list[list[float]]:
    return [[round(float(v), DECIMALS) for v in row] for row in t]


@torch.no_grad()
def forecast_examples(model: torch.nn.Module, windows: Dataset, channel: int, channel_name: str, n: int = 3) -> dict:
    """Lookback, truth and forecast of ``channel`` for ``n`` fixed windows (lists of floats)."""
    idx = example_indices(len(windows), n)
    x = torch.stack([windows[i][0] for i in idx])  # (n, L, C)
    y = torch.stack([windows[i][1] for i in idx])  # (n, H, C)
    pred = model.eval()(x).float()  # (n, H, C)
    return {
        "channel": channel_name,
        "windows": idx,
        "context": _rounded(x[:, :, channel]),
        "truth": _rounded(y[:, :, channel]),
        "forecast": _rounded(pred[:, :, channel]),
    }
