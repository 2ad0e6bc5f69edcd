"""What the generated series kinds (``synthetic``, ``ar``) share: the AR recursion and the
hourly table a generated array becomes. Here rather than in one of them, so neither plug-in
imports the other (an edit of one reruns only its own data jobs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import polars as pl


def simulate(eps: np.ndarray, coefficients: list[float] | np.ndarray) -> np.ndarray:
    """x_t = sum_i phi_i x_{t-i} + eps_t along axis 0, from a zero past (float64)."""
    from scipy.signal import lfilter  # lazy: the synthetic kind imports this module on bare GPU boxes

    return lfilter([1.0], np.concatenate([[1.0], -np.asarray(coefficients, dtype=np.float64)]), eps, axis=0)


def hourly_frame(values: np.ndarray) -> pl.DataFrame:
    """A generated (T, C) array as the sources' table: hourly ``date`` from 2020-01-01, ``ch0..``."""
    import polars as pl  # lazy: GPU benchmark machines have torch but not polars

    dates = pl.datetime_range(
        pl.datetime(2020, 1, 1), pl.datetime(2020, 1, 1) + pl.duration(hours=len(values) - 1), "1h", eager=True
    )
    channels = [pl.Series(f"ch{i}", values[:, i]) for i in range(values.shape[1])]
    return pl.DataFrame({"date": dates}).with_columns(channels)
