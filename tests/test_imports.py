"""No import cycles inside seqcomp, lazy (function-level) imports included: a cycle makes the
import order matter, hides which module a stage really needs, and ties two plug-ins' reruns."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PKG = ROOT / "src" / "seqcomp"


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported(tree: ast.AST, modules: set[str]) -> set[str]:
    """The package modules ``tree`` imports anywhere (not under ``if TYPE_CHECKING:``, which never runs)."""
    found, todo = set(), [tree]
    while todo:
        node = todo.pop()
        if _is_type_checking(node):
            continue
        todo += ast.iter_child_nodes(node)
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found & modules


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    return {name: imported(ast.parse(path.read_text()), set(files)) - {name} for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once, as the path that closes it (depth-first search)."""
    found, done = [], set()

    def visit(node: str, stack: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in stack:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, stack + [nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return found


def test_the_cycle_finder_finds_a_lazy_cycle() -> None:
    tree = ast.parse("def f():\n    from seqcomp.b import x\nif TYPE_CHECKING:\n    import seqcomp.c\n")
    assert imported(tree, {"seqcomp.b", "seqcomp.c"}) == {"seqcomp.b"}
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b", "a"]]


def test_no_import_cycle_inside_seqcomp() -> None:
    graph = import_graph()
    assert "seqcomp.data.core" in graph["seqcomp.data.stage"]  # the graph sees the package's imports
    assert cycles(graph) == []
