"""bench/linear_family.py: its algebra on sufficient statistics equals fitting and scoring the model.

The benchmark scores thousands of ridge variants from X^T X, X^T Y and Y^T Y, re-levelled by
algebra rather than from the windows; if that algebra were wrong its table would be too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from seqcomp.data.split import window_starts
from seqcomp.data.windows import PreparedSeries
from seqcomp.scores import forecast_errors
from seqcomp.models import SeriesShape
from seqcomp.models.linear import ClosedFormLinear

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from linear_family import relevel, split_stats, variant_errors  # noqa: E402


@pytest.mark.parametrize("k", [24, 6, 1])
def test_relevel_equals_statistics_of_relevelled_windows(k: int) -> None:
    values = np.random.default_rng(0).normal(size=(200, 3)).cumsum(0)
    lookback, horizon, starts = 24, 8, range(24, 192)
    got = relevel(split_stats(values, starts, lookback, horizon), k)
    st = np.asarray(starts)
    x = np.stack([values[s - lookback : s].T for s in st])  # (N, C, L)
    y = np.stack([values[s : s + horizon].T for s in st])  # (N, C, H)
    level = x[..., -k:].mean(-1, keepdims=True)
    a = np.concatenate([x - level, np.ones(x.shape[:2] + (1,))], -1)
    b = y - level
    want = (np.einsum("ncl,ncm->clm", a, a), np.einsum("ncl,nch->clh", a, b), (b**2).sum((0, 2)), len(st))
    for g, w in zip(got[:3], want[:3]):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-7)
    assert got[3] == want[3]


def test_shared_full_level_variant_is_the_closed_form_model(tiny_data: Path) -> None:
    """k = L, shared map, ridge 1e-4: the same val and test MSE as ClosedFormLinear fit on the
    train windows and scored by the evaluate stage's forecast_errors."""
    series = PreparedSeries.load(tiny_data)
    lookback, horizon = 24, 8
    values = series.values.double().numpy()
    stats = {s: relevel(split_stats(values, window_starts(series.borders, s, lookback, horizon), lookback, horizon), lookback)
             for s in ("train", "val", "test")}
    errors = variant_errors(stats, "shared", 1e-4)

    model = ClosedFormLinear(SeriesShape(lookback, horizon, series.channels), ClosedFormLinear.Config(ridge=1e-4))
    model.fit_closed_form(*series.windows("train", lookback, horizon).tensors())
    for split in ("val", "test"):
        want = forecast_errors(model, series.windows(split, lookback, horizon), batch_size=64)["mse"]
        assert float(np.mean(errors[split])) == pytest.approx(want, rel=1e-4)


def test_per_channel_maps_fit_each_channel_better_on_train_than_shared() -> None:
    """Sanity of the per-channel branch: on train, one map per channel cannot do worse than the
    shared map (it is the least-squares optimum per channel; ridge ~0)."""
    rng = np.random.default_rng(1)
    values = np.stack([np.sin(np.arange(300) / p) + 0.1 * rng.normal(size=300) for p in (3.0, 7.0)], 1)
    stats = relevel(split_stats(values, range(24, 292), 24, 8), 24)
    both = {"train": stats, "val": stats, "test": stats}
    shared = variant_errors(both, "shared", 1e-8)["val"]
    own = variant_errors(both, "per_channel", 1e-8)["val"]
    assert all(o <= s + 1e-9 for o, s in zip(own, shared))
    assert sum(own) < sum(shared)
