"""Summary stage: the table joins each pass to its fp32 baseline; figures render."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from seqcomp.report import aggregate, load_histories, load_metrics, summarize, to_markdown


def fake_metrics(tmp_path: Path) -> list[str]:
    paths = []
    for seed in (0, 1):
        for model, base in (("lstm", 0.5), ("dlinear", 0.6)):
            for pass_, kind, factor, size, ms in (("fp32", "fp32", 1.0, 4000, 2.0), ("int8_dynamic", "int8_dynamic", 1.01, 1000, 1.0)):
                m = {"dataset": "d", "model": model, "kind": model, "lookback": 24, "horizon": 8, "seed": seed,
                     "pass": pass_, "pass_kind": kind, "mse": base * factor + seed * 0.01, "mae": 0.4, "n_windows": 10,
                     "simulated": False, "size_bytes": size, "file_bytes": size + 500, "fp32_bytes": 4000,
                     "compression_ratio": 4000 / size, "quantized_fraction": 1.0 if kind != "fp32" else 0.0, "latency": {"b1": {"median_ms": ms}}, "mse_per_step": [0.1]}
                path = tmp_path / "evaluate" / f"{model}-{pass_}-{seed}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(m))
                paths.append(str(path))
    return paths


def fake_history(tmp_path: Path) -> list[str]:
    path = tmp_path / "train" / "d" / "lstm" / "L24-H8" / "seed0" / "history.csv"
    path.parent.mkdir(parents=True)
    pl.DataFrame({"epoch": [0, 1], "train/loss": [1.0, 0.8], "val/mse": [0.9, 0.7]}).write_csv(path)
    return [str(path)]


def test_metrics_join_their_fp32_baseline(tmp_path: Path) -> None:
    frame = load_metrics(fake_metrics(tmp_path))
    int8 = frame.filter((pl.col("pass") == "int8_dynamic") & (pl.col("model") == "lstm") & (pl.col("seed") == 0))
    assert int8["mse_change_pct"][0] == pytest.approx(1.0)
    assert int8["speedup_b1"][0] == pytest.approx(2.0)
    table = aggregate(frame)
    assert table.height == 4 and set(table["seeds"]) == {2}
    lstm_fp32 = table.filter((pl.col("model") == "lstm") & (pl.col("pass") == "fp32"))
    assert lstm_fp32["mse"][0] == pytest.approx(0.505) and lstm_fp32["mse_std"][0] > 0


def test_summarize_writes_table_and_plots(tmp_path: Path) -> None:
    summarize(fake_metrics(tmp_path), fake_history(tmp_path), tmp_path / "summary")
    md = (tmp_path / "summary" / "results.md").read_text()
    assert md.count("\n| d |") == 4 and "mse_std" in md
    assert pl.read_csv(tmp_path / "summary" / "results.csv").height == 8
    for name in ("pareto.png", "training_curves.png"):
        assert (tmp_path / "summary" / "plots" / name).stat().st_size > 5000


def test_history_path_keys_are_parsed(tmp_path: Path) -> None:
    h = load_histories(fake_history(tmp_path))
    assert h["model"].to_list() == ["lstm", "lstm"] and h["lookback"][0] == 24


def test_markdown_formats_floats_and_nulls() -> None:
    md = to_markdown(pl.DataFrame({"a": [1.23456789, None], "b": ["x", "y"]}))
    assert "| 1.235 | x |" in md and "|  | y |" in md
