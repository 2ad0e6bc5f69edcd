"""Configs mutated at random (seeded) from config/config.yaml and config/smoke.yaml: each is
either valid, and then resolves to values of the types its schema and plug-ins declare, or
refused by a ConfigError that names the file, the line and the key, shows no value longer than
a few hundred characters and says what to do. Never another exception, never a hang."""

from __future__ import annotations

import dataclasses
import random
import re
import signal
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT
from seqcomp.config import load_config, model_params
from seqcomp.errors import SHOWN_CHARS, ConfigError

SEED = 20261207
CASES_PER_BASE = 60
SECONDS_PER_CASE = 5
BASES = ("config.yaml", "smoke.yaml")
ODD = ["a b", "x{y}", "q'\"", "é", "", "-", "a.b", "x" * 3000]
BOMB = "\n".join(["x0: &x0 [x, x, x, x, x, x, x, x, x, x]"]
                 + [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 10)}]" for i in range(1, 9)])
# what a refusal's hint starts with (after the problem: "...; write 24, not 24.0")
HINT = re.compile(r"; (write|use|give|add|rename|remove|list|allowed|see|shorten|it names|YAML|quote|flatten|split|"
                  r"save|valid|define)|: must |shorten the windows|must be|expected")


def leaves(node: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every key path to a scalar or a list."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, path + (key,))
    else:
        yield path


def mappings(node: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(node, dict):
        yield path
        for key, value in node.items():
            yield from mappings(value, path + (key,))


def set_at(cfg: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        cfg = cfg[key]
    cfg[path[-1]] = value


def get_at(cfg: dict, path: tuple) -> Any:
    for key in path:
        cfg = cfg[key]
    return cfg


def mutate_value(value: Any, rng: random.Random) -> Any:
    if isinstance(value, bool):
        return rng.choice([1, "true", None, [value]])
    if isinstance(value, int):
        return rng.choice([float(value), str(value), True, -value - 1, 10**30, float("nan"), [value]])
    if isinstance(value, float):
        return rng.choice(["1e-3", float("inf"), -value, True, 0, str(value)])
    if isinstance(value, list):
        return rng.choice([value[0] if value else 0, [], value * 2, [[v] for v in value], [float(v) for v in value
                           if isinstance(v, (int, float))] or [1.5]])
    return rng.choice([*ODD, 7, None, ["x"]])


def nested(depth: int) -> list:
    value: list = [1]
    for _ in range(depth):
        value = [value]
    return value


def mutated(base: dict, rng: random.Random) -> tuple[str, tuple]:
    """(YAML text of a mutated ``base``, the key path changed)."""
    cfg = yaml.safe_load(yaml.safe_dump(base))
    kind = rng.choice(["value", "value", "value", "unknown", "rename", "deep", "alias", "merge", "bomb", "duplicate"])
    if kind in ("value", "deep", "alias", "bomb"):
        path = rng.choice(list(leaves(cfg)))
        new = {"value": lambda: mutate_value(get_at(cfg, path), rng), "deep": lambda: nested(40),
               "alias": lambda: "@ALIAS@", "bomb": lambda: "@BOMB@"}[kind]()
        set_at(cfg, path, new)
        text = yaml.safe_dump(cfg, sort_keys=False, width=10**6)
        if kind == "alias":  # a small alias: the horizons list used here too (undefined above it)
            text = re.sub(r"(?m)^horizons:", "horizons: &small", text).replace("'@ALIAS@'", "*small")
        if kind == "bomb":  # refused where the chain passes the bound: at *x3, inside x4
            return BOMB + "\n" + text.replace("'@BOMB@'", "*x8"), ("x4",)
        return text, path
    if kind in ("unknown", "rename"):
        parent = rng.choice(list(mappings(cfg)))
        node = get_at(cfg, parent)
        if kind == "rename" and node:
            old = rng.choice(list(node))
            node[rng.choice(ODD)] = node.pop(old)
        else:
            node[rng.choice(["zz_unknown", *ODD])] = 1
        return yaml.safe_dump(cfg, sort_keys=False, width=10**6), parent
    if kind == "merge":  # a model defined from another by a merge key
        model = rng.choice(list(cfg["models"]))
        cfg["models"]["merged"] = "@MERGE@"
        text = yaml.safe_dump(cfg, sort_keys=False, width=10**6).replace(f"\n  {model}:", f"\n  {model}: &m", 1)
        kind_of = rng.choice([cfg["models"][model].get("kind", model), "lstm", "nope"])
        return text.replace("'@MERGE@'", f"{{<<: *m, kind: {kind_of}}}"), ("models",)
    lines = yaml.safe_dump(cfg, sort_keys=False, width=10**6).splitlines()  # a key twice in one mapping
    i = rng.choice([n for n, line in enumerate(lines) if re.match(r"\s*[A-Za-z_]+:", line)])
    return "\n".join(lines[: i + 1] + [lines[i]] + lines[i + 1:]) + "\n", ()


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def hang(*_: Any) -> None:
        raise TimeoutError(f"a config case took over {seconds} s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def assert_typed(cfg: dict) -> None:
    """A valid config resolves to the types its schema and plug-ins declare."""
    from seqcomp.compress import PASSES
    from seqcomp.data import DATASETS
    from seqcomp.models import MODELS
    from seqcomp.registry import type_miss

    for key in ("seeds", "lookbacks", "horizons"):
        assert all(type(v) is int for v in cfg[key]), cfg[key]
    assert all(type(v) is int for k, v in cfg["train"].items() if k in ("max_epochs", "patience", "batch_size"))
    plugins = [(DATASETS, e["kind"], {k: v for k, v in e.items() if k not in ("kind", "split")})
               for e in cfg["datasets"].values()]
    plugins += [(MODELS, e["kind"], model_params(cfg, m)) for m, e in cfg["models"].items()]
    plugins += [(PASSES, e["kind"], {k: v for k, v in e.items() if k != "kind"}) for e in cfg["passes"].values()]
    for registry, kind, params in plugins:
        hints = typing.get_type_hints(registry.get(kind).Config)
        fields = {f.name for f in dataclasses.fields(registry.get(kind).Config)}
        assert all(type_miss(v, hints[k]) is None for k, v in params.items() if k in fields), (kind, params)


def check_refusal(message: str, path: Path, key: tuple) -> None:
    located = re.findall(rf"{re.escape(str(path))}( is not valid YAML:)? line (\d+)", message)
    assert located, f"no file and line in: {message}"
    assert HINT.search(message), f"no hint in: {message}"
    if key and "is not valid YAML" not in message:  # a syntax error has a line but no key yet
        assert str(key[0]) in message, f"key {key} not named in: {message}"
    longest = max(len(part) for part in re.split(r"\s(?=\S+\s)", message))
    assert longest <= 3 * SHOWN_CHARS, f"a value of {longest} characters shown"
    assert len(message) <= 12 * 4 * SHOWN_CHARS


@pytest.mark.parametrize("base_name", BASES)
def test_mutated_configs_are_valid_and_typed_or_refused_naming_file_line_and_key(base_name: str, tmp_path: Path) -> None:
    base = yaml.safe_load((ROOT / "config" / base_name).read_text())
    rng = random.Random(f"{SEED}-{base_name}")
    load_config(ROOT / "config" / base_name, base_dir=ROOT)  # imports torch and the plug-ins outside the time limit
    outcomes = {"valid": 0, "refused": 0}
    for case in range(CASES_PER_BASE):
        text, key = mutated(base, rng)
        path = tmp_path / f"case{case}.yaml"
        path.write_text(text)
        refusal = None
        with time_limit(SECONDS_PER_CASE):
            try:
                cfg = load_config(path, base_dir=ROOT)
            except ConfigError as exc:  # checked outside: a failure report would repr the YAML nodes in its frames
                refusal = str(exc)
        if refusal is not None:
            outcomes["refused"] += 1
            check_refusal(refusal, path, key)
        else:
            outcomes["valid"] += 1
            assert_typed(cfg)
    assert outcomes["refused"] > CASES_PER_BASE // 2 and outcomes["valid"] > 0, outcomes
