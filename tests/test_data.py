"""Data stage: splits, scaling, windows and clear errors for bad CSVs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from conftest import tiny_entry
from seqcomp.data.prepare import prepare
from seqcomp.data.split import count_windows, split_borders
from seqcomp.data.windows import PreparedSeries
from seqcomp.errors import ConfigError, DataError


def test_etth1_standard_borders_give_published_window_counts(etth1: Path, tmp_path: Path) -> None:
    meta = prepare({"kind": "csv", "path": str(etth1), "split": {"preset": "ett_hour"}}, tmp_path, name="etth1")
    assert meta["borders"] == [8640, 11520, 14400]
    series = PreparedSeries.load(tmp_path)
    assert [len(series.windows(s, 96, 96)) for s in ("train", "val", "test")] == [8449, 2785, 2785]
    assert [len(series.windows("test", 96, h)) for h in (192, 336, 720)] == [2689, 2545, 2161]
    # scaler fitted on the train rows only: train is standardised, test is not exactly
    train = series.values[:8640]
    assert torch.allclose(train.mean(0), torch.zeros(7), atol=1e-4)
    assert torch.allclose(train.std(0, unbiased=False), torch.ones(7), atol=1e-3)
    assert meta["scaler"]["fitted_on"] == "train" and meta["source"].startswith("sha256:")


def test_synthetic_is_deterministic_and_seeded(tmp_path: Path) -> None:
    a = prepare(tiny_entry(), tmp_path / "a", name="t")
    b = prepare(tiny_entry(), tmp_path / "b", name="t")
    fa, fb = pl.read_parquet(tmp_path / "a/series.parquet"), pl.read_parquet(tmp_path / "b/series.parquet")
    assert fa.equals(fb) and a["scaler"] == b["scaler"]
    c = prepare({**tiny_entry(), "seed": 4}, tmp_path / "c", name="t")
    assert c["scaler"] != a["scaler"]


def test_window_contents_line_up() -> None:
    values = torch.arange(100, dtype=torch.float32)[:, None]
    from seqcomp.data.windows import WindowDataset
    from seqcomp.data.split import window_starts

    ds = WindowDataset(values, window_starts((60, 80, 100), "val", 10, 5), 10, 5)
    x, y = ds[0]
    assert x[-1, 0] == 59 and y[0, 0] == 60 and len(ds) == 16
    xs, ys = ds.tensors()
    assert torch.equal(xs[3], ds[3][0]) and torch.equal(ys[-1], ds[len(ds) - 1][1])


def test_cycle_windows_carry_each_rows_phase() -> None:
    values = torch.arange(200, dtype=torch.float32)[:, None].repeat(1, 2) * 0.5
    series = PreparedSeries(values=values, borders=(120, 160, 200), meta={})
    plain, cyc = series.windows("val", 30, 6), series.windows("val", 30, 6, cycle=24)
    x, y = cyc[4]
    assert x.shape == (30, 3) and torch.equal(x[:, :2], plain[4][0]) and torch.equal(y, plain[4][1])
    rows = (x[:, 0] * 2).long()  # the row index of each lookback step
    assert torch.equal(x[:, 2].long(), rows % 24)
    xs, ys = cyc.tensors()
    assert torch.equal(xs[4], x) and xs.shape[-1] == 3 and ys.shape[-1] == 2


def test_ratio_split_matches_time_series_library() -> None:
    assert split_borders({"ratios": [0.7, 0.1, 0.2]}, 1000) == (700, 800, 1000)
    assert count_windows((700, 800, 1000), 96, 48) == {"train": 557, "val": 53, "test": 153}
    with pytest.raises(ConfigError, match="only 500 rows"):
        split_borders({"preset": "ett_hour"}, 500)


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "bad.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


GOOD_HEAD = "date,a,b\n2020-01-01 00:00:00,1,2\n2020-01-01 01:00:00,2,3\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty"),
        ("date,a,b\n", "no data rows"),
        ("time,a\n2020-01-01,1\n", "no date column 'date'"),
        ("date,a\nnot-a-date,1\n", "line 2: cannot parse 'not-a-date'"),
        (GOOD_HEAD + "2020-01-01 01:00:00,3,4\n", "line 4: .*duplicate"),
        (GOOD_HEAD + "2019-01-01 01:00:00,3,4\n", "line 4: .*earlier"),
        (GOOD_HEAD + "2020-01-01 02:00:00,abc,4\n", "column 'a' line 4: 'abc' is not a number"),
        (GOOD_HEAD + "2020-01-01 02:00:00,,4\n", "column 'a' line 4: missing"),
        (GOOD_HEAD + "2020-01-01 02:00:00,1,inf\n", "column 'b' line 4: missing or non-finite"),
        (b"date,a\n\xff\xfe,1\n", "not UTF-8"),
        (GOOD_HEAD + "2020-01-01 02:00:00,1,2,3\n", "line 4 has 4 fields, the header has 3"),
    ],
)
def test_bad_csv_gets_a_clear_error_naming_file_and_place(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=expected) as info:
        prepare({"kind": "csv", "path": str(path), "split": {"borders": [1, 2, 3]}}, tmp_path / "out", name="d")
    assert str(path) in str(info.value)
    assert not (tmp_path / "out" / "series.parquet").exists()


def test_missing_file_names_the_config_key(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"file not found \(datasets.d.path\)"):
        prepare({"kind": "csv", "path": str(tmp_path / "nope.csv")}, tmp_path / "out", name="d")


def test_ffill_fills_and_counts(tmp_path: Path) -> None:
    rows = [f"2020-01-01 {h:02d}:00:00,{'' if h in (3, 4) else h},{h * 2}" for h in range(20)]
    path = write(tmp_path, "date,a,b\n" + "\n".join(rows) + "\n")
    meta = prepare({"kind": "csv", "path": str(path), "missing": "ffill", "split": {"borders": [12, 16, 20]}},
                   tmp_path / "out", name="d")
    assert meta["filled_values"] == {"a": 2}
    frame = pl.read_parquet(tmp_path / "out/series.parquet")
    assert frame["a"].is_finite().all()
    a = np.array([h if h not in (3, 4) else 2 for h in range(20)], dtype=float)
    assert np.allclose(frame["a"].to_numpy(), (a - a[:12].mean()) / a[:12].std(), atol=1e-5)


def test_meta_is_json_and_complete(tiny_data: Path) -> None:
    meta = json.loads((tiny_data / "meta.json").read_text())
    assert set(meta) >= {"channels", "borders", "scaler", "source", "n_rows"}
    assert not list(tiny_data.glob(".*.tmp"))
