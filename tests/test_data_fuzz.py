"""Fuzz: seeded random corruptions of a valid CSV get a clean error or a clean result;
seeded lossless rewrites of one (date format, separator, compression) read back the same; and
seeded edits of its layout (header spaces and duplicates, blank lines, gaps, off-grid times) of
series at steps from 15 minutes to a quarter read back the same or are refused naming the line
and the key that fixes them.

Never a traceback from inside polars or torch: every failure must be our error, whose message
names the file (or, for a split the data cannot fill, the dataset's config key).
"""

from __future__ import annotations

import bz2
import calendar
import gzip
import lzma
import random
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seqcomp.data.stage import run_data
from seqcomp.errors import DataError, SeqcompError

N_CASES = 320
N_REWRITES = 120


def valid_csv(rng: random.Random, rows: int = 40) -> str:
    lines = ["date,a,b,c"]
    for h in range(rows):
        lines.append(f"2021-03-{1 + h // 24:02d} {h % 24:02d}:00:00," + ",".join(f"{rng.gauss(0, 1):.4f}" for _ in range(3)))
    return "\n".join(lines) + "\n"


# What the error must name for the corruptions whose cause is known (all of them fail but 12 intact).
CAUSES = {
    10: r"column '[abc]' line \d+: '[-.0-9e]+' is beyond the float32 range",
    11: r"datasets.fuzz.split: the series has [123] rows?: .* at least \d+ rows",
    12: r"is (gzip|bzip2|xz)-compressed but cannot be decompressed",
    13: r"is a directory, not a CSV file \(datasets.fuzz.path\)",
}


def corrupt(text: str, rng: random.Random) -> tuple[int, bytes | None]:
    """(kind of corruption, corrupted contents); contents None: the path is a directory."""
    lines = text.splitlines()
    kind = rng.randrange(14)
    i = rng.randrange(1, len(lines))
    if kind == 0:  # truncated file, possibly mid-line
        return kind, text[: rng.randrange(len(text))].encode()
    if kind == 1:  # a row with a missing field
        lines[i] = lines[i].rsplit(",", 1)[0]
    elif kind == 2:  # swapped columns in the header
        head = lines[0].split(",")
        a, b = rng.sample(range(len(head)), 2)
        head[a], head[b] = head[b], head[a]
        lines[0] = ",".join(head)
    elif kind == 3:  # text in a number
        cells = lines[i].split(",")
        cells[rng.randrange(1, len(cells))] = rng.choice(["abc", "1,2", "--", "1e", "NaN", "inf", ""])
        lines[i] = ",".join(cells)
    elif kind == 4:  # stray quote
        pos = rng.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:pos] + '"' + lines[i][pos:]
    elif kind == 5:  # wrong encoding
        return kind, ("\n".join(lines) + "\n").encode("utf-16")
    elif kind == 6:  # empty or whitespace-only
        return kind, rng.choice([b"", b"\n\n", b"   "])
    elif kind == 7:  # binary garbage
        return kind, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    elif kind == 8:  # duplicated / shuffled rows (timestamps out of order)
        j = rng.randrange(1, len(lines))
        lines.insert(j, lines[i])
    elif kind == 9:  # an extra column in one row
        lines[i] += ",7.0"
    elif kind == 10:  # finite as read, past float32 (inf once stored)
        cells = lines[i].split(",")
        cells[rng.randrange(1, len(cells))] = rng.choice(["1e39", "-1e308", "3.5e38", "1e300"])
        lines[i] = ",".join(cells)
    elif kind == 11:  # one data row, or a few
        lines = lines[: rng.choice([2, 2, 3, 4])]
    elif kind == 12:  # compressed, intact or cut short
        packed = rng.choice([gzip.compress, bz2.compress, lzma.compress])(text.encode())
        return kind, packed if rng.random() < 0.5 else packed[: rng.randrange(6, len(packed))]
    else:  # a path that is a directory
        return kind, None
    return kind, ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("seed", range(N_CASES))
