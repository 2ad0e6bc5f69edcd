"""Data stage: splits, scaling, windows and clear errors for bad CSVs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from conftest import tiny_entry
from seqcomp.data.stage import run_data
from seqcomp.data.split import count_windows, split_borders
from seqcomp.data.windows import PreparedSeries
from seqcomp.errors import ConfigError, DataError, SeqcompError


def test_etth1_standard_borders_give_published_window_counts(etth1: Path, tmp_path: Path) -> None:
    meta = run_data({"kind": "csv", "path": str(etth1), "split": {"preset": "ett_hour"}}, tmp_path, name="etth1")
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
    a = run_data(tiny_entry(), tmp_path / "a", name="t")
    b = run_data(tiny_entry(), tmp_path / "b", name="t")
    fa, fb = pl.read_parquet(tmp_path / "a/series.parquet"), pl.read_parquet(tmp_path / "b/series.parquet")
    assert fa.equals(fb) and a["scaler"] == b["scaler"]
    c = run_data({**tiny_entry(), "seed": 4}, tmp_path / "c", name="t")
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


def test_a_jobs_windows_follow_its_spec_not_its_model() -> None:
    from seqcomp.data.windows import job_windows

    values = torch.arange(200, dtype=torch.float32)[:, None].repeat(1, 2)
    series = PreparedSeries(values=values, borders=(120, 160, 200), meta={})
    spec = {"lookback": 30, "horizon": 6, "params": {"hidden": 8}}
    plain = job_windows(series, spec, "test")
    cyc = job_windows(series, {**spec, "params": {"cycle": 24}}, "test")
    assert plain[0][0].shape == (30, 2) and cyc[0][0].shape == (30, 3)
    # the first test window forecasts rows 160-165 from rows 130-159 (its lookback reaches into val)
    assert torch.equal(cyc[0][0][:, 2].long(), values[130:160, 0].long() % 24)


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
        (GOOD_HEAD + "2020-01-01 02:00:00,1e39,4\n", "column 'a' line 4: '1e39' is beyond the float32 range"),
        (GOOD_HEAD + "2020-01-01 02:00:00,1,-1e308\n", "column 'b' line 4: '-1e308' is beyond the float32 range"),
        (GOOD_HEAD.replace(",", ";").replace("01:00:00;2", "01:00:00;x"), "column 'a' line 3: 'x' is not a number"),
        (b"PK\x03\x04" + b"\0" * 40, "is zip-compressed, not CSV text"),
        (b"\x1f\x8b\x08\x00truncated", "is gzip-compressed but cannot be decompressed"),
        (gzip.compress(b"date,a\n"), "has a header but no data rows"),
    ],
)
def test_bad_csv_gets_a_clear_error_naming_file_and_place(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=expected) as info:
        run_data({"kind": "csv", "path": str(path), "split": {"borders": [1, 2, 3]}}, tmp_path / "out", name="d")
    assert str(path) in str(info.value)
    assert not (tmp_path / "out" / "series.parquet").exists()


def test_a_decimal_comma_in_a_semicolon_file_gets_a_hint(tmp_path: Path) -> None:
    """``1,5`` is how a European spreadsheet writes 1.5 in a ``;`` export: refused, with what to write."""
    path = write(tmp_path, "date;a\n2020-01-01 00:00:00;1.0\n2020-01-01 01:00:00;1,5\n2020-01-01 02:00:00;2\n")
    hint = r"line 3: '1,5' is not a number; decimal commas are not read: write 1.5 \(or convert the file\)"
    with pytest.raises(DataError, match=hint):
        run_data({"kind": "csv", "path": str(path), "split": {"borders": [1, 2, 3]}}, tmp_path / "out", name="d")
    # a comma file cannot hold one (it splits the field); other text in a ; file gets no such hint
    path = write(tmp_path, "date;a\n2020-01-01 00:00:00;1.0\n2020-01-01 01:00:00;1.5x\n")
    with pytest.raises(DataError, match=r"'1.5x' is not a number$"):
        run_data({"kind": "csv", "path": str(path), "split": {"borders": [1, 2, 3]}}, tmp_path / "out", name="d")


def test_missing_file_names_the_config_key(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"file not found \(datasets.d.path\)"):
        run_data({"kind": "csv", "path": str(tmp_path / "nope.csv")}, tmp_path / "out", name="d")
    with pytest.raises(DataError, match=r"is a directory, not a CSV file \(datasets.d.path\)"):
        run_data({"kind": "csv", "path": str(tmp_path)}, tmp_path / "out", name="d")


def test_values_past_float32_are_refused_even_with_ffill(tmp_path: Path) -> None:
    """1e39 is finite as read (float64) and inf once stored (float32): not a missing value to fill."""
    path = write(tmp_path, GOOD_HEAD + "2020-01-01 02:00:00,3.5e38,4\n")
    entry = {"kind": "csv", "path": str(path), "missing": "ffill", "split": {"borders": [1, 2, 3]}}
    with pytest.raises(DataError, match=r"line 4: '3.5e38' is beyond the float32 range"):
        run_data(entry, tmp_path / "out", name="d")
    rows = "2020-01-01 02:00:00,{},4\n2020-01-01 03:00:00,1,5\n"
    entry["split"] = {"borders": [2, 3, 4]}
    path.write_text(GOOD_HEAD + rows.format("3.4e38"))  # fits float32 (max 3.40282e38), not once scaled
    with pytest.raises(DataError, match=r"datasets.d: channel 'a' at 2020-01-01 02:00:00: 3.4e\+38 is 6.8e\+38 "
                                        r"train standard deviations from the train mean, beyond float32 once scaled"):
        run_data(entry, tmp_path / "out", name="d")
    path.write_text(GOOD_HEAD.replace(",1,", ",-3.4e38,").replace(",2,", ",3.4e38,") + rows.format("-1e38"))
    meta = run_data(entry, tmp_path / "out", name="d")
    assert np.isfinite(pl.read_parquet(tmp_path / "out/series.parquet")["a"].to_numpy()).all()
    assert meta["scaler"]["std"][0] == pytest.approx(3.4e38)


def test_one_data_row_says_how_many_rows_the_split_needs(tmp_path: Path) -> None:
    path = write(tmp_path, "date,a\n2020-01-01 00:00:00,1\n")
    with pytest.raises(SeqcompError, match=r"datasets.d.split: the series has 1 row: ratios \[0.7, 0.1, 0.2\] give "
                                           r"train/val/test 0/1/0 rows; .* at least 5 rows"):
        run_data({"kind": "csv", "path": str(path), "split": {"ratios": [0.7, 0.1, 0.2]}}, tmp_path / "out", name="d")


def hourly_csv(tmp_path: Path, name: str, date_format: str, rows: int = 400, sep: str = ",") -> Path:
    """A CSV of ``rows`` hourly rows from 2016-07-01 with dates written in ``date_format``."""
    from datetime import datetime, timedelta

    start = datetime(2016, 7, 1)
    lines = [sep.join(["date", "a", "b"])] + [
        sep.join([(start + timedelta(hours=h)).strftime(date_format), str(h % 7), str((h * 3) % 11)]) for h in range(rows)
    ]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def read_back(tmp_path: Path, path: Path, **keys) -> pl.DataFrame:
    out = tmp_path / f"out-{path.name}"
    run_data({"kind": "csv", "path": str(path), "split": {"ratios": [0.6, 0.2, 0.2]}, **keys}, out, name="d")
    return pl.read_parquet(out / "series.parquet")


def test_month_first_dates_are_read_month_first_over_the_whole_column(tmp_path: Path) -> None:
    """07/01/2016 00:00 ... : polars alone reads 288 rows day-first, then fails at 07/13; one format reads all."""
    iso = read_back(tmp_path, hourly_csv(tmp_path, "iso.csv", "%Y-%m-%d %H:%M:%S"))
    for name, fmt in [("us.csv", "%m/%d/%Y %H:%M"), ("eu.csv", "%d.%m.%Y %H:%M"), ("t.csv", "%Y-%m-%dT%H:%M")]:
        assert read_back(tmp_path, hourly_csv(tmp_path, name, fmt)).equals(iso), fmt


def test_ambiguous_dates_are_refused_naming_column_examples_and_key(tmp_path: Path) -> None:
    path = hourly_csv(tmp_path, "short.csv", "%m/%d/%Y %H:%M", rows=200)  # 1-9 July: every day is a month too
    with pytest.raises(DataError, match=r"column 'date': ambiguous dates: both '%d/%m/%Y %H:%M' \(day-first\) and "
                                        r"'%m/%d/%Y %H:%M' \(month-first\) read every row, e.g. '07/01/2016 00:00' and "
                                        r"'07/01/2016 01:00'; set datasets.d.date_format"):
        read_back(tmp_path, path)
    iso = read_back(tmp_path, hourly_csv(tmp_path, "iso.csv", "%Y-%m-%d %H:%M:%S", rows=200))
    assert read_back(tmp_path, path, date_format="%m/%d/%Y %H:%M").equals(iso)


def test_a_date_format_that_misses_a_row_names_the_line_and_key(tmp_path: Path) -> None:
    path = hourly_csv(tmp_path, "us.csv", "%m/%d/%Y %H:%M")
    with pytest.raises(DataError, match=r"line 290: cannot parse '07/13/2016 00:00' as a date in the format "
                                        r"'%d/%m/%Y %H:%M' \(datasets.d.date_format\)"):
        read_back(tmp_path, path, date_format="%d/%m/%Y %H:%M")
    mixed = tmp_path / "mixed.csv"  # month-first, then ISO: no one format reads every row
    mixed.write_text(path.read_text().replace("07/10/2016 05:00", "2016-07-10 05:00"))
    with pytest.raises(DataError, match=r"line 223: cannot parse '2016-07-10 05:00' as a date in the format "
                                        r"'%d/%m/%Y %H:%M' or '%m/%d/%Y %H:%M', which reads the lines before it, and no one format "
                                        r"reads every row; set datasets.d.date_format"):
        read_back(tmp_path, mixed)


def test_separators_and_compression_are_read_as_plain_csv(tmp_path: Path) -> None:
    plain = read_back(tmp_path, hourly_csv(tmp_path, "plain.csv", "%Y-%m-%d %H:%M:%S"))
    for sep in (";", "\t", "|"):
        assert read_back(tmp_path, hourly_csv(tmp_path, f"sep{ord(sep)}.csv", "%Y-%m-%d %H:%M:%S", sep=sep)).equals(plain)
    gz = tmp_path / "packed.csv"  # gzip-compressed under a .csv name
    gz.write_bytes(gzip.compress((tmp_path / "plain.csv").read_bytes()))
    assert read_back(tmp_path, gz).equals(plain)
    # an explicit separator wins over the header's most frequent character
    with pytest.raises(DataError, match=r"no date column 'date'.*columns are \['date;a;b'\]"):
        read_back(tmp_path, tmp_path / "sep59.csv", separator=",")


def test_month_first_etth1_reads_as_the_original(etth1: Path, tmp_path: Path) -> None:
    """The issue's case: ETTh1 with its dates rewritten 07/01/2016 00:00."""
    frame = pl.read_csv(etth1, infer_schema=False)
    dates = frame["date"].str.to_datetime("%Y-%m-%d %H:%M:%S").dt.strftime("%m/%d/%Y %H:%M")
    us = tmp_path / "etth1_us.csv"
    frame.with_columns(dates.alias("date")).write_csv(us)
    entry = {"kind": "csv", "split": {"preset": "ett_hour"}}
    a = run_data({**entry, "path": str(etth1)}, tmp_path / "a", name="d")
    b = run_data({**entry, "path": str(us)}, tmp_path / "b", name="d")
    assert a["scaler"] == b["scaler"]
    assert pl.read_parquet(tmp_path / "a/series.parquet").equals(pl.read_parquet(tmp_path / "b/series.parquet"))


def test_ffill_fills_and_counts(tmp_path: Path) -> None:
    rows = [f"2020-01-01 {h:02d}:00:00,{'' if h in (3, 4) else h},{h * 2}" for h in range(20)]
    path = write(tmp_path, "date,a,b\n" + "\n".join(rows) + "\n")
    meta = run_data({"kind": "csv", "path": str(path), "missing": "ffill", "split": {"borders": [12, 16, 20]}},
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
