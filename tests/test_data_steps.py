"""Data stage: header names, blank lines, time steps, gaps (error / fill / allow), the presets'
and the cycle's assumptions about the step."""

from __future__ import annotations

import calendar
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from seqcomp.data import check_series
from seqcomp.data.stage import run_data
from seqcomp.data.windows import PreparedSeries, cycle_origin, step_index
from seqcomp.errors import ConfigError, DataError

HOUR = timedelta(hours=1)


def series_csv(path: Path, dates: list, header: str = "date,a,b") -> Path:
    """A CSV with ``dates`` (datetimes or text) and two channels: a = the row number, b = its square."""
    rows = [f"{d},{i},{i * i}" for i, d in enumerate(dates)]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def hours(n: int, start: datetime = datetime(2020, 1, 1)) -> list[datetime]:
    return [start + k * HOUR for k in range(n)]


def months(n: int, every: int = 1, day: int | None = 1) -> list[datetime]:
    """Calendar months from January 2000 on ``day`` (clamped to the month), or on month ends (None)."""
    out = []
    for k in range(0, n * every, every):
        year, month = 2000 + k // 12, k % 12 + 1
        last = calendar.monthrange(year, month)[1]
        out.append(datetime(year, month, last if day is None else min(day, last)))
    return out


def prep(path: Path, out: Path, **keys) -> dict:
    entry = {"kind": "csv", "path": str(path), "split": {"ratios": [0.6, 0.2, 0.2]}, **keys}
    return run_data(entry, out, name="d")


# -- header names ------------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "expected"), [
    ("date,OT,OT", r"line 1: the header names 'OT' twice, in columns 2 and 3 .*rename one of them"),
    ("date, OT ,OT", r"line 1: the header names 'OT' twice, in columns 2 and 3 \(names are compared without "
                     r"surrounding spaces\)"),
    ("date,a,date", r"line 1: the header names 'date' twice, in columns 1 and 3"),
    (",a,b", r"line 1: column 1 of the header has no name; name it or drop the column"),
    ("date,a,  ", r"line 1: column 3 of the header has no name"),
])
def test_duplicate_or_empty_header_names_are_refused(tmp_path: Path, header: str, expected: str) -> None:
    path = series_csv(tmp_path / "h.csv", hours(20), header)
    for keys in ({}, {"columns": ["OT"] if "OT" in header else ["a"]}):
        with pytest.raises(DataError, match=expected) as info:
            prep(path, tmp_path / "out", **keys)
        assert str(path) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_header_names_are_stripped_and_a_bom_is_not_a_name(tmp_path: Path) -> None:
    clean = prep(series_csv(tmp_path / "clean.csv", hours(20)), tmp_path / "a")
    spaced = tmp_path / "spaced.csv"
    spaced.write_text("\ufeff" + (tmp_path / "clean.csv").read_text().replace("date,a,b", " date , a,b "))
    assert prep(spaced, tmp_path / "b", columns=["a", "b"])["channels"] == clean["channels"] == ["a", "b"]
    assert pl.read_parquet(tmp_path / "a/series.parquet").equals(pl.read_parquet(tmp_path / "b/series.parquet"))


# -- blank lines -------------------------------------------------------------------------------