def test_corrupted_csv_fails_cleanly_or_parses(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / f"case{seed}.csv"
    kind, data = corrupt(valid_csv(rng), rng)
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    entry = {"kind": "csv", "path": str(path), "split": {"ratios": [0.5, 0.2, 0.3]}}
    try:
        meta = run_data(entry, tmp_path / "out", name="fuzz")
    except SeqcompError as exc:
        assert str(path) in str(exc) or "datasets.fuzz" in str(exc), str(exc)
        assert kind not in CAUSES or re.search(CAUSES[kind], str(exc)), str(exc)
        assert not (tmp_path / "out" / "series.parquet").exists()
        return
    assert kind in range(10) or kind == 12, f"corruption {kind} was read as data"
    frame = pl.read_parquet(tmp_path / "out" / "series.parquet")
    values = frame.select(meta["channels"]).to_numpy()
    assert np.isfinite(values).all() and frame.height == meta["n_rows"]
    assert frame["date"].is_sorted() and frame["date"].n_unique() == frame.height


DAY_OR_MONTH_FIRST = ["%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%m-%d-%y %H:%M", "%d/%m/%YT%H:%M"]
YEAR_FIRST = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y/%m/%d %H:%M", "%Y-%m-%d %H:%M:%S.%f"]
COMPRESS = {"none": lambda b: b, "gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}


def dated_series(rng: random.Random) -> tuple[list[datetime], list[tuple[str, str]]]:
    start = datetime(rng.randrange(2016, 2023), rng.randrange(1, 13), rng.randrange(1, 29), rng.randrange(24))
    step = timedelta(minutes=rng.choice([15, 60, 60 * 24]))
    n = rng.randrange(30, 90)
    return [start + k * step for k in range(n)], [(f"{rng.gauss(0, 1):.4f}", f"{rng.gauss(5, 2):.4f}") for _ in range(n)]


def csv_text(dates: list[datetime], values: list[tuple[str, str]], fmt: str, sep: str) -> str:
    lines = [sep.join(["date", "a", "b"])] + [sep.join([d.strftime(fmt), *v]) for d, v in zip(dates, values)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("seed", range(N_REWRITES))
def test_rewritten_csv_reads_the_same_or_asks_for_the_date_format(tmp_path: Path, seed: int) -> None:
    """Another date format, separator or compression: the same series, or (only for dates both
    day-first and month-first read into different times) a refusal naming date_format."""
    rng = random.Random(seed)
    fmt = rng.choice(DAY_OR_MONTH_FIRST + YEAR_FIRST)
    sep, packing = rng.choice([",", ";", "\t", "|"]), rng.choice(list(COMPRESS))
    dates, values = dated_series(rng)
    reference, path = tmp_path / "reference.csv", tmp_path / "rewritten.csv"
    reference.write_text(csv_text(dates, values, "%Y-%m-%d %H:%M:%S", ","))
    path.write_bytes(COMPRESS[packing](csv_text(dates, values, fmt, sep).encode()))

    def read(csv: Path, **keys) -> pl.DataFrame:
        out = tmp_path / f"out-{csv.stem}-{len(keys)}"
        run_data({"kind": "csv", "path": str(csv), "split": {"ratios": [0.5, 0.2, 0.3]}, **keys}, out, name="fuzz")
        return pl.read_parquet(out / "series.parquet")

    expected = read(reference)
    ambiguous = fmt in DAY_OR_MONTH_FIRST and all(d.day <= 12 for d in dates) and any(d.day != d.month for d in dates)
    if ambiguous:
        with pytest.raises(DataError, match=r"column 'date': ambiguous dates: .*datasets.fuzz.date_format"):
            read(path)
        assert read(path, date_format=fmt).equals(expected)
    else:
        assert read(path).equals(expected), (fmt, sep, packing)


N_EDITS = 160
STEPS = ["15min", "1h", "1d", "month", "month-end", "quarter"]


def regular_dates(rng: random.Random, step: str, n: int) -> list[datetime]:
    """``n`` timestamps at ``step`` from a random start on that step's grid."""
    if step in ("15min", "1h", "1d"):
        delta = {"15min": timedelta(minutes=15), "1h": timedelta(hours=1), "1d": timedelta(days=1)}[step]
        start = datetime(rng.randrange(2016, 2023), rng.randrange(1, 13), rng.randrange(1, 29), rng.randrange(24))
        return [start + k * delta for k in range(n)]
    every, first = (3 if step == "quarter" else 1), rng.randrange(2000 * 12, 2020 * 12)
    out = []
    for k in range(n):
        year, month = divmod(first + k * every, 12)
        last = calendar.monthrange(year, month + 1)[1]
        out.append(datetime(year, month + 1, last if step == "month-end" else 1))
    return out


def edit(rng: random.Random, dates: list[datetime], values: list[tuple[str, str]], step: str) -> tuple[str, str, str]:
    """(kind of edit, the edited CSV text, a regular expression its refusal must match; "" if read back the same)."""
    lines = csv_text(dates, values, "%Y-%m-%d %H:%M:%S", ",").split("\n")[:-1]  # header + one line per row
    n, kind = len(dates), rng.choice(["dup_header", "spaced_header", "blank_tail", "blank_middle", "gap", "gaps",
                                      "gap_at_start", "gap_at_end", "off_grid"])
    newline = rng.choice(["\n", "\r\n"])
    if kind == "dup_header":
        name, other = rng.sample(["date", "a", "b"], 2)
        names = ["date", "a", "b"]
        names[names.index(other)] = rng.choice(["", " ", "  "]) + name + rng.choice(["", " "])
        lines[0] = ",".join(names)
        expected = rf"line 1: the header names '{name}' twice, in columns \d and \d .*rename one of them"
    elif kind == "spaced_header":
        pads = ["", " ", "  "]
        lines[0] = ",".join(rng.choice(pads) + name + rng.choice(pads) for name in ("date", "a", "b"))
        expected = ""
    elif kind == "blank_tail":
        lines += [rng.choice(["", " ", "\t", "  "]) for _ in range(rng.randrange(1, 4))]
        expected = ""
    elif kind == "blank_middle":
        i = rng.randrange(2, n)
        lines.insert(i, rng.choice(["", " ", "\t"]))
        expected = rf"line {i + 1} is blank; remove it"
    elif kind == "off_grid":  # a time between two grid points (a fraction of the step, within its interval)
        i = rng.randrange(1, n - 1)
        shift = {"15min": timedelta(minutes=5), "1h": timedelta(minutes=30), "1d": timedelta(hours=6)}.get(
            step, timedelta(days=-3 if step == "month-end" else 3))
        lines[i + 1] = csv_text([dates[i] + shift], [values[i]], "%Y-%m-%d %H:%M:%S", ",").split("\n")[1]
        expected = rf"line {i + 2}: '[-0-9: ]+' is off the .* grid .*datasets.fuzz.gaps: allow"
    else:  # rows removed: one run, several, or right after the first row or before the last
        runs = {"gap": 1, "gaps": rng.randrange(2, 5), "gap_at_start": 1, "gap_at_end": 1}[kind]
        drop: set[int] = set()
        for _ in range(runs):
            length = rng.randrange(1, 6)
            begin = {"gap_at_start": 1, "gap_at_end": n - 1 - length}.get(kind, rng.randrange(2, n - 1 - length))
            drop |= set(range(begin, begin + length))
        lines = [line for k, line in enumerate(lines) if k - 1 not in drop]
        expected = r"line \d+: a gap in the .* steps: expected .*, found .*gaps: fill .*datasets.fuzz.gaps: allow"
    return kind, newline.join(lines) + newline, expected


@pytest.mark.parametrize("seed", range(N_EDITS))
def test_edited_csv_reads_back_the_same_or_is_refused_naming_line_and_key(tmp_path: Path, seed: int) -> None:
    """Header spaces and blank lines at the end read back as the clean file; a duplicate header,
    a blank line between rows, a gap or an off-grid time is refused naming the file, the line and
    the fix (for gaps: the gaps key); with gaps: fill a gappy series reads back as the clean
    file's dates, with gaps: allow as the rows it has."""
    rng = random.Random(seed)
    step = rng.choice(STEPS)
    dates = regular_dates(rng, step, rng.randrange(30, 70))
    values = [(f"{rng.gauss(0, 1):.4f}", f"{rng.gauss(5, 2):.4f}") for _ in dates]
    clean, path = tmp_path / "clean.csv", tmp_path / "edited.csv"
    clean.write_text(csv_text(dates, values, "%Y-%m-%d %H:%M:%S", ","))
    kind, text, expected = edit(rng, dates, values, step)
    path.write_bytes(text.encode())

    def read(csv: Path, **keys) -> tuple[dict, pl.DataFrame]:
        out = tmp_path / f"out-{csv.stem}-{'-'.join(keys.values())}"
        entry = {"kind": "csv", "path": str(csv), "split": {"ratios": [0.5, 0.2, 0.3]}, **keys}
        meta = run_data(entry, out, name="fuzz")
        return meta, pl.read_parquet(out / "series.parquet")

    reference, frame = read(clean)
    assert reference["step_jumps"] == [] and reference["inserted_rows"] == 0
    if not expected:
        meta, edited = read(path)
        assert edited.equals(frame) and meta["channels"] == reference["channels"], (kind, step)
        return
    with pytest.raises(DataError, match=expected) as info:
        read(path)
    assert str(path) in str(info.value), str(info.value)
    if kind.startswith("gap"):
        rows_kept = len(text.strip().splitlines()) - 1
        meta, filled = read(path, gaps="fill")
        assert filled["date"].equals(frame["date"]) and meta["inserted_rows"] == len(dates) - rows_kept
        meta, kept = read(path, gaps="allow")
        assert kept.height == rows_kept and meta["inserted_rows"] == 0 and meta["step_jumps"]
    elif kind == "off_grid":
        with pytest.raises(DataError, match=expected):
            read(path, gaps="fill")
        assert read(path, gaps="allow")[1].height == len(dates)
