"""Function definitions: the node format of functions.json, parsed once into small objects.

A node is `kind` value | object | list, `required` required | optional | default (with
`default`), and for values the PARAM type and `nullable`. Objects keep their keys in
source order, which is also the key order of JSON answers. companion.json holds the four
companion functions in the same format, named without their prefix.
"""

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

REQUIRED, OPTIONAL, DEFAULT = "required", "optional", "default"


class Value:
    """external_value: `ptype` is the PARAM constant's value ('int', 'alphanumext'...)."""

    __slots__ = ("ptype", "required", "default", "nullable", "param", "cleaner")
    kind = "value"

    def __init__(self, param: str, required: str, default: Any, nullable: bool):
        self.param = param
        self.ptype = param.removeprefix("PARAM_").lower()
        self.required, self.default, self.nullable = required, default, nullable
        self.cleaner = None  # compiled by validate.cleaner_for


class Single:
    """external_single_structure: `keys` is a tuple of (name, node) in declaration order."""

    __slots__ = ("keys", "required", "default", "nullable", "names", "cleaner")
    kind = "object"

    def __init__(self, keys: tuple, required: str, default: Any, nullable: bool):
        self.keys, self.required, self.default, self.nullable = keys, required, default, nullable
        self.names = frozenset(name for name, _ in keys)
        self.cleaner = None


class Multiple:
    """external_multiple_structure of `items`."""

    __slots__ = ("items", "required", "default", "nullable", "cleaner")
    kind = "list"

    def __init__(self, items: Any, required: str, default: Any, nullable: bool):
        self.items, self.required, self.default, self.nullable = items, required, default, nullable
        self.cleaner = None


Node = Value | Single | Multiple


def parse_node(raw: dict) -> Node:
    """One node of the JSON format (recursively)."""
    required = raw.get("required", REQUIRED)
    default = raw.get("default")
    kind = raw["kind"]
    if kind == "value":
        return Value(raw["type"], required, default, raw.get("nullable", True))
    if kind == "object":
        keys = tuple((k, parse_node(v)) for k, v in raw["keys"].items())
        return Single(keys, required, default, raw.get("nullable", False))
    if kind == "list":
        return Multiple(parse_node(raw["items"]), required, default, raw.get("nullable", False))
    raise ValueError(f"unknown node kind {kind!r}")


@dataclass(frozen=True)
class FunctionSpec:
    """What the site registers for one external function."""

    name: str
    component: str
    type: str  # read | write
    parameters: Single
    returns: Node | None
    raw: dict  # the full definition (errors, notes...) for reference


def _spec(raw: dict, name: str | None = None) -> FunctionSpec:
    returns = raw.get("returns")
    return FunctionSpec(
        name=name or raw["name"],
        component=raw.get("component", ""),
        type=raw.get("type", "read").split()[0],
        parameters=parse_node(raw["parameters"]),  # type: ignore[arg-type]
        returns=parse_node(returns) if returns else None,
        raw=raw,
    )


def _load(filename: str) -> dict:
    return json.loads(resources.files("moodle_ws.sandbox").joinpath(filename).read_text("utf-8"))


@cache
def core_specs() -> dict[str, FunctionSpec]:
    """functions.json `functions`, by name."""
    return {f["name"]: _spec(f) for f in _load("functions.json")["functions"]}


@cache
def iomad_specs() -> dict[str, FunctionSpec]:
    """functions.json `iomad.functions`, by name."""
    return {f["name"]: _spec(f) for f in _load("functions.json")["iomad"]["functions"]}


@cache
def companion_raw() -> dict[str, dict]:
    """companion.json functions by short name (get_schedules...)."""
    return {f["name"]: f for f in _load("companion.json")["functions"]}


@cache
def companion_specs(prefix: str) -> dict[str, FunctionSpec]:
    """The companion functions under `prefix` (e.g. local_manireports_get_schedules)."""
    return {
        f"{prefix}_{short}": _spec(raw, f"{prefix}_{short}")
        for short, raw in companion_raw().items()
    }
