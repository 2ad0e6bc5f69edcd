"""Shared fixtures: the project root, the ETTh1 file, a tiny prepared dataset, a small disk."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ETTH1 = ROOT.parent / "shared" / "data" / "ett" / "ETTh1.csv"


def tiny_entry(n_steps: int = 400, channels: int = 3) -> dict:
    return {"kind": "synthetic", "n_steps": n_steps, "channels": channels, "seed": 3, "split": {"ratios": [0.6, 0.2, 0.2]}}


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    from seqcomp.data.stage import run_data

    out = tmp_path / "data"
    run_data(tiny_entry(), out, name="tiny")
    return out


@pytest.fixture
def etth1() -> Path:
    if not ETTH1.is_file():
        pytest.skip(f"{ETTH1} not present")
    return ETTH1


@contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``folder`` while the body runs (a small or read-only disk, for real).
    Root only (the tests run as root here and in CI); the test is skipped where mounting is not
    permitted."""
    folder.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until ``leave`` bytes are free."""
    free = shutil.disk_usage(disk).free
    (disk / "filler").write_bytes(b"x" * max(free - leave, 0))
