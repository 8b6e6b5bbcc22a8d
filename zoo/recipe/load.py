"""Recipes: YAML -> JSON Schema -> a frozen :class:`Recipe`, before any work is done.

Loading applies ``scale:`` and ``--set`` overrides, then :mod:`zoo.recipe.validation` reports
every problem at once, each with its dotted key path and what is allowed. Defaults live in
``schemas/recipe.schema.json`` (read through :mod:`zoo.recipe.schema`) and nowhere else: keys
that apply to one kind of task, architecture or optimizer only carry
``x-zoo-for: {kind: default}`` there. :mod:`zoo.recipe.expand` turns a recipe into runs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import RecipeError
from zoo.recipe.schema import fill_defaults
from zoo.recipe.validation import recipe_problems


@dataclass(frozen=True)
class Recipe:
    """A validated recipe with every default filled in.

    ``data`` is the recipe as written (after ``--set`` overrides): what ``recipe.yaml`` in the
    built dataset holds. ``resolved`` adds the defaults.
    """

    name: str
    source: str
    data: dict
    resolved: dict

    @property
    def out_dir(self) -> Path:
        return Path(self.resolved["output"]["dir"] or f"out/{self.name}")

    @property
    def execution(self) -> dict:
        return self.resolved["execution"]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.data, sort_keys=False)


def load_recipe(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), scale: bool = False
) -> Recipe:
    """Read, override, validate and resolve a recipe file.

    Args:
        path: a YAML recipe.
        overrides: ``dotted.key=value`` strings (values parsed as YAML), e.g. ``train.epochs=5``.
        scale: apply the recipe's ``scale:`` overrides first (its published size).
    Returns:
        the :class:`Recipe`; raises :class:`RecipeError` listing every problem.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise RecipeError(str(path), ["file not found"]) from err
    except yaml.YAMLError as err:
        raise RecipeError(str(path), [f"not valid YAML: {err}"]) from err
    if isinstance(data, dict):
        data.setdefault("name", path.stem.replace(".", "_").lower())
    if scale:
        data = apply_scale(data, str(path))
    data = apply_overrides(data, overrides, str(path))
    return recipe_from_dict(data, source=str(path))


def apply_scale(data: Any, source: str) -> dict:
    """The recipe with its ``scale:`` overrides applied (values as written, a mapping replacing
    the section it names) and, unless they set one, an output folder of its own."""
    scale = data.get("scale") if isinstance(data, dict) else None
    if not scale or not isinstance(scale, dict):
        raise RecipeError(source, ["--scale: the recipe has no `scale:` section to apply"])
    data = copy.deepcopy(data)
    for key, value in scale.items():
        _set_path(data, str(key), copy.deepcopy(value), source, f"scale.{key}")
    if "output.dir" not in scale:
        output = data.get("output") or {}  # `output:` may be written but empty
        data["output"] = {**output, "dir": f"{output.get('dir') or 'out/' + data['name']}-scaled"}
    return data


def apply_overrides(data: Any, overrides, source: str) -> dict:
    """Set ``dotted.key=value`` overrides on a copy of the recipe dict."""
    if not isinstance(data, dict):
        raise RecipeError(source, ["the recipe must be a mapping of sections (task, model, …)"])
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(source, [f"override {item!r} is not of the form dotted.key=value"])
        _set_path(data, key, yaml.safe_load(raw), source, f"override {item!r}")
    return data


def _set_path(data: dict, key: str, value: Any, source: str, what: str) -> None:
    """``data[a][b][c] = value`` for ``key`` ``a.b.c``, creating sections on the way."""
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(source, [f"{what}: {part!r} is not a section"])
    node[last] = value


def recipe_from_dict(data: dict, source: str = "<recipe>") -> Recipe:
    """Validate a recipe dict and fill its defaults (see :func:`load_recipe`)."""
    problems = recipe_problems(data)
    if problems:
        raise RecipeError(source, problems)
    resolved = fill_defaults(data)
    return Recipe(name=data.get("name") or "zoo", source=source, data=data, resolved=resolved)
