"""Generated long-range tasks: AR(p) with its optimal error, selective copying, induction heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from seqcomp.data import dataset_config, window_counts
from seqcomp.data.ar import ARConfig, ARSource, impulse_response
from seqcomp.data.induction_heads import InductionHeads, InductionHeadsConfig
from seqcomp.data.stage import run_data
from seqcomp.data.selective_copying import SelectiveCopying, SelectiveCopyingConfig
from seqcomp.data.windows import PreparedSamples, PreparedSeries
from seqcomp.errors import ConfigError
from seqcomp.scores import classification_scores

COPY = {"kind": "selective_copying", "length": 20, "n_tokens": 3, "vocab": 7, "n_train": 50, "n_val": 10, "n_test": 20}
INDUCTION = {"kind": "induction_heads", "length": 12, "vocab": 6, "n_train": 50, "n_val": 10, "n_test": 20}


def test_selective_copying_samples_hold_their_targets() -> None:
    task = SelectiveCopying(SelectiveCopyingConfig(length=20, n_tokens=3, vocab=7))
    x, y = task.generate(np.random.default_rng(0), 200)
    assert x.shape == (200, 20) and y.shape == (200, 3)
    assert (x[:, -3:] == 6).all()  # the markers close every sample
    region = x[:, :-3]
    assert ((region != 0).sum(1) == 3).all()  # exactly K data tokens among the noise
    assert np.array_equal(region[region != 0].reshape(200, 3), y)  # in order
    assert y.min() >= 1 and y.max() <= 5  # never noise or marker
    # data positions vary: a fixed-position solution does not exist
    assert len({tuple(np.flatnonzero(r)) for r in region}) > 150


def test_selective_copying_hand_case_without_noise() -> None:
    # length = 2K leaves a region of exactly K slots: every slot is a data token
    x, y = SelectiveCopying(SelectiveCopyingConfig(length=4, n_tokens=2, vocab=4)).generate(np.random.default_rng(1), 5)
    assert np.array_equal(x[:, :2], y) and (x[:, 2:] == 3).all()


def test_induction_heads_target_follows_the_first_special_token() -> None:
    x, y = InductionHeads(InductionHeadsConfig(length=12, vocab=6)).generate(np.random.default_rng(0), 300)
    assert x.shape == (300, 12) and y.shape == (300, 1)
    special = x == 5
    assert (special.sum(1) == 2).all() and special[:, -1].all()
    first = special.argmax(1)
    assert (first <= 9).all() and len(set(first)) > 5
    assert np.array_equal(y[:, 0], x[np.arange(300), first + 1]) and (y < 5).all()
    # hand case: length 3 leaves one layout, [s, v, s] -> v
    x3, y3 = InductionHeads(InductionHeadsConfig(length=3, vocab=4)).generate(np.random.default_rng(2), 4)
    assert (x3[:, [0, 2]] == 3).all() and np.array_equal(x3[:, 1], y3[:, 0])


@pytest.mark.parametrize("entry", [COPY, INDUCTION], ids=lambda e: e["kind"])
def test_token_tasks_prepare_deterministic_one_hot_samples(entry: dict, tmp_path: Path) -> None:
    a = run_data(entry, tmp_path / "a", name="t")
    run_data(entry, tmp_path / "b", name="t")
    assert pl.read_parquet(tmp_path / "a/series.parquet").equals(pl.read_parquet(tmp_path / "b/series.parquet"))
    run_data({**entry, "seed": 1}, tmp_path / "c", name="t")
    assert not pl.read_parquet(tmp_path / "a/series.parquet").equals(pl.read_parquet(tmp_path / "c/series.parquet"))
    # each split has its own stream: more training samples leave the test set unchanged
    run_data({**entry, "n_train": 80}, tmp_path / "d", name="t")
    test_a = PreparedSeries.load(tmp_path / "a").tokens["test"]
    test_d = PreparedSeries.load(tmp_path / "d").tokens["test"]
    assert all(torch.equal(u, v) for u, v in zip(test_a, test_d))

    data = PreparedSeries.load(tmp_path / "a")
    assert isinstance(data, PreparedSamples) and data.task == "classification"
    assert a["task"] == "classification" and a["n_classes"] == data.channels == entry["vocab"]
    length, targets = a["length"], a["targets"]
    train = data.windows("train", length, targets)
    assert len(train) == 50 and len(data.windows("test", length, targets)) == 20
    x, y = train[3]
    assert x.shape == (length, entry["vocab"]) and x.dtype == torch.float32 and y.shape == (targets,)
    assert torch.equal(x.sum(-1), torch.ones(length)) and torch.equal(x.argmax(-1), train.inputs[3])
    xs, ys = train.tensors()
    assert torch.equal(xs[3], x) and torch.equal(ys[3], y)
    with pytest.raises(ConfigError, match=f"lookback {length} and horizon {targets}, not 96 and {targets}"):
        data.windows("train", 96, targets)


def test_sample_shape_is_fixed_and_checked_at_config_time(tmp_path: Path) -> None:
    assert window_counts(COPY, tmp_path, 20, 3, "datasets.c") == {"train": 50, "val": 10, "test": 20}
    with pytest.raises(ConfigError, match=r"datasets.c: its samples have lookback 20 and horizon 3 .*not 96 and 48"):
        window_counts(COPY, tmp_path, 96, 48, "datasets.c")
    with pytest.raises(ConfigError, match=r"datasets.c.split: .*fixed sample counts"):
        window_counts({**COPY, "split": {"ratios": [0.6, 0.2, 0.2]}}, tmp_path, 20, 3, "datasets.c")
    series = {"kind": "ar", "n_steps": 1000, "split": {"ratios": [0.7, 0.1, 0.2]}}
    assert window_counts(series, tmp_path, 96, 48, "datasets.a") == {"train": 557, "val": 53, "test": 153}


@pytest.mark.parametrize(
    ("kind", "params", "key"),
    [
        ("selective_copying", {"vocab": 3}, "vocab"),
        ("selective_copying", {"length": 7, "n_tokens": 4}, "length"),
        ("selective_copying", {"n_tokens": 0}, "n_tokens"),
        ("selective_copying", {"n_train": 0}, "n_train"),
        ("induction_heads", {"vocab": 2}, "vocab"),
        ("induction_heads", {"length": 2}, "length"),
        ("induction_heads", {"n_test": -1}, "n_test"),
        ("ar", {"coefficients": [1.2]}, "coefficients"),
        ("ar", {"coefficients": [0.5, 0.6]}, "coefficients"),  # a unit-circle root: 1.2 > 1
        ("ar", {"coefficients": [0.5], "order": 2}, "order"),
        ("ar", {"noise": 0.0}, "noise"),
        ("ar", {"max_root": 1.0}, "max_root"),
        ("ar", {"order": 0}, "order"),
    ],
)
def test_bad_task_parameters_name_the_key(kind: str, params: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"datasets\.d: {key}:"):
        dataset_config(kind, params, "datasets.d")


def test_ar_is_seeded_and_stationary() -> None:
    a, b = (ARSource(ARConfig(n_steps=500, channels=2, order=6, seed=3)) for _ in range(2))
    assert np.array_equal(a.values(), b.values()) and np.array_equal(a.coefficients, b.coefficients)
    assert len(a.coefficients) == 6 and np.abs(np.roots(np.r_[1, -a.coefficients])).max() < 0.95 + 1e-9
    c = ARSource(ARConfig(n_steps=500, channels=2, order=6, seed=4))
    assert not np.array_equal(a.coefficients, c.coefficients)
    # AR(1): psi_j = phi^j
    np.testing.assert_allclose(impulse_response([0.5], 4), [1, 0.5, 0.25, 0.125])


def _oracle_forecast(raw: np.ndarray, phi: np.ndarray, horizon: int) -> np.ndarray:
    """The true process's optimal forecast: iterate the AR recursion from the last p values."""
    history = list(raw[-len(phi):])
    out = []
    for _ in range(horizon):
        nxt = float(np.dot(phi, history[::-1][: len(phi)]))
        out.append(nxt)
        history.append(nxt)
    return np.array(out)


