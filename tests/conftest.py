"""Shared fixtures: the project root, the ETTh1 file, a tiny prepared dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT.parent / "shared" / "data" / "ett" / "ETTh1.csv"


def tiny_entry(n_steps: int = 400, channels: int = 3) -> dict:
    return {"kind": "synthetic", "n_steps": n_steps, "channels": channels, "seed": 3, "split": {"ratios": [0.6, 0.2, 0.2]}}


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    from seqcomp.data.prepare import prepare

    out = tmp_path / "data"
    prepare(tiny_entry(), out, name="tiny")
    return out


@pytest.fixture
def etth1() -> Path:
    if not ETTH1.is_file():
        pytest.skip(f"{ETTH1} not present")
    return ETTH1
