"""Fuzz: seeded random corruptions of a valid CSV get a clean DataError or a clean result.

Never a traceback from inside polars or torch: every failure must be our DataError, whose
message names the file.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from seqcomp.data.prepare import prepare
from seqcomp.errors import DataError

N_CASES = 240


def valid_csv(rng: random.Random, rows: int = 40) -> str:
    lines = ["date,a,b,c"]
    for h in range(rows):
        lines.append(f"2021-03-{1 + h // 24:02d} {h % 24:02d}:00:00," + ",".join(f"{rng.gauss(0, 1):.4f}" for _ in range(3)))
    return "\n".join(lines) + "\n"


def corrupt(text: str, rng: random.Random) -> bytes:
    lines = text.splitlines()
    kind = rng.randrange(10)
    i = rng.randrange(1, len(lines))
    if kind == 0:  # truncated file, possibly mid-line
        return text[: rng.randrange(len(text))].encode()
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
        return ("\n".join(lines) + "\n").encode("utf-16")
    elif kind == 6:  # empty or whitespace-only
        return rng.choice([b"", b"\n\n", b"   "])
    elif kind == 7:  # binary garbage
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    elif kind == 8:  # duplicated / shuffled rows (timestamps out of order)
        j = rng.randrange(1, len(lines))
        lines.insert(j, lines[i])
    else:  # an extra column in one row
        lines[i] += ",7.0"
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("seed", range(N_CASES))
def test_corrupted_csv_fails_cleanly_or_parses(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / f"case{seed}.csv"
    path.write_bytes(corrupt(valid_csv(rng), rng))
    entry = {"kind": "csv", "path": str(path), "split": {"ratios": [0.5, 0.2, 0.3]}}
    try:
        meta = prepare(entry, tmp_path / "out", name="fuzz")
    except DataError as exc:
        assert str(path) in str(exc) or "datasets.fuzz" in str(exc), str(exc)
        assert not (tmp_path / "out" / "series.parquet").exists()
        return
    frame = pl.read_parquet(tmp_path / "out" / "series.parquet")
    values = frame.select(meta["channels"]).to_numpy()
    assert np.isfinite(values).all() and frame.height == meta["n_rows"]
    assert frame["date"].is_sorted() and frame["date"].n_unique() == frame.height
