"""Config files read safely: YAML with bounded aliases and nesting, no repeated keys, and the
file and line of every key for error messages.

PyYAML (and so Snakemake's --configfile) expands aliases without a bound: a few hundred bytes
of "billion laughs" are 10^9 values to whatever walks them (a schema error message, a JSON
dump), and of two equal keys it keeps the last without a word. The workflow (rules/common.smk)
and ``python -m seqcomp validate`` read the files through here before anything walks the
values, so either is refused naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from seqcomp.errors import ConfigError, cut, shown

# Values (scalars, lists, mappings and keys) a config may have once its aliases are expanded,
# and how deeply it may nest. The shipped configs have under 400 values and 6 levels.
MAX_VALUES = 10_000
MAX_DEPTH = 32
MERGE_TAG = "tag:yaml.org,2002:merge"

KeyPath = tuple[str, ...]
Locations = dict[KeyPath, tuple[str, int]]  # key path -> (file, 1-based line)
_ENDLESS = (MAX_VALUES + 1, MAX_DEPTH + 1)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """'line L, column C: problem (context at line L')', 1-based, without yaml's source excerpts."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return str(exc)
    text = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    context = getattr(exc, "context_mark", None)
    if context is not None and exc.context:
        text += f" ({exc.context} at line {context.line + 1})"
    if "undefined alias" in str(exc.problem):
        text += "; define the anchor (&name) above the alias (*name)"
    return text


class _Loader(yaml.SafeLoader):
    """A SafeLoader that bounds nesting while composing and records where each alias is used."""

    def __init__(self, text: str, path: Path):
        super().__init__(text)
        self.path = path
        self.keys: list[str] = []  # the key path being composed, for a refusal
        self.alias_uses: list[tuple[yaml.Node, int, str]] = []  # (anchored node, line, anchor)
        self.alias_items: dict[tuple[int, int], int] = {}  # (id of a list, index) -> line of the alias there

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            self.alias_uses.append((node, event.start_mark.line + 1, event.anchor))
            if isinstance(index, int):
                self.alias_items[id(parent), index] = event.start_mark.line + 1
            return node
        label = index.value if isinstance(index, yaml.ScalarNode) else str(index) if isinstance(index, int) else None
        self.keys.append(cut(str(label), 80) if label is not None else "")
        try:
            if len(self.keys) > MAX_DEPTH:  # PyYAML composes recursively: refuse long before Python's limit
                key = tuple(k for k in self.keys if k)
                raise ConfigError(f"config file {self.path} line {event.start_mark.line + 1}: key {'.'.join(key[:6])}...: "
                                  f"nested more than {MAX_DEPTH} levels deep; flatten it (a config needs a few levels)",
                                  key)
            return super().compose_node(parent, index)
        finally:
            self.keys.pop()

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except ValueError as exc:  # e.g. an int beyond 4300 digits, a date 2020-13-01
            raise ConfigError(f"config file {self.path} line {node.start_mark.line + 1}: YAML cannot read "
                              f"this value ({cut(str(exc))}); quote it if it is meant as text") from None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _measure(node: yaml.Node, level: int, memo: dict[int, tuple[int, int]], active: set[int]) -> tuple[int, int]:
    """(values, levels) of ``node`` with every alias expanded, each capped just past its bound,
    visiting each node once (an alias is a second reference to its anchored node)."""
    if id(node) in memo:
        return memo[id(node)]
    if id(node) in active:  # an alias inside its own anchor expands forever
        return _ENDLESS
    if level > MAX_DEPTH:  # deep enough to refuse: stop descending
        return 1, 0
    active.add(id(node))
    values, height = 1, 0
    for child in _children(node):
        n, h = _measure(child, level + 1, memo, active)
        values, height = min(values + n, MAX_VALUES + 1), max(height, h + 1)
        if values > MAX_VALUES:
            break
    active.discard(id(node))
    memo[id(node)] = (values, height)
    return values, height


def _check_expansion(root: yaml.Node, loader: _Loader, path: Path, found: Locations) -> None:
    memo: dict[int, tuple[int, int]] = {}
    values, height = _measure(root, 0, memo, set())
    if values <= MAX_VALUES and height <= MAX_DEPTH:
        return
    what = f"more than {MAX_VALUES} values" if values > MAX_VALUES else f"more than {MAX_DEPTH} levels deep"
    if not loader.alias_uses:
        raise ConfigError(f"config file {path}: {what}; split it up (a config needs far fewer)")
    # blame the alias that expands the most (the first such in the file), named by its key
    axis = 0 if values > MAX_VALUES else 1
    _, line, anchor = max(loader.alias_uses, key=lambda use: (memo.get(id(use[0]), _ENDLESS)[axis], -use[1]))
    key = max((k for k, (_, at) in found.items() if at == line), key=len, default=())
    raise ConfigError(f"config file {path} line {line}: key {'.'.join(key) or '(top level)'}: alias *{cut(anchor, 80)} "
                      f"makes the config {what} once expanded (nested aliases multiply); write the values out instead",
                      key)


