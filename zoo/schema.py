"""The recipe JSON Schema and its ``x-zoo`` extensions: the one place recipes read it from.

``schemas/recipe.schema.json`` holds every key, type and default. Two extensions say which keys
apply to which runs: a section's ``x-zoo-discriminator`` names the key that picks its kind
(``train.optimizer``, ``model.arch``, ...), and a key's ``x-zoo-for: {kind: default}`` lists the
kinds it applies to, with its default for each. :mod:`zoo.validation` checks recipes against
it and :mod:`zoo.recipe` fills its defaults.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SECTIONS = ("task", "model", "init", "train")


@cache
def recipe_schema() -> dict:
    """The recipe JSON Schema shipped with the package."""
    return json.loads((Path(__file__).parent / "schemas" / "recipe.schema.json").read_text())


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
