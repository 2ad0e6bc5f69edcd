"""Ours against published values and passes against fp32, from a small fixture with hand-computed answers."""

from __future__ import annotations

import itertools

import polars as pl
import pytest

from seqcomp.summary.compare import compare_published, compression_table, ours_by_protocol, published_markdown

SEEDS = (0, 1, 2)


def mse(model: str, lookback: int, horizon: int, seed: int) -> float:
    return {"a": 0.4, "b": 0.5}[model] + (0.02 if lookback == 96 else 0.0) + horizon / 1000 + seed / 100


def val(model: str, lookback: int, horizon: int) -> float:
    # model a: validation prefers L=336 at H=96 and L=96 at H=192; model b: always L=96
    return 0.1 if (model, lookback, horizon) in {("a", 336, 96), ("a", 96, 192), ("b", 96, 96), ("b", 96, 192)} else 0.2


def fp32() -> pl.DataFrame:
    rows = [{"dataset": "d", "model": m, "lookback": lb, "horizon": h, "seed": s, "pass_kind": "fp32",
             "mse": mse(m, lb, h, s), "mae": mse(m, lb, h, s) / 2, "val_mse": val(m, lb, h)}
            for m, lb, h, s in itertools.product("ab", (96, 336), (96, 192), SEEDS)]
    return pl.DataFrame(rows)


def published_row(model: str | None, lookback: str, horizon: str, value: float, source: str = "s") -> dict:
    return {"dataset": "d", "method": f"paper {model}", "model": model, "source": source, "metric": "mse",
            "horizon": horizon, "value": value, "paper": "P", "table": "T", "lookback": lookback, "drop_last": "true",
            "note": ""}


def test_ours_per_protocol_are_means_and_stds_over_seeds() -> None:
    ours = ours_by_protocol(fp32(), "mse")
    one = ours.filter((pl.col("model") == "a") & (pl.col("protocol") == "L96") & (pl.col("horizon") == "96")).row(0, named=True)
    # 0.4 + 0.02 + 0.096 + seed/100 over seeds 0, 1, 2
    assert one["mean"] == pytest.approx(0.526) and one["std"] == pytest.approx(0.01) and one["seeds"] == 3
    avg = ours.filter((pl.col("model") == "a") & (pl.col("protocol") == "val") & (pl.col("horizon") == "avg")).row(0, named=True)
    # per seed: (L336 H96: 0.496 + s/100, L96 H192: 0.612 + s/100) / 2 = 0.554 + s/100
    assert avg["mean"] == pytest.approx(0.564) and avg["lookbacks"] == "336/96"


def test_published_comparison_matches_hand_computed_values() -> None:
    published = [published_row("a", "96", "96", 0.5), published_row("a", "searched", "avg", 0.5, "t"),
                 published_row("b", "512", "avg", 0.6), published_row("c", "96", "96", 0.3),
                 published_row(None, "96", "avg", 0.45)]
    table = compare_published(fp32(), published)
    assert table.height == 3, "rows for models we did not run, or without a model, are not compared"
    a96 = table.filter((pl.col("model") == "a") & (pl.col("horizon") == "96")).row(0, named=True)
    assert a96["ours_base"] == pytest.approx(0.526) and a96["ours_same"] == pytest.approx(0.526)
    assert a96["ours_val"] == pytest.approx(0.506) and a96["diff_pct"] == pytest.approx(5.2)
    searched = table.filter((pl.col("model") == "a") & (pl.col("horizon") == "avg")).row(0, named=True)
    assert searched["ours_same"] == pytest.approx(0.564) and searched["diff_pct"] == pytest.approx(12.8)
    # base at avg: per seed (0.516 + 0.612) / 2 + s/100 = 0.564 + s/100 -> 0.574
    assert searched["ours_base"] == pytest.approx(0.574)
    b = table.filter(pl.col("model") == "b").row(0, named=True)
    assert b["ours_same"] is None and b["diff_pct"] is None, "we did not run L=512"
    md = published_markdown(table, published, "t")
    assert "0.5260 ± 0.0100" in md and "paper None" in md and "| 5.2 |" in md


def test_compression_table_claims_no_speed_up_for_simulated_passes() -> None:
    table = pl.DataFrame([
        {"dataset": "d", "model": "m", "lookback": 96, "horizon": 96, "pass": p, "pass_kind": k, "seeds": 2, "mse": e,
         "mse_change_pct": c, "size_bytes": s, "compression_ratio": 400 / s, "bits_per_weight": 32 * s / 400,
         "simulated": sim, "latency_b1_ms": ms, "speedup_b1": 2.0 / ms}
        for p, k, e, c, s, sim, ms in [("fp32", "fp32", 1.0, 0.0, 400, False, 2.0),
                                       ("int8", "int8_dynamic", 1.01, 1.0, 100, False, 1.0),
                                       ("w4", "rtn_weight_sim", 1.05, 5.0, 56, True, 2.1)]
    ])
    passes = {r["pass"]: r for r in compression_table(table).iter_rows(named=True)}
    assert set(passes) == {"int8", "w4"}
    assert passes["int8"]["kernels"] == "real" and passes["int8"]["speedup_b1"] == pytest.approx(2.0)
    assert passes["w4"]["kernels"] == "simulated" and passes["w4"]["speedup_b1"] is None
    assert passes["w4"]["latency_b1_ms"] is None and passes["w4"]["compression_ratio"] == pytest.approx(400 / 56)
