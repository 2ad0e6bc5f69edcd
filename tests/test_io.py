"""Atomic writes: all or nothing under the final name, with the permissions a plain open gives; a
full disk or an unwritable folder said in one line that names the file or folder."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import fill, tmpfs
from seqcomp.errors import SeqcompError
from seqcomp.io import DiskFull, atomic_path, check_writable, disk_full, read_json, write_json


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


# A full disk, as each writer reports it: Python (errno), polars (its message), SQLite (its message),
# torch by file name (a RuntimeError whose cause is only known from a retry through a Python file).
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("exc", [
    ENOSPC, OSError(errno.EDQUOT, "Disk quota exceeded"),
    RuntimeError("parquet: File out of specification: underlying IO error: No space left on device (os error 28)"),
    RuntimeError("(sqlite3.OperationalError) database or disk is full\n[SQL: INSERT ...]"),
])
def test_every_form_of_a_full_disk_is_recognised(exc: Exception) -> None:
    try:
        try:
            raise exc
        except Exception as inner:
            raise RuntimeError("basic_ios::clear: iostream error") from inner
    except RuntimeError as outer:
        assert disk_full(outer)
    assert not disk_full(OSError(errno.EACCES, "Permission denied")) and not disk_full(ValueError("os error 2"))


def test_a_full_disk_names_the_file_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    write_json(tmp_path / "m.json", {"old": True})

    def full(self: Path, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        self.open("w").write("half")  # what got in before the disk filled up
        raise ENOSPC

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(DiskFull) as caught:
        write_json(tmp_path / "m.json", {"new": True})
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'm.json'}: No space left on device: the disk holding it is full (")
    assert message.endswith("free space there, then rerun the same command") and "\n" not in message
    assert read_json(tmp_path / "m.json") == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_a_model_that_does_not_fit_is_named_though_torch_hides_the_cause(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    torch = pytest.importorskip("torch")
    from seqcomp.artifacts import save_torch

    def save(obj, f) -> None:  # noqa: ANN001 - torch's C++ writer by name, Python's through a file
        if isinstance(f, (str, os.PathLike)):
            raise RuntimeError("basic_ios::clear: iostream error")
        f.write(b"PK")
        raise ENOSPC

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(DiskFull, match=r"model\.pt: No space left on device"):
        save_torch({"w": 1}, tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(torch, "save", lambda obj, f: (_ for _ in ()).throw(RuntimeError("a bug")) if isinstance(
        f, (str, os.PathLike)) else None)
    with pytest.raises(RuntimeError, match="a bug"):  # the retry fits: the first error was not the disk
        save_torch({"w": 1}, tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_folder_is_named_with_the_missing_permission(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    (tmp_path / "results").mkdir()
    check_writable(tmp_path / "results" / "smoke")  # writable: nothing to say
    denied = {os.W_OK}
    monkeypatch.setattr(os, "access", lambda path, mode: mode not in denied)
    with pytest.raises(SeqcompError) as caught:
        check_writable(tmp_path / "results" / "smoke")
    assert str(caught.value).startswith(f"{tmp_path / 'results' / 'smoke'} (to be created in {tmp_path / 'results'}): "
                                        "the results folder is not writable: no write permission for you")
    denied = {os.W_OK, os.X_OK}
    with pytest.raises(SeqcompError, match=r"no write and search \(execute\) permission"):
        check_writable(tmp_path / "results")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted after the test."""
    with tmpfs(tmp_path / "disk", "size=1m") as disk:
        yield disk


def test_a_read_only_folder_is_named_for_root_too(small_disk: Path) -> None:
    (small_disk / "smoke").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(SeqcompError, match=r"the results folder is not writable: .* is on a read-only file system"):
        check_writable(small_disk / "smoke")


def test_a_training_job_on_a_full_disk_says_so_in_one_line(tiny_data: Path, small_disk: Path) -> None:
    """The real thing: torch, Lightning's checkpoints, polars and the journal on a full tmpfs."""
    spec = {"experiment": "seqcomp/t", "dataset": "tiny", "model": "dlinear", "kind": "dlinear", "params": {},
            "train": {"max_epochs": 1, "patience": 1, "batch_size": 32, "lr": 0.01, "weight_decay": 0.0,
                      "lr_decay": 1.0, "grad_clip": 1.0, "loss": "mse", "limit_train_batches": 2,
                      "accelerator": "cpu", "precision": "auto"}, "lookback": 24, "horizon": 8, "seed": 0}
    for leave in (0, 24 * 1024):  # nothing left (the journal's first line), a little left (the checkpoints)
        fill(small_disk, leave)
        out = small_disk / "train"
        done = subprocess.run([sys.executable, "-m", "seqcomp", "train", "--spec", json.dumps(spec), "--data",
                               str(tiny_data), "--out", str(out), "--journal", str(small_disk / "journal")],
                              capture_output=True, text=True, timeout=300)
        errors = [line for line in done.stderr.splitlines() if "seqcomp: error:" in line]
        assert done.returncode == 2 and len(errors) == 1, done.stderr[-3000:]
        assert f"{small_disk}/" in errors[0] and "No space left on device" in errors[0], errors
        assert "Traceback" not in done.stderr
        assert not [p for p in (out / "model.pt", out / "history.csv", out / "run.json") if p.exists()]
        assert not [p for p in small_disk.rglob("*.jsonl") if p.stat().st_size == 0], "an empty journal"
        assert not list(small_disk.rglob(".*.tmp"))
        (small_disk / "filler").unlink()
