"""The kernel_synth corpus generator: reproducible per series, the kernel bank's structure,
exact GP draws, TTM's downsampled views, TSMix's convex mixes, clear config errors."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from seqcomp.data import dataset_config
from seqcomp.data.kernel_synth import (
    BANK,
    KernelSynthConfig,
    KernelSynthSource,
    Term,
    rational_quadratic_cov,
    bank_kernel,
    gp_draw,
    stationary_draw,
    views,
)
from seqcomp.data.stage import run_data
from seqcomp.errors import ConfigError


def source(**params: object) -> KernelSynthSource:
    return KernelSynthSource(dataset_config("kernel_synth", {"length": 128, **params}, "datasets.k"))


def test_a_series_depends_on_seed_and_index_not_on_how_many_are_asked() -> None:
    few, many = source(n_series=3), source(n_series=9)
    for i in range(3):
        assert np.array_equal(few.series(i)[0], many.series(i)[0])
    values_few, names_few, _ = few.generate()
    values_many, names_many, _ = many.generate()
    assert names_many[:3] == names_few == ["s0", "s1", "s2"]
    assert np.array_equal(values_many[:, :3], values_few)
    assert not np.array_equal(source(n_series=3, seed=1).generate()[0], values_few)
    families = {source().series(i)[1]["family"] for i in range(12)}
    assert families == {"kernel_synth", "forecast_pfn"}  # kernel_share 0.5: both families
    assert {source(kernel_share=0.0).series(i)[1]["family"] for i in range(6)} == {"forecast_pfn"}


@pytest.mark.parametrize("period", [7, 24, 48])
def test_a_periodic_kernels_draw_repeats_at_its_period(period: int) -> None:
    src = source(bank=["periodic"], max_kernels=1, periods=[period], kernel_share=1.0, length=512)
    for i in range(3):
        x, record = src.series(i)
        assert record["kernel"].startswith(f"periodic(p={period},")
        x = x - x.mean()
        acf = np.array([np.dot(x[:-k], x[k:]) / np.dot(x[:-k], x[:-k]) for k in range(2, 2 * period + 3)])
        assert np.argmax(acf) + 2 in (period, 2 * period) and acf[period - 2] > 0.999
        assert np.abs(acf[period // 2 - 2]) < 0.999  # not a flat line: half a period away it differs


def test_every_bank_kernel_draws_finite_varying_series() -> None:
    for name in BANK[:-1]:  # constant alone is flat by definition, refused in a bank of its own
        values, _, records = source(bank=[name], max_kernels=1, kernel_share=1.0, n_series=2).generate()
        assert np.isfinite(values).all() and (values.std(axis=0) > 0).all(), name
        assert all(r["kernel"].startswith(name) for r in records.values())
    values, _, _ = source(n_series=6, downsample=[2, 3], mixes=2).generate()
    assert values.dtype == np.float32 and np.isfinite(values).all()


def test_circulant_draws_have_the_kernels_covariance() -> None:
    """The embedding's draws against the dense covariance: a wrong scale (a factor 2 from the
    complex draw) or a wrong corner would miss by far more than the 2500 draws' noise (4 standard errors)."""
    n = 12
    rng = np.random.default_rng(0)
    kernel = bank_kernel("periodic", np.random.default_rng(1), n, [6]) * bank_kernel("linear", rng, n, [6]) \
        + bank_kernel("rbf", rng, n, [6]) + bank_kernel("white_noise", rng, n, [6])
    draws = np.stack([gp_draw(kernel, n, rng, "circulant")[0] for _ in range(2500)])
    target = kernel.matrix(n)
    assert np.abs(np.cov(draws.T, bias=True) - target).max() < 0.12 * np.abs(target).max()


def test_a_separable_term_is_its_kernel_matrix() -> None:
    n = 8
    linear = bank_kernel("linear", np.random.default_rng(0), n, [4])
    x = np.arange(n) / n
    c = sum(t.scale for t in linear.terms if t.degree == 0)
    assert np.allclose(linear.matrix(n), c + np.outer(x, x))
    assert (Term(2.0, 1) * Term(3.0, 2)).scale == 6.0 and (Term(2.0, 1) * Term(3.0, 2)).degree == 3


def test_downsampled_views_are_block_means_ending_together() -> None:
    src = source(n_series=2, downsample=[4, 2])
    assert src.cfg.generated_length == 128 * 4 and src.cfg.factors == [1, 2, 4]
    values, names, _ = src.generate()
    assert values.shape == (128, 6) and names == ["s0", "s0_x2", "s0_x4", "s1", "s1_x2", "s1_x4"]
    base = src.series(1)[0]
    assert np.allclose(values[:, 3], base[-128:]) and np.allclose(values[:, 4], base[-256:].reshape(128, 2).mean(1))
    assert np.allclose(values[-1, 5], base[-4:].mean(), rtol=1e-5)
    assert [len(v) for v in views(np.arange(40.0), 10, [1, 2, 4])] == [10, 10, 10]


