"""Code stamps: the package modules a job ran, hashed so that only a change of code counts.

A job's process records the ``seqcomp`` modules it loaded and their digests (:func:`record_job`,
called by the job shell as the job ends) in ``.seqcomp-modules.json`` in its output folder, as a
compiler writes a depfile (``gcc -MD``) of what a build read. The next DAG build stamps the job
from that record, newer than its outputs exactly when a module's digest differs from the one it
ran (:func:`write_stamp`); a job with no record (it never ran) from :func:`import_closure`, a
static walk of the package's imports that finds at least what the job will load. A module counts
by :func:`ast_digest`, the hash of its syntax tree without docstrings: a comment, a reflowed
docstring or a reformatting changes no stamp and reruns nothing (as ccache hashes preprocessed input).

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


def ast_digest(path: Path, with_entries: bool = False) -> str:
    """sha256 of the module's syntax tree without docstrings, positions or comments, and without
    the entries of its plug-in registries (``Registry(kind, {name: "module:Attr"})``): adding a
    model or a pass reruns no job of the others. A job records the entries it resolved apart
    (:func:`record_job`), so a change of its own entry still reruns it. ``with_entries``: the
    digest as records written before entries were left out hold it (:func:`write_stamp`)."""
    stat = path.stat()
    return _ast_digest(path, stat.st_mtime_ns, stat.st_size, with_entries)


@lru_cache(maxsize=None)
def _ast_digest(path: Path, mtime_ns: int, size: int, with_entries: bool) -> str:
    """Once per file version per DAG build (mtime and size make the cache key)."""
    source = path.read_bytes()
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError:  # a module being edited: its bytes; the job that loads it fails with the error
        return hashlib.sha256(source).hexdigest()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and _has_docstring(node):
            node.body = node.body[1:]
        if not with_entries and (table := _registry_table(node)) is not None:
            table.keys, table.values = [], []
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def _registry_table(node: ast.AST) -> ast.Dict | None:
    """The ``{name: "module:Attr"}`` literal of a ``Registry(kind, {...})`` call, else None."""
    if not (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Registry"):
        return None
    return next((arg for arg in node.args if isinstance(arg, ast.Dict)), None)


ENTRY = re.compile(r"(?P<owner>seqcomp(\.\w+)*)\[(?P<name>[^\]]+)\]")  # a record's name for a registry entry


def registry_entry(owner: str, name: str, pkg: Path = PKG) -> str:
    """The current value of entry ``name`` of the registry defined in module ``owner``, read from
    its source without importing it; ``missing`` if there is none."""
    path = module_file(owner, pkg)
    if path is None:
        return "missing"
    stat = path.stat()
    return _registry_entries(path, stat.st_mtime_ns, stat.st_size).get(name, "missing")


@lru_cache(maxsize=None)
def _registry_entries(path: Path, mtime_ns: int, size: int) -> dict[str, str]:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError:
        return {}
    entries: dict[str, str] = {}
    for node in ast.walk(tree):
        if (table := _registry_table(node)) is not None:
            entries.update({k.value: v.value for k, v in zip(table.keys, table.values)
                            if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)})
    return entries


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


def record_job(folder: str | Path, started: float) -> None:
    """Write the package modules this process has loaded, with their digests, into ``folder``'s
    record, atomically.

    Called by the job shell after the job's work: what it imported is then what it ran. A module
    whose file was saved after ``started`` (the process's start, seconds since the epoch) may have
    run in another version than its file's: it is recorded as such, and the job reruns. This
    module itself is left out (it is loaded to write the record and changes no result).
    """
    from seqcomp.io import atomic_path

    names = {getattr(m, "__spec__", None) and m.__spec__.name for m in list(sys.modules.values())}
    digests = {}
    for name in sorted(n for n in names if n and (n == "seqcomp" or n.startswith("seqcomp.")) and n != __name__):
        path = module_file(name)
        if path is not None:
            digests[name] = ast_digest(path) if path.stat().st_mtime < started else "saved-while-running"
    digests.update(loaded_entries())
    with atomic_path(Path(folder) / RECORD_NAME) as tmp:
        tmp.write_text(json.dumps({"modules": digests}, indent=1) + "\n")


def loaded_entries() -> dict[str, str]:
    """``{"<registry's module>[<name>]": entry}`` for every registry entry whose module this process
    loaded: the plug-ins a job ran, recorded beside its modules since a registry module's digest
    leaves its entries out (``seqcomp.models[lstm]``: ``seqcomp.models.lstm:LSTMForecaster``)."""
    found = {}
    for owner in [name for name in list(sys.modules) if name == "seqcomp" or name.startswith("seqcomp.")]:
        if (path := module_file(owner)) is None:
            continue
        stat = path.stat()
        for name, entry in _registry_entries(path, stat.st_mtime_ns, stat.st_size).items():
            if entry.partition(":")[0] in sys.modules:
                found[f"{owner}[{name}]"] = entry
    return dict(sorted(found.items()))


def recorded_modules(folder: str | Path) -> dict[str, str] | None:
    """{module: digest} as the last job that finished in ``folder`` ran them; None if none did.

    A record that does not parse (written by hand, or by an older version) counts as none: the
    job is then stamped from the static walk, which finds at least what it loads, as changed.
    """
    try:
        modules = json.loads((Path(folder) / RECORD_NAME).read_text())["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(modules, dict) or not all(isinstance(v, str) for v in modules.values()):
        return None
    return modules


# A stamp's mtime when the job's code is as it ran: older than any output, so no rerun.
AS_RAN_NS = 946_684_800 * 10**9  # 2000-01-01


def write_stamp(stamp: Path, modules: frozenset[str], ran: dict[str, str] | None = None, pkg: Path = PKG) -> None:
    """Make ``stamp`` hold the digests of ``modules``, dated so that Snakemake reruns the job
    exactly when they differ from ``ran``, the digests its last run recorded (None: no record).

    As it ran: dated 2000-01-01 (older than the outputs). Otherwise, an edit of code the job ran,
    or no record: dated when the difference is first seen (newer than the outputs), and left so
    until the job runs again. Written atomically, and only when content or date must change: a
    ``touch``, a comment or undoing an edit (even with a new mtime, as ``git checkout`` gives)
    reruns nothing, and a dry run that saw an edit leaves nothing behind once it is undone.
    """
    digests = _digests(frozenset(modules), pkg)
    content = "".join(f"{digest} {name}\n" for name, digest in sorted(digests.items()))
    as_ran = _as_ran(ran, digests, pkg)
    if stamp.is_file() and stamp.read_text() == content and (stamp.stat().st_mtime_ns == AS_RAN_NS) == as_ran:
        return
    from seqcomp.io import atomic_path

    with atomic_path(stamp) as tmp:
        tmp.write_text(content)
    mtime = AS_RAN_NS if as_ran else time.time_ns()
    os.utime(stamp, ns=(mtime, mtime))


@lru_cache(maxsize=None)
def _digests(modules: frozenset[str], pkg: Path) -> dict[str, str]:
    """{module: digest, or ``missing`` for a module with no file}, once per distinct module set
    per DAG build: a grid's jobs share a few sets, and hashing them per job made a 2,400-job DAG
    slow to build."""
    digests = {}
    for name in modules:
        if entry := ENTRY.fullmatch(name):
            digests[name] = registry_entry(entry["owner"], entry["name"], pkg)
        else:
            path = module_file(name, pkg)
            digests[name] = ast_digest(path) if path is not None else "missing"
    return digests


def _as_ran(ran: dict[str, str] | None, digests: dict[str, str], pkg: Path) -> bool:
    """Whether the code is as the job ran it. A record written before registry entries were left
    out of the digests holds a registry module's digest with its entries: it counts while that
    module is unchanged, so the change of scheme reruns nothing."""
    if ran is None or set(ran) != set(digests):
        return False
    return all(ran[name] == digest or ((path := module_file(name, pkg)) is not None
                                       and ran[name] == ast_digest(path, with_entries=True))
               for name, digest in digests.items())
