"""Atomic writes: all or nothing under the final name, with the permissions a plain open gives."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from seqcomp.io import atomic_path, read_json, write_json


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    """Set the process umask for one test, restoring the old one after it."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_keep_the_umask_permissions(tmp_path: Path, umask, mask: int, expected: int) -> None:
    umask(mask)
    write_json(tmp_path / "results" / "meta.json", {"a": 1})
    with atomic_path(tmp_path / "results" / "model.pt") as tmp:
        tmp.write_bytes(b"weights")
    assert mode(tmp_path / "results" / "meta.json") == expected
    assert mode(tmp_path / "results" / "model.pt") == expected
    # and an existing file is replaced with the mode of the new one, not kept private
    (tmp_path / "results" / "meta.json").chmod(0o600)
    write_json(tmp_path / "results" / "meta.json", {"a": 2})
    assert mode(tmp_path / "results" / "meta.json") == expected


def test_plots_saved_through_atomic_path_are_readable(tmp_path: Path, umask) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    umask(0o022)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    with atomic_path(tmp_path / "plots" / "pareto.png") as tmp:
        fig.savefig(tmp, format="png")  # as seqcomp.report saves its plots
    plt.close(fig)
    assert mode(tmp_path / "plots" / "pareto.png") == 0o644


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    write_json(tmp_path / "m.json", {"old": True})
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "m.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer crashed")
    assert read_json(tmp_path / "m.json") == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