def test_mixes_are_convex_combinations_of_mean_scaled_series() -> None:
    src = source(n_series=5, mixes=4, mix_max=4)
    values, names, records = src.generate()
    assert names[5:] == ["m0", "m1", "m2", "m3"]
    for j in range(4):
        record = records[f"m{j}"]
        w = np.array(record["weights"])
        assert 2 <= len(w) <= 4 and (w >= 0).all() and np.isclose(w.sum(), 1.0)
        assert len(set(record["components"])) == len(w)
        whole = np.stack([src.series(int(s[1:]))[0] for s in record["components"]])
        parts = whole[:, -128:] / np.abs(whole).mean(1, keepdims=True)
        mix = values[:, 5 + j]
        assert np.allclose(mix, w @ parts, atol=1e-5)
        assert (mix >= parts.min(0) - 1e-5).all() and (mix <= parts.max(0) + 1e-5).all()


def test_dense_sampler_draws_the_same_kernels() -> None:
    circ, dense = (source(n_series=3, kernel_share=1.0, length=64, sampler=s) for s in ("circulant", "dense"))
    assert [circ.series(i)[1]["kernel"] for i in range(3)] == [dense.series(i)[1]["kernel"] for i in range(3)]
    assert np.isfinite(dense.generate()[0]).all()


def test_the_data_stage_writes_the_corpus_with_its_channels_meta(tmp_path: Path) -> None:
    entry = {"kind": "kernel_synth", "n_series": 3, "length": 96, "downsample": [2], "mixes": 1, "mix_max": 2,
             "split": {"ratios": [0.7, 0.1, 0.2]}}
    meta = run_data(entry, tmp_path, name="corpus")
    assert meta["channels"] == ["s0", "s0_x2", "s1", "s1_x2", "s2", "s2_x2", "m0", "m0_x2"]
    assert meta["n_rows"] == 96 and meta["step"]["text"] == "1h" and meta["step_jumps"] == []
    info = meta["kernel_synth"]
    assert info["channels"]["m0_x2"] == {"series": "m0", "factor": 2} and info["generated_length"] == 192
    assert info["series"]["m0"]["family"] == "mix" and info["factors"] == [1, 2]
    assert json.loads((tmp_path / "meta.json").read_text())["kernel_synth"] == info


@pytest.mark.parametrize(
    ("params", "key", "says"),
    [
        ({"n_series": 0}, "n_series", "at least 1"),
        ({"length": 10}, "length", "at least 64"),
        ({"bank": ["periodic", "cosine"]}, "bank", r"unknown kernel\(s\) \['cosine'\]"),
        ({"bank": ["constant"]}, "bank", "only flat series"),
        ({"bank": []}, "bank", "is empty"),
        ({"downsample": [1]}, "downsample", ">= 2"),
        ({"downsample": [2, 2]}, "downsample", "repeats"),
        ({"kernel_share": 1.5}, "kernel_share", r"\[0, 1\]"),
        ({"max_kernels": 0}, "max_kernels", "at least 1"),
        ({"periods": [1, 24]}, "periods", ">= 2"),
        ({"sampler": "cholesky"}, "sampler", "circulant or dense"),
        ({"sampler": "dense", "length": 2048, "downsample": [4]}, "sampler", "8192 > 4096"),
        ({"mixes": 2, "n_series": 2, "mix_max": 3}, "mix_max", r"\[2, n_series = 2\]"),
        ({"mixes": 1, "mix_alpha": 0.0}, "mix_alpha", "> 0"),
    ],
)
def test_bad_config_names_the_key(params: dict, key: str, says: str) -> None:
    with pytest.raises(ConfigError, match=rf"datasets\.k: {key}: .*{says}"):
        dataset_config("kernel_synth", params, "datasets.k")


def test_an_indefinite_embedding_falls_back_to_a_dense_draw() -> None:
    """A rational quadratic with a heavy tail (alpha 1, scale N) never embeds; its draw is dense, counted."""
    n = 64
    heavy = Term(1.0, 0, (partial(rational_quadratic_cov, alpha=1.0, scale=float(n)),))
    x, dense = stationary_draw(heavy, n, np.random.default_rng(0))
    assert dense and x.shape == (n,) and np.isfinite(x).all()
    light = Term(1.0, 0, (partial(rational_quadratic_cov, alpha=10.0, scale=0.1 * n),))
    assert not stationary_draw(light, n, np.random.default_rng(0))[1]