def test_ar_optimal_error_is_in_the_pipelines_scaled_units(tmp_path: Path) -> None:
    phi = [0.6, -0.3, 0.2]
    meta = run_data({"kind": "ar", "n_steps": 12000, "coefficients": phi, "noise": 2.0, "seed": 0,
                    "split": {"ratios": [0.5, 0.1, 0.4]}}, tmp_path, name="ar")
    assert meta["ar"]["coefficients"] == phi and len(meta["optimal_mse_per_step"]) == 4800
    series = PreparedSeries.load(tmp_path)
    lookback, horizon = 8, 4
    x, y = series.windows("test", lookback, horizon).tensors()  # scaled
    mean, std = meta["scaler"]["mean"][0], meta["scaler"]["std"][0]
    raw = x[:, :, 0].double().numpy() * std + mean
    pred = np.stack([_oracle_forecast(r, np.array(phi), horizon) for r in raw])  # raw units; the process has mean 0
    realised = (((pred - mean) / std - y[:, :, 0].double().numpy()) ** 2).mean(0)  # (H,) scaled MSE per step
    expected = np.array(meta["optimal_mse_per_step"][:horizon])
    np.testing.assert_allclose(realised, expected, rtol=0.08)
    # scaled units: the stationary variance (~1 after scaling) bounds the error from above
    assert expected[0] < expected[-1] < 1.05 and expected[0] == pytest.approx(4.0 / std**2)


def test_classification_scores_on_a_known_predictor() -> None:
    from seqcomp.data.windows import SampleDataset

    inputs = torch.tensor([[0, 1, 2], [2, 2, 2], [1, 0, 1], [0, 0, 0]])
    targets = torch.tensor([[1, 2], [2, 2], [0, 1], [2, 0]])

    class LastTwo(torch.nn.Module):  # predicts the last two input tokens
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, -2:] * 10.0

    data = SampleDataset(inputs, targets, 3)
    for batch in (1, 3, 100):
        s = classification_scores(LastTwo(), data, batch_size=batch)
        # predictions [1,2] [2,2] [0,1] [0,0]: tokens right 2+2+2+1 = 7 of 8, samples 3 of 4
        assert s["accuracy"] == pytest.approx(7 / 8) and s["seq_accuracy"] == pytest.approx(3 / 4)
        assert s["accuracy_per_step"] == pytest.approx([3 / 4, 1.0]) and s["n_samples"] == 4
