"""Atomic file output: nothing half-written is ever left under a final name.

Every writer goes through ``atomic_path``: it yields a temporary name in the same folder
(so the final rename is atomic on POSIX) and renames it into place only on success. The
temporary file is created with mode 0666 so the kernel applies the process umask (and any
default ACL), as a plain ``open`` would: ``tempfile.mkstemp`` would create it 0600 and the
rename would make every result private to its owner on a shared machine.

A full disk (or a used-up quota) surfaces from the writers in several forms: an ``OSError``
with errno ENOSPC/EDQUOT from Python, polars' "(os error 28)" in a ComputeError message,
SQLite's "database or disk is full". ``atomic_path`` turns any of them into ``DiskFull``,
which names the file and says what to do, and which the CLI prints as one line.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seqcomp.errors import SeqcompError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# how libraries that do not keep the errno say it (polars/arrow: "os error 28", SQLite)
_DISK_FULL_WORDS = ("no space left on device", "disk quota exceeded", "database or disk is full",
                    f"os error {errno.ENOSPC})", f"os error {errno.EDQUOT})")


class DiskFull(SeqcompError):
    """Writing ``path`` failed because its file system is full or the user's quota is used up."""

    def __init__(self, path: str | Path, quota: bool = False):
        self.path = Path(path)
        if quota:
            what = "Disk quota exceeded: your quota on the disk holding it is used up"
        else:
            what = f"No space left on device: the disk holding it is full ({_free(self.path)} free)"
        super().__init__(f"{path}: {what}; free space there, then rerun the same command")


def full_disk_note(folder: str | Path, below: int = 2**20) -> str | None:
    """``DiskFull``'s line for ``folder`` if its disk has less than ``below`` bytes free, else None.

    For the workflow's end: a job that hit the full disk may not have been able to write its
    error line into its log, which is on that disk too."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if os.path.exists(p)), Path("."))
    return str(DiskFull(folder)) if shutil.disk_usage(existing).free < below else None


def _free(path: Path) -> str:
    for folder in (path, *path.parents):
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        return f"{free / 2**20:.1f} MiB" if free >= 2**20 else f"{free} bytes"
    return "unknown"


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, newest first."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the disk or quota is full."""
    return any(getattr(e, "errno", None) in DISK_FULL_ERRNOS or any(w in str(e).lower() for w in _DISK_FULL_WORDS)
               for e in causes(exc))


def _quota(exc: BaseException) -> bool:
    return any(getattr(e, "errno", None) == errno.EDQUOT or "quota" in str(e).lower() for e in causes(exc))


@contextmanager
def names_full_disk(path: str | Path) -> Iterator[None]:
    """Re-raise a full-disk error of the body as ``DiskFull(path)``; other errors pass unchanged."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as exc:
        if disk_full(exc):
            raise DiskFull(path, quota=_quota(exc)) from exc
        raise


def _create_beside(path: Path) -> Path:
    """Create and return a new empty file ``.<name>.<random>.tmp`` in ``path``'s folder."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it to ``path``, on failure delete it.

    A full disk raises ``DiskFull(path)`` once the temp file is gone (its space is free again,
    so the job's error line still fits in its log)."""
    path = Path(path)
    with names_full_disk(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _create_beside(path)
        try:
            yield tmp_path
            os.replace(tmp_path, path)
        finally:
            tmp_path.unlink(missing_ok=True)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def check_writable(folder: str | Path, what: str = "the results folder") -> None:
    """Raise a one-line SeqcompError unless this user can create files in ``folder`` (or, if it
    does not exist yet, in the nearest existing folder above it, where it would be created).

    Checked before any job runs, so that a read-only or another user's folder fails once, up
    front, instead of in every job. ``os.access`` also sees a read-only mount (root included).
    """
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if os.path.exists(p)), Path("."))
    missing = [word for flag, word in ((os.W_OK, "write"), (os.X_OK, "search (execute)"))
               if not os.access(existing, flag)]
    if not missing:
        return
    where = folder if existing == folder else f"{folder} (to be created in {existing})"
    reason = f"no {' and '.join(missing)} permission for you ({_user(os.geteuid())}) on {existing}"
    try:
        st = existing.stat()
        if os.statvfs(existing).f_flag & os.ST_RDONLY:
            reason = f"{existing} is on a read-only file system"
        elif st.st_uid != os.geteuid():
            reason += f", owned by {_user(st.st_uid)} (mode {st.st_mode & 0o7777:o})"
    except OSError:
        pass
    raise SeqcompError(f"{where}: {what} is not writable: {reason}; make it writable or run from another "
                       "working directory")


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
