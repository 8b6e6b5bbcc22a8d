"""Recipes: a YAML file -> a validated :class:`Recipe` -> one :class:`RunConfig` per run.

``schema`` reads the JSON Schema and fills its defaults, ``validation`` reports every problem at
once, ``sampling`` draws sampled hyperparameters and checkpoint schedules, ``load`` reads and
overrides a file, ``expand`` makes the runs.
"""

from zoo.recipe.expand import RunConfig, expand_recipe
from zoo.recipe.load import Recipe, apply_overrides, apply_scale, load_recipe, recipe_from_dict
from zoo.recipe.schema import (
    SECTIONS,
    fill_defaults,
    per_model_keys,
    recipe_schema,
    resolve_section,
    signal_tasks,
)

__all__ = [
    "SECTIONS",
    "Recipe",
    "RunConfig",
    "apply_overrides",
    "apply_scale",
    "expand_recipe",
    "fill_defaults",
    "load_recipe",
    "per_model_keys",
    "recipe_from_dict",
    "recipe_schema",
    "resolve_section",
    "signal_tasks",
]