def _walk(node: yaml.MappingNode, loader: _Loader, prefix: KeyPath, found: Locations, leaves: set[KeyPath],
          seen: set[int]) -> None:
    """Record the line of every key below ``node`` (each node walked once: an alias points to
    its anchor's lines), refusing a key set twice in one mapping."""
    seen.add(id(node))
    lines: dict[tuple[str, str], int] = {}
    merged = [pair for pair in node.value if pair[0].tag == MERGE_TAG]  # explicit keys win over merged ones
    for key_node, value in merged + [pair for pair in node.value if pair[0].tag != MERGE_TAG]:
        if key_node.tag == MERGE_TAG:
            merge_sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
            for source in merge_sources:
                if isinstance(source, yaml.MappingNode) and id(source) not in seen:
                    _walk(source, loader, prefix, found, leaves, seen)
            continue
        line = key_node.start_mark.line + 1
        key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else f"<{key_node.id} key>"
        if (key_node.tag, key) in lines:
            shown_path = ".".join(prefix + (key,))
            raise ConfigError(f"config file {loader.path} line {line}: key {cut(shown_path)} is set twice (also at line "
                              f"{lines[key_node.tag, key]}); YAML would keep only the last: remove one", prefix + (key,))
        lines[key_node.tag, key] = line
        _locate(value, loader, prefix + (key,), line, found, leaves, seen)


def _locate(node: yaml.Node, loader: _Loader, key: KeyPath, line: int, found: Locations, leaves: set[KeyPath],
            seen: set[int]) -> None:
    found[key] = (str(loader.path), line)
    if not isinstance(node, yaml.MappingNode):
        leaves.add(key)
    if id(node) in seen:
        return
    if isinstance(node, yaml.MappingNode):
        _walk(node, loader, key, found, leaves, seen)
    elif isinstance(node, yaml.SequenceNode):
        seen.add(id(node))
        for i, item in enumerate(node.value):
            line = loader.alias_items.get((id(node), i), item.start_mark.line + 1)
            _locate(item, loader, key + (str(i),), line, found, leaves, seen)


def read_config_file(path: str | Path) -> tuple[Any, Locations, set[KeyPath]]:
    """(the file's value, the line of every key, the key paths whose value is not a mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    loader = _Loader(text, path)
    try:
        root = loader.get_single_node()
        if root is None:
            return {}, {}, set()
        found: Locations = {(): (str(path), root.start_mark.line + 1)}
        leaves: set[KeyPath] = set()
        if isinstance(root, yaml.MappingNode):  # walks each node once, so before the expansion check
            _walk(root, loader, (), found, leaves, set())
        _check_expansion(root, loader, path, found)
        return loader.construct_document(root), found, leaves
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {yaml_problem(exc)}") from None
    finally:
        loader.dispose()


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Snakemake's merge of --configfile files (snakemake.utils.update_config): mappings merge
    key by key, any other value replaces the base's."""
    for key, value in overlay.items():
        if isinstance(value, dict):
            sub = base.get(key)
            base[key] = merge(sub if isinstance(sub, dict) else {}, value)
        else:
            base[key] = value
    return base


def read_config_files(paths: list[str | Path]) -> tuple[dict[str, Any], Locations]:
    """The merged config of a --configfile list and where each key is set: the last file that
    sets a key wins, as in Snakemake."""
    config: dict[str, Any] = {}
    where: Locations = {}
    for path in paths:
        data, found, leaves = read_config_file(path)
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} line {found[()][1]}: the top level must be keys "
                              f"(name: ..., models: ...), not {shown(data)}")
        merge(config, data)
        for leaf in leaves:  # a replaced value takes the lines of what it replaced with it
            for key in [k for k in where if len(k) > len(leaf) and k[: len(leaf)] == leaf]:
                del where[key]
        where.update(found)
    return config, where


def check_size(config: Any) -> None:
    """Refuse a config (already read, e.g. by Snakemake) of more than MAX_VALUES values or
    MAX_DEPTH levels, before a schema check or JSON dump walks every shared reference."""
    stack: list[tuple[Any, KeyPath]] = [(config, ())]
    count = 0
    while stack:
        value, key = stack.pop()
        count += 1
        if count > MAX_VALUES or len(key) > MAX_DEPTH:
            what = f"more than {MAX_VALUES} values" if count > MAX_VALUES else f"more than {MAX_DEPTH} levels deep"
            raise ConfigError(f"{'.'.join(key[:3]) or '(top level)'}: the config has {what} (YAML aliases expanded?); "
                              "write the values out instead", key[:3])
        if isinstance(value, dict):
            count += len(value)
            stack.extend((v, key + (str(k),)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, key + (str(i),)) for i, v in enumerate(value))
