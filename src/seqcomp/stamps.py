"""Code stamps: the package modules a job ran, hashed so that only a change of code counts.

A job's process records the ``seqcomp`` modules it loaded (:func:`record_job`, called by the job
shell as the job ends) in ``.seqcomp-modules.json`` in its output folder, as a compiler writes
a depfile (``gcc -MD``) of what a build read. The next DAG build stamps the job from that record;
a job with no record (it never ran) from :func:`import_closure`, a static walk of the package's
imports that finds at least what the job will load. A module counts by :func:`ast_digest`, the
hash of its syntax tree without docstrings: a comment, a reflowed docstring or a reformatting
changes no stamp and reruns nothing (as ccache hashes preprocessed input).

Stdlib only and no import of the package's modules: the Snakefile calls this for every job of
the DAG, and a no-op run must not import torch (seconds).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

PKG = Path(__file__).resolve().parent
RECORD_NAME = ".seqcomp-modules.json"  # in a job's output folder; no rule reads it as an input
# A module named in a string (a lazy import: ``importlib.import_module("seqcomp.x.y")``, a
# ``_LAZY`` table). Registry entries ("seqcomp.models.lstm:LSTMForecaster") have a colon and are
# left to the caller, which adds only the job's own kinds.
_MODULE_NAME = re.compile(r"seqcomp(\.\w+)*")


def module_file(name: str, pkg: Path = PKG) -> Path | None:
    """The source file of package module ``name`` (``seqcomp.models.lstm``), or None if there is none."""
    parts = name.split(".")
    if parts[0] != "seqcomp":
        return None
    base = pkg.joinpath(*parts[1:])
    for path in ((base.with_suffix(".py"),) if parts[1:] else ()) + (base / "__init__.py",):
        if path.is_file():
            return path
    return None


def ast_digest(path: Path) -> str:
    """sha256 of the module's syntax tree without docstrings, positions or comments."""
    stat = path.stat()
    return _ast_digest(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=None)
def _ast_digest(path: Path, mtime_ns: int, size: int) -> str:
    """Once per file version per DAG build (mtime and size make the cache key)."""
    source = path.read_bytes()
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError:  # a module being edited: its bytes; the job that loads it fails with the error
        return hashlib.sha256(source).hexdigest()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and _has_docstring(node):
            node.body = node.body[1:]
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def _has_docstring(node: ast.AST) -> bool:
    first = node.body[0] if node.body else None
    return isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)


def imports_of(name: str, pkg: Path = PKG, top_level: bool = False) -> set[str]:
    """Package modules that module ``name`` may import: ``import``, ``from x import y`` (y a module
    or a name), relative imports, imports inside functions and module names in strings.
    ``top_level``: only its module-level import statements (what importing it loads)."""
    path = module_file(name, pkg)
    if path is None:
        return set()
    stat = path.stat()
    return set(_imports_of(name, path, stat.st_mtime_ns, stat.st_size, top_level, pkg))


@lru_cache(maxsize=None)
def _imports_of(name: str, path: Path, mtime_ns: int, size: int, top_level: bool, pkg: Path) -> frozenset[str]:
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from ..y import z
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # kept below where y is a module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.fullmatch(node.value):
            found.add(node.value)
    return frozenset(m for m in found if module_file(m, pkg) is not None)


def import_closure(roots: Iterable[str], pkg: Path = PKG, leaves: Iterable[str] = ()) -> set[str]:
    """``roots`` and every package module they import, transitively, with their parent packages
    (importing ``seqcomp.models.lstm`` runs ``seqcomp/__init__.py`` and ``seqcomp/models/__init__.py``).
    ``leaves`` are kept but not followed (their imports are the caller's business)."""
    found: set[str] = set()
    todo, leaves = list(roots), set(leaves)
    while todo:
        name = todo.pop()
        if name in found or module_file(name, pkg) is None:
            continue
        found.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        if name not in leaves:
            todo += imports_of(name, pkg)
    return found


def record_job(folder: str | Path) -> None:
    """Write the package modules this process has loaded into ``folder``'s record, atomically.

    Called by the job shell after the job's work: what it imported is then what it ran. This
    module itself is left out (it is loaded to write the record and changes no result).
    """
    from seqcomp.io import atomic_path

    names = {getattr(m, "__spec__", None) and m.__spec__.name for m in list(sys.modules.values())}
    modules = sorted(n for n in names if n and (n == "seqcomp" or n.startswith("seqcomp.")) and n != __name__)
    with atomic_path(Path(folder) / RECORD_NAME) as tmp:
        tmp.write_text(json.dumps({"modules": modules}, indent=1) + "\n")


def recorded_modules(folder: str | Path) -> frozenset[str] | None:
    """The modules recorded by the last job that finished in ``folder``; None if none did.

    A record that does not parse (written by hand) counts as none: the job is then stamped from
    the static walk, which finds at least what it loads.
    """
    try:
        modules = json.loads((Path(folder) / RECORD_NAME).read_text())["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return frozenset(m for m in modules if isinstance(m, str)) if isinstance(modules, list) else None


def write_stamp(stamp: Path, modules: frozenset[str], pkg: Path = PKG) -> None:
    """Make ``stamp`` hold the digests of ``modules``; rewritten (atomically) only when they change.

    A rewritten stamp gets the newest module file's mtime: a real edit makes it newer than the
    job's outputs (the job reruns), undoing an edit (content and mtime, as ``git checkout``
    does) leaves nothing to do, and a job whose record replaces its static list reruns
    nothing. A recorded module that no longer exists dates the stamp now: the job reruns.
    """
    content, newest = _stamp_content(modules, pkg)
    if stamp.is_file() and stamp.read_text() == content:
        return
    from seqcomp.io import atomic_path

    with atomic_path(stamp) as tmp:
        tmp.write_text(content)
    mtime = newest if newest is not None else time.time_ns()
    os.utime(stamp, ns=(mtime, mtime))


@lru_cache(maxsize=None)
def _stamp_content(modules: frozenset[str], pkg: Path) -> tuple[str, int | None]:
    """(the stamp's text: one ``<digest> <module>`` line per module, the newest file's mtime or
    None when a module is missing), once per distinct module set per DAG build: a grid's jobs
    share a few sets, and hashing them per job made a 2,400-job DAG slow to build."""
    lines, newest, missing = [], 0, False
    for name in sorted(modules):
        path = module_file(name, pkg)
        if path is None:
            lines.append(f"missing {name}\n")
            missing = True
            continue
        lines.append(f"{ast_digest(path)} {name}\n")
        newest = max(newest, path.stat().st_mtime_ns)
    return "".join(lines), None if missing else newest
