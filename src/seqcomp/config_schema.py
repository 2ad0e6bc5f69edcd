"""The config's JSON schema check (workflow/schemas/config.schema.yaml): structure, types and
defaults, each refusal naming the file, line and key and saying what to write instead.

JSON Schema's ``integer`` accepts 24.0 and its ``number`` accepts .nan and .inf; a float where
an integer belongs becomes a ``seed0.0`` path or a TypeError in a job, and a NaN learning rate
trains nothing. Here an integer is a Python int (not a bool, not a float) and a number is finite.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from seqcomp.config_files import KeyPath, Locations
from seqcomp.errors import ConfigError, shown, type_hint

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
MAX_SHOWN_ERRORS = 10  # a config with 500 wrong values is refused with the first ten
_WANTED = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
           "array": "a list", "object": "a mapping of keys", "null": "null"}
_BOUNDS = {"minimum": (">=", "less than the minimum of"), "exclusiveMinimum": (">", "less than or equal to the minimum of"),
           "maximum": ("<=", "greater than the maximum of"),
           "exclusiveMaximum": ("<", "greater than or equal to the maximum of")}


def _is_integer(checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(checker: Any, instance: Any) -> bool:
    return _is_integer(checker, instance) or (isinstance(instance, float) and math.isfinite(instance))


def _validator() -> type:
    """Draft 2020-12 with strict integers and finite numbers that also writes each property's
    ``default`` into the instance."""
    base = jsonschema.Draft202012Validator
    validate_props = base.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):  # noqa: ANN001 - jsonschema hook
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, props, instance, schema)

    checker = base.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number})
    return jsonschema.validators.extend(base, {"properties": properties}, type_checker=checker)


def _oneof_required(error: jsonschema.ValidationError) -> tuple[str, str] | None:
    """(problem, hint) of a ``oneOf`` of ``required`` alternatives (a split's preset/borders/ratios)."""
    options = [s.get("required", []) for s in error.validator_value]
    if not all(len(o) == 1 and len(s) == 1 for o, s in zip(options, error.validator_value)):
        return None
    keys = [o[0] for o in options]
    given = [k for k in keys if isinstance(error.instance, dict) and k in error.instance]
    problem = f"sets {' and '.join(given)}" if given else f"sets none of {', '.join(keys)}"
    return problem, f"give exactly one of {', '.join(keys)}"


def _problem(e: jsonschema.ValidationError) -> tuple[str, str]:
    """(what is wrong, what to do) for one schema error."""
    value, rule = e.instance, e.validator_value
    if e.validator == "type":
        wanted = " or ".join(_WANTED[t] for t in ([rule] if isinstance(rule, str) else rule))
        return f"{shown(value)} is not {wanted}", type_hint(value, wanted)
    if e.validator in _BOUNDS:
        sign, words = _BOUNDS[e.validator]
        return f"{shown(value)} is {words} {rule}", f"use a value {sign} {rule}"
    if e.validator == "enum":
        return f"{shown(value)} is not one of {rule}", "use one of these"
    if e.validator == "pattern" and "propertyNames" in e.schema_path:
        return f"key {shown(value)} does not match {rule!r}", "rename it: letters, digits and _ (names become folder names)"
    if e.validator == "pattern":
        return f"{shown(value)} does not match {rule!r}", "use letters, digits and _ . - (it names folders)"
    if e.validator in ("maxLength", "minLength"):
        return f"{shown(value)} is {'longer' if e.validator == 'maxLength' else 'shorter'} than {rule} characters", \
            "it names folders and wildcards: use a short name"
    if e.validator == "required":
        missing = [k for k in rule if k not in value]
        return f"{shown(missing[0])} is a required property", "add it (workflow/schemas/config.schema.yaml describes it)"
    if e.validator == "additionalProperties":
        extras = sorted(str(k) for k in value if k not in e.schema.get("properties", {}))
        return (f"Additional properties are not allowed ({', '.join(shown(k) for k in extras[:5])} "
                f"{'was' if len(extras) == 1 else 'were'} unexpected)",
                f"allowed keys here: {', '.join(sorted(e.schema.get('properties', {})))}")
    if e.validator in ("minItems", "maxItems"):
        return f"{shown(value)} has {'fewer' if e.validator == 'minItems' else 'more'} than {rule} items", \
            f"give {'at least' if e.validator == 'minItems' else 'at most'} {rule}"
    if e.validator == "uniqueItems":
        return f"{shown(value)} has repeated items", "list each value once"
    if e.validator == "minProperties":
        return f"{shown(value)} is empty", "give at least one entry"
    return f"{shown(value)} fails the schema's {e.validator} {shown(rule)}", \
        "see workflow/schemas/config.schema.yaml for what this key takes"


def _error_key(e: jsonschema.ValidationError) -> KeyPath:
    """The key the error is about: for an unknown or misnamed key, that key itself."""
    path = tuple(str(p) for p in e.absolute_path)
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        extras = sorted(str(k) for k in e.instance if k not in e.schema.get("properties", {}))
        return path + tuple(extras[:1])
    if "propertyNames" in e.schema_path:
        return path + (str(e.instance),)
    return path


def located(key: KeyPath, locations: Locations) -> str:
    """'FILE line N: ' for the longest part of ``key`` that a config file sets, else ''."""
    for n in range(len(key), -1, -1):
        if key[:n] in locations:
            file, line = locations[key[:n]]
            return f"{file} line {line}: "
    return ""


def _line(error: jsonschema.ValidationError, locations: Locations) -> str:
    special = _oneof_required(error) if error.validator == "oneOf" else None
    best = error if special else jsonschema.exceptions.best_match([error])
    problem, hint = special or _problem(best)
    path = tuple(str(p) for p in best.absolute_path)
    return f"  {located(_error_key(best), locations)}{'.'.join(path) or '(top level)'}: {problem}; {hint}"


def validate_schema(cfg: dict[str, Any], locations: Locations | None = None) -> dict[str, Any]:
    """Check ``cfg`` against the schema and return a copy with defaults filled in; refusals name
    the file and line each key is set at (``locations``, from seqcomp.config_files)."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    cfg = copy.deepcopy(cfg)
    errors = sorted(_validator()(schema).iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = [_line(e, locations or {}) for e in errors[:MAX_SHOWN_ERRORS]]
        if len(errors) > MAX_SHOWN_ERRORS:
            lines.append(f"  ... and {len(errors) - MAX_SHOWN_ERRORS} more")
        raise ConfigError("config does not match workflow/schemas/config.schema.yaml:\n" + "\n".join(lines))
    return cfg
