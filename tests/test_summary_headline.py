"""The headline table: validation-chosen lookback, horizon averages per seed, paired tests."""

from __future__ import annotations

import itertools

import polars as pl
import pytest

from seqcomp.summary.headline import choose_lookbacks, headline


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows).with_columns(pl.lit("d").alias("dataset"), pl.lit("fp32").alias("pass_kind"))


def grid(model: str, mse_of, val_of, lookbacks=(96, 336), horizons=(96, 192), seeds=(0, 1, 2)) -> list[dict]:
    return [
        {"model": model, "lookback": lb, "horizon": h, "seed": s, "mse": mse_of(lb, h, s), "mae": mse_of(lb, h, s) / 2,
         "val_mse": val_of(lb, h, s)}
        for lb, h, s in itertools.product(lookbacks, horizons, seeds)
    ]


def test_lookback_is_chosen_on_validation_not_test() -> None:
    # test error prefers 336, validation prefers 96: the choice must follow validation
    rows = grid("m", mse_of=lambda lb, h, s: 0.5 if lb == 336 else 0.6, val_of=lambda lb, h, s: 0.1 if lb == 96 else 0.2)
    chosen = choose_lookbacks(frame(rows))
    assert set(chosen["lookback"]) == {96}
    table, _ = headline(frame(rows))
    assert table["mse_val_chosen"][0] == pytest.approx(0.6) and table["val_chosen_lookbacks"][0] == "96/96"


def test_scores_average_horizons_per_seed_then_seeds() -> None:
    rows = grid("m", mse_of=lambda lb, h, s: h / 100 + s, val_of=lambda lb, h, s: 1.0, lookbacks=(96,))
    table, _ = headline(frame(rows))
    # per seed: mean(0.96, 1.92) + s = 1.44 + s; over seeds 0,1,2: mean 2.44, std 1
    assert table["mse_L96"][0] == pytest.approx(2.44) and table["mse_std_L96"][0] == pytest.approx(1.0)
    assert table["seeds_L96"][0] == 3


def test_a_seed_missing_a_horizon_gets_no_score() -> None:
    rows = grid("m", mse_of=lambda lb, h, s: 1.0, val_of=lambda lb, h, s: 1.0, lookbacks=(96,))
    rows = [r for r in rows if not (r["seed"] == 2 and r["horizon"] == 192)]
    table, _ = headline(frame(rows))
    assert table["seeds_L96"][0] == 2


def test_paired_test_across_seeds() -> None:
    noise = {0: 0.01, 1: -0.02, 2: 0.015}
    rows = grid("good", mse_of=lambda lb, h, s: 0.40 + noise[s], val_of=lambda lb, h, s: 1.0, lookbacks=(96,))
    rows += grid("bad", mse_of=lambda lb, h, s: 0.45 + noise[s] * 1.1, val_of=lambda lb, h, s: 1.0, lookbacks=(96,))
    rows += grid("single", mse_of=lambda lb, h, s: 0.5, val_of=lambda lb, h, s: 1.0, lookbacks=(96,), seeds=(0,))
    table, tests = headline(frame(rows))
    assert table["model"].to_list() == ["good", "bad", "single"]
    assert set(tests["lookback"]) == {"L96", "val-chosen"}  # the same here: 96 is the only lookback
    by_other = {r["other"]: r for r in tests.filter(pl.col("lookback") == "L96").iter_rows(named=True)}
    assert by_other["bad"]["best"] == "good" and by_other["bad"]["p_value"] < 0.01
    assert by_other["bad"]["mse_diff"] == pytest.approx(0.05, abs=0.002)
    assert by_other["single"]["common_seeds"] == 1 and by_other["single"]["p_value"] is None


def test_no_fp32_forecasts_gives_empty_tables() -> None:
    rows = grid("m", mse_of=lambda lb, h, s: 1.0, val_of=lambda lb, h, s: 1.0, lookbacks=(96,))
    table, tests = headline(frame(rows).with_columns(pl.lit("rtn").alias("pass_kind")))
    assert table.is_empty() and tests.is_empty()