@pytest.mark.parametrize("tail", ["\n", "\n\n", "\n\n\n", "\n  \n\t\n", " \n"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_blank_lines_at_the_end_are_ignored(tmp_path: Path, tail: str, newline: str) -> None:
    text = series_csv(tmp_path / "clean.csv", hours(20)).read_text()
    expected = prep(tmp_path / "clean.csv", tmp_path / "a")
    path = tmp_path / "tail.csv"
    path.write_bytes((text + tail).replace("\n", newline).encode())
    meta = prep(path, tmp_path / "b")
    assert meta["n_rows"] == expected["n_rows"] == 20 and meta["inserted_rows"] == 0
    assert pl.read_parquet(tmp_path / "a/series.parquet").equals(pl.read_parquet(tmp_path / "b/series.parquet"))


@pytest.mark.parametrize("blank", ["", "   ", "\r"])
def test_a_blank_line_between_rows_is_refused_naming_it(tmp_path: Path, blank: str) -> None:
    lines = series_csv(tmp_path / "x.csv", hours(20)).read_text().split("\n")
    lines.insert(6, blank)
    (tmp_path / "x.csv").write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"x.csv: line 7 is blank; remove it"):
        prep(tmp_path / "x.csv", tmp_path / "out")


# -- steps and gaps ----------------------------------------------------------------------------

def gappy(n: int = 60) -> list[datetime]:
    """Hourly, with hours 20-29 (10 steps) and 40-41 (2 steps) missing."""
    return [t for k, t in enumerate(hours(n)) if not (20 <= k < 30 or 40 <= k < 42)]


def test_a_gap_is_refused_naming_line_expected_found_count_and_keys(tmp_path: Path) -> None:
    path = series_csv(tmp_path / "gap.csv", gappy())
    with pytest.raises(DataError, match=(
        r"gap.csv: column 'date' line 22: a gap in the 1h steps: expected 2020-01-01 20:00:00 after "
        r"'2020-01-01 19:00:00' \(line 21\), found '2020-01-02 06:00:00' \(10 steps missing\); 2 gaps, 12 steps "
        r"missing in all. Set datasets.d.gaps: fill to insert the missing rows \(forward-filled\), or "
        r"datasets.d.gaps: allow")):
        prep(path, tmp_path / "out")
    # at config time, before any job
    with pytest.raises(DataError, match="line 22: a gap"):
        check_series({"kind": "csv", "path": str(path)}, tmp_path, "datasets.d")


def test_gaps_fill_inserts_forward_filled_rows_and_counts_them_apart_from_filled_values(tmp_path: Path) -> None:
    dates = gappy()
    path = series_csv(tmp_path / "gap.csv", dates)
    path.write_text(path.read_text().replace(f"{dates[3]},3,", f"{dates[3]},,"))  # one missing value too
    meta = prep(path, tmp_path / "out", gaps="fill", missing="ffill")
    assert meta["inserted_rows"] == 12 and meta["filled_values"] == {"a": 1} and meta["n_rows"] == 60
    assert meta["step"] == {"text": "1h", "seconds": 3600.0} and meta["step_jumps"] == []
    frame = pl.read_parquet(tmp_path / "out/series.parquet")
    assert frame["date"].to_list() == hours(60)
    hours_read = [k for k in range(60) if not (20 <= k < 30 or 40 <= k < 42)]
    # an inserted row repeats the last row read before it; b is that row's number in the file, squared
    b = (np.searchsorted(hours_read, np.arange(60), side="right") - 1.0) ** 2
    train = b[: meta["borders"][0]]
    assert np.allclose(frame["b"].to_numpy(), (b - train.mean()) / train.std(), atol=1e-5)


def test_gaps_allow_keeps_the_rows_and_the_cycle_phase_follows_the_timestamps(tmp_path: Path) -> None:
    path = series_csv(tmp_path / "gap.csv", gappy())
    meta = prep(path, tmp_path / "out", gaps="allow")
    assert meta["n_rows"] == 48 and meta["inserted_rows"] == 0
    assert meta["step_jumps"] == [[20, 30], [30, 42]]
    series = PreparedSeries.load(tmp_path / "out")
    hour_of_day = torch.tensor([t.hour for t in gappy()])
    assert torch.equal(step_index(meta, 48) % 24, hour_of_day)
    x, _ = series.windows("train", 8, 2, cycle=24)[15]  # lookback rows 15-22: across the 10-hour gap
    assert torch.equal(x[:, -1].long(), hour_of_day[15:23])


def test_the_step_index_is_the_row_number_without_jumps() -> None:
    assert torch.equal(step_index({}, 5), torch.arange(5))
    assert torch.equal(step_index({"step_jumps": [[2, 7]]}, 5), torch.tensor([0, 1, 7, 8, 9]))


@pytest.mark.parametrize("gaps", ["error", "fill"])
def test_an_off_grid_time_is_refused_except_with_allow(tmp_path: Path, gaps: str) -> None:
    dates = [str(t) for t in hours(30)]
    dates[12] = "2020-01-01 11:30:00"
    path = series_csv(tmp_path / "off.csv", dates)
    with pytest.raises(DataError, match=r"off.csv: column 'date' line 14: '2020-01-01 11:30:00' is off the 1h grid "
                                        r".*expected 2020-01-01 12:00:00 after line 13\); 1 row off the grid: correct "
                                        r"or drop it, or set datasets.d.gaps: allow"):
        prep(path, tmp_path / "out", gaps=gaps)
    meta = prep(path, tmp_path / "out", gaps="allow")
    # 11:30 is 11 whole steps after midnight, and 13:00 comes 2 steps after it (12:00 is missing)
    assert meta["n_rows"] == 30 and meta["step_jumps"] == [[12, 11], [13, 13]]


def test_gaps_at_the_start_and_end_are_gaps(tmp_path: Path) -> None:
    dates = hours(40)
    series_csv(tmp_path / "start.csv", [dates[0], *dates[5:]])
    series_csv(tmp_path / "end.csv", [*dates[:30], dates[-1]])
    with pytest.raises(DataError, match=r"line 3: a gap .*\(4 steps missing\); 1 gap"):
        prep(tmp_path / "start.csv", tmp_path / "out")
    with pytest.raises(DataError, match=r"line 32: a gap .*\(9 steps missing\); 1 gap"):
        prep(tmp_path / "end.csv", tmp_path / "out")
    assert prep(tmp_path / "end.csv", tmp_path / "out", gaps="fill")["inserted_rows"] == 9


def test_gaps_is_checked_as_a_csv_key() -> None:
    from seqcomp.data import dataset_config

    with pytest.raises(ConfigError, match="datasets.d.*gaps: must be one of error, fill, allow, got 'skip'"):
        dataset_config("csv", {"path": "x.csv", "gaps": "skip"}, "datasets.d")


# -- calendar steps ----------------------------------------------------------------------------

@pytest.mark.parametrize(("dates", "text"), [
    (months(40), "1 month (day 1)"),
    (months(40, day=None), "1 month (month ends)"),
    (months(40, day=30), "1 month (day 30)"),
    (months(40, every=3), "3 months (day 1)"),
    (months(30, every=12), "12 months (day 1)"),
])
def test_monthly_quarterly_and_yearly_data_is_regular(tmp_path: Path, dates: list, text: str) -> None:
    meta = prep(series_csv(tmp_path / "m.csv", dates), tmp_path / "out")
    assert meta["step"]["text"] == text and meta["step_jumps"] == [] and meta["inserted_rows"] == 0


def test_a_monthly_gap_is_named_in_months_and_filled_on_the_calendar(tmp_path: Path) -> None:
    dates = months(40, day=None)
    path = series_csv(tmp_path / "m.csv", dates[:10] + dates[13:])
    with pytest.raises(DataError, match=r"line 12: a gap in the 1 month \(month ends\) steps: expected "
                                        r"2000-11-30 00:00:00 after '2000-10-31 00:00:00' .*\(3 steps missing\)"):
        prep(path, tmp_path / "out")
    assert prep(path, tmp_path / "out", gaps="fill")["inserted_rows"] == 3
    assert pl.read_parquet(tmp_path / "out/series.parquet")["date"].to_list() == dates
    off = series_csv(tmp_path / "off.csv", [*dates[:7], datetime(2000, 8, 15), *dates[8:]])
    with pytest.raises(DataError, match=r"line 9: '2000-08-15 00:00:00' is off the 1 month \(month ends\) grid"):
        prep(off, tmp_path / "out", gaps="fill")


# -- presets and the cycle ---------------------------------------------------------------------

def test_a_preset_refuses_a_series_of_another_step_or_with_gaps(tmp_path: Path) -> None:
    quarter = series_csv(tmp_path / "q.csv", [datetime(2020, 1, 1) + k * HOUR / 4 for k in range(15000)])
    with pytest.raises(ConfigError, match=r"datasets.d.split.preset: ett_hour counts its 12/4/4 months of 30 "
                                          r"days in rows of 1h, but the series steps by 15min; split it with "
                                          r"borders or ratios"):
        prep(quarter, tmp_path / "out", split={"preset": "ett_hour"})
    hourly = series_csv(tmp_path / "h.csv", hours(15000))
    with pytest.raises(ConfigError, match=r"ett_minute counts .* rows of 15min, but the series steps by 1h"):
        prep(hourly, tmp_path / "out", split={"preset": "ett_minute"})
    gap = series_csv(tmp_path / "g.csv", hours(15000)[:100] + hours(15000)[105:])
    with pytest.raises(ConfigError, match=r"ett_hour .* skips steps at 1 place \(gaps: allow\); set "
                                          r"datasets.d.gaps: fill"):
        prep(gap, tmp_path / "out", split={"preset": "ett_hour"}, gaps="allow")
    assert prep(gap, tmp_path / "out", split={"preset": "ett_hour"}, gaps="fill")["borders"] == [8640, 11520, 14400]


def test_cycle_phase_zero_is_named_and_a_shifted_day_warned() -> None:
    hourly = {"step": {"text": "1h", "seconds": 3600.0}}
    assert cycle_origin({**hourly, "start": "2016-07-01 00:00:00"}, 24) == ("00:00", None)
    origin, warning = cycle_origin({**hourly, "start": "2016-07-01 05:00:00"}, 24)
    assert origin == "05:00" and "phase 0 = 05:00, not 00:00" in warning
    assert cycle_origin({**hourly, "start": "2016-07-01 05:00:00"}, 7) == ("2016-07-01 05:00:00", None)
    week = cycle_origin({**hourly, "start": "2016-07-01 00:00:00"}, 168)  # a Friday
    assert week[0] == "Fri 00:00" and "not Mon 00:00" in week[1]
    monthly = {"step": {"text": "1 month (day 1)", "months": 1, "day": 1}, "start": "2000-03-01 00:00:00"}
    assert "phase 0 = Mar (month 3), not January" in cycle_origin(monthly, 12)[1]


def test_the_summary_notes_inserted_rows_per_dataset(tmp_path: Path) -> None:
    from seqcomp.summary.stage import data_notes

    histories = []
    for name, n in (("a", 0), ("b", 12)):
        history = tmp_path / "train" / name / "linear" / "L8-H2" / "seed0" / "history.csv"
        history.parent.mkdir(parents=True)
        history.with_name("run.json").write_text(json.dumps({"inserted_rows": n}))
        histories.append(str(history))
    assert data_notes(histories[:1]) == ""
    assert "(gaps: fill), values forward-filled: b 12 rows." in data_notes(histories)


def test_training_records_inserted_rows_and_names_a_shifted_cycle_phase(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    """A gap-filled series starting at 05:00: the dataset input and run.json count the inserted
    rows; a daily cycle's run.json names phase 0 and the job's log warns it is not midnight."""
    import logging

    from seqcomp.tracking import Run
    from seqcomp.train.stage import run_train

    dates = hours(300, start=datetime(2020, 1, 1, 5))
    path = series_csv(tmp_path / "gap.csv", dates[:100] + dates[104:])
    prep(path, tmp_path / "data", gaps="fill")
    spec = {"experiment": "seqcomp/t", "dataset": "d", "model": "linear_cycle", "kind": "linear",
            "params": {"cycle": 24}, "train": {}, "lookback": 24, "horizon": 8, "seed": 0}
    run = Run.start(tmp_path / "journal", spec["experiment"], "t", "train/linear_cycle", {})
    with caplog.at_level(logging.INFO, logger="seqcomp"):
        summary = run_train(spec, tmp_path / "data", tmp_path / "out", run)
    assert summary["inserted_rows"] == 4 and summary["cycle_phase0"] == "05:00"
    assert any("phase 0 = 05:00, not 00:00" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    (record,) = [json.loads(line) for line in run.path.read_text().splitlines() if '"op": "input"' in line]
    assert record["profile"]["inserted_rows"] == 4 and record["profile"]["filled_values"] == {}
