"""Published results as data: read and check a published-results file (config/published/*.yaml).

Kept free of polars and matplotlib: the config loader checks the file named by a config's
``published`` key when the workflow starts, so a value without a source fails before any job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from seqcomp import PROJECT_ROOT
from seqcomp.errors import ConfigError

SCHEMA_PATH = PROJECT_ROOT / "workflow" / "schemas" / "published.schema.yaml"


def load_published(path: str | Path) -> list[dict[str, Any]]:
    """One dict per published value: dataset, method, model (ours, or None), metric, horizon
    (a string: "96" ... or "avg"), value, regime and fraction (a pre-trained model's transfer
    regime, else None), and its source's paper, table, lookback, drop_last, note.

    Raises ConfigError naming the file and the key path of the first problem.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"published results file {path} does not exist")
    try:
        # through JSON: YAML reads `96:` as an int key; the schema checks keys as strings
        data = json.loads(json.dumps(yaml.safe_load(path.read_text())))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'.'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}" for e in errors]
        raise ConfigError(f"{path} does not match {SCHEMA_PATH.name}:\n" + "\n".join(lines))
    rows = []
    for dataset, entries in data["results"].items():
        for i, entry in enumerate(entries):
            source = data["sources"].get(entry["source"])
            if source is None:
                raise ConfigError(f"{path}: results.{dataset}.{i}.source: unknown source {entry['source']!r}; "
                                  f"sources: {', '.join(sorted(data['sources']))}")
            for metric in ("mse", "mae"):
                for horizon, value in entry.get(metric, {}).items():
                    rows.append({"dataset": dataset, "method": entry["method"], "model": entry.get("model"),
                                 "source": entry["source"], "metric": metric, "horizon": horizon, "value": value,
                                 "regime": entry.get("regime"), "fraction": entry.get("fraction"),
                                 "paper": source["paper"], "table": source["table"],
                                 "lookback": lookback_text(source["lookback"]),
                                 "drop_last": str(source["drop_last"]).lower(), "note": source.get("note", "")})
    return rows


def lookback_text(lookback: int | str | dict[str, int]) -> str:
    """A source's lookback as the tables print it: ``512``, ``searched``, or ``96:512 192:1024``
    where the protocol sets one per horizon."""
    if isinstance(lookback, dict):
        return " ".join(f"{h}:{v}" for h, v in sorted(lookback.items(), key=lambda kv: int(kv[0])))
    return str(lookback)


def trained_on_target(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The values of models trained on the dataset itself (published.md's); the pre-trained
    models' transfer values (with a ``regime``) are the transfer table's."""
    return [r for r in rows if r["regime"] is None]
