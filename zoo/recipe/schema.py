"""The recipe JSON Schema and its ``x-zoo`` extensions: the one place recipes read it from.

``schemas/recipe.schema.json`` holds every key, type and default. Two extensions say which keys
apply to which runs: a section's ``x-zoo-discriminator`` names the key that picks its kind
(``train.optimizer``, ``model.arch``, ...), and a key's ``x-zoo-for: {kind: default}`` lists the
kinds it applies to, with its default for each. :mod:`zoo.recipe.validation` checks recipes
against it; :func:`fill_defaults` and :func:`resolve_section` here fill its defaults.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from zoo.naming import resource

SECTIONS = ("task", "model", "init", "train")


@cache
def recipe_schema() -> dict:
    """The recipe JSON Schema shipped with the package."""
    return json.loads(resource("schemas", "recipe.schema.json").read_text())


def section_schema(section: str) -> dict:
    """The schema of one top-level section (``"train"``, ``"output"``, ...)."""
    return recipe_schema()["properties"][section]


def key_schema(key: str) -> dict:
    """The schema of the key a dotted ``section.name`` path (a grid or sample key) sets."""
    section, name = key.split(".")
    return section_schema(section)["properties"][name]


def applies(prop: dict, kind: Any) -> bool:
    """Whether a key with schema ``prop`` applies to runs whose discriminator is ``kind``."""
    return "x-zoo-for" not in prop or kind in prop["x-zoo-for"]


@cache
def per_model_keys(section: str) -> tuple[str, ...]:
    """Keys of a section marked ``x-zoo-per-model``: runs that differ only in them share a
    population, each model with its own value (``task.index``: which signal a run fits)."""
    props = section_schema(section)["properties"]
    return tuple(k for k, p in props.items() if p.get("x-zoo-per-model"))


@cache
def signal_tasks() -> tuple[str, ...]:
    """Task names with a per-model key: signal tasks, one signal per run (issue 14)."""
    props = section_schema("task")["properties"]
    return tuple(sorted({kind for k in per_model_keys("task") for kind in props[k]["x-zoo-for"]}))


# --- defaults ----------------------------------------------------------------------------------


def fill_defaults(data: dict) -> dict:
    """A copy of the recipe with every schema default filled in."""
    out = copy.deepcopy(data)
    for key, prop in recipe_schema()["properties"].items():
        if key not in out and "default" in prop:
            out[key] = copy.deepcopy(prop["default"])
        if key in out and prop.get("type") == "object" and "properties" in prop:
            out[key] = resolve_section(key, out[key])
    return out


def resolve_section(section: str, values: dict) -> dict:
    """Fill a section's defaults and drop keys that don't apply to its discriminator's value.

    Dropping (rather than rejecting) matters after grid expansion: a base ``momentum: 0.9`` is
    meaningless for the runs of ``grid: {train.optimizer: [sgd, adam]}`` that use adam.
    """
    return _resolve_object(section_schema(section), values)


def _resolve_object(sch: dict, values: dict) -> dict:
    disc = sch.get("x-zoo-discriminator")
    kind = values.get(disc, sch["properties"].get(disc, {}).get("default")) if disc else None
    out = {}
    for key, prop in sch["properties"].items():
        if not applies(prop, kind):
            continue
        if key in values:
            out[key] = copy.deepcopy(values[key])
        elif "x-zoo-for" in prop:
            out[key] = copy.deepcopy(prop["x-zoo-for"][kind])
        elif "default" in prop:
            out[key] = copy.deepcopy(prop["default"])
        if "properties" in prop and isinstance(out.get(key), dict):
            out[key] = _resolve_object(prop, out[key])  # nested sections get their defaults
    return out
