"""Atomic file output: nothing half-written is ever left under a final name.

Every writer goes through ``atomic_path``: it yields a temporary name in the same folder
(so the final rename is atomic on POSIX) and renames it into place only on success. The
temporary file is created with mode 0666 so the kernel applies the process umask (and any
default ACL), as a plain ``open`` would: ``tempfile.mkstemp`` would create it 0600 and the
rename would make every result private to its owner on a shared machine.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
    """Yield a temp path beside ``path``; on success rename it to ``path``, on failure delete it."""
    path = Path(path)
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
