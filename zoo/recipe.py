"""Recipes: YAML -> JSON Schema -> frozen dataclasses, before any work is done.

Loading applies ``scale:`` and ``--set`` overrides, then :mod:`zoo.validation` reports every
problem at once, each with its dotted key path and what is allowed. Defaults live in
``schemas/recipe.schema.json`` (read through :mod:`zoo.schema`) and nowhere else: keys that apply
to one kind of task, architecture or optimizer only carry ``x-zoo-for: {kind: default}`` there.
Expansion turns a recipe into one :class:`RunConfig` per run.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import RecipeError
from .ids import run_id as make_run_id
from .ids import short_hash
from .sampling import checkpoint_epochs, sample_points
from .schema import SECTIONS, applies, recipe_schema, section_schema  # also imported from here
from .validation import recipe_problems


@dataclass(frozen=True)
class RunConfig:
    """One run: the base config with one grid point (and sampled point) and one seed applied,
    fully resolved. ``grid_point`` holds the values the grid and the sample set."""

    run_id: str
    cell_id: str  # same for runs that differ only by seed
    seed: int
    task: dict
    model: dict
    init: dict
    train: dict
    checkpoints: tuple[int, ...]
    grid_point: dict = field(default_factory=dict)
    checkpoint_steps: tuple[int, ...] = ()  # mid-epoch checkpoints (optimizer steps)

    def config(self) -> dict:
        """The dict ``run_id`` is the hash of."""
        return {
            "task": self.task,
            "model": self.model,
            "init": self.init,
            "train": self.train,
            "checkpoints": list(self.checkpoints),
            "seed": self.seed,
        } | _steps_entry(self.checkpoint_steps)

    def hyperparameters(self) -> dict[str, Any]:
        """Flat ``section__key -> value`` view, the dataset's hyperparameter columns."""
        out = {}
        for section in SECTIONS:
            for key, value in getattr(self, section).items():
                out[f"{section}__{key}"] = value
        out["seed"] = self.seed
        return out

    def to_dict(self) -> dict:
        ids = {"run_id": self.run_id, "cell_id": self.cell_id, "grid_point": self.grid_point}
        return ids | self.config()

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return cls(
            run_id=d["run_id"],
            cell_id=d["cell_id"],
            seed=int(d["seed"]),
            task=dict(d["task"]),
            model=dict(d["model"]),
            init=dict(d["init"]),
            train=dict(d["train"]),
            checkpoints=tuple(int(e) for e in d["checkpoints"]),
            grid_point=dict(d.get("grid_point", {})),
            checkpoint_steps=tuple(int(s) for s in d.get("checkpoint_steps", ())),
        )


def _steps_entry(steps: tuple[int, ...]) -> dict:
    """``{"checkpoint_steps": [...]}``, or nothing: runs without mid-epoch checkpoints keep the
    ids they had before steps existed."""
    return {"checkpoint_steps": list(steps)} if steps else {}


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


# --- loading -----------------------------------------------------------------------------------


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


# --- expansion ---------------------------------------------------------------------------------


def expand_recipe(recipe: Recipe) -> list[RunConfig]:
    """All runs of a recipe: grid points (cartesian product, in the order written) x sampled
    points (``sample:``) x seeds. Keys that do not apply to a run are dropped from it, and grid
    points that then give the same run are one run.

    Example:
        >>> r = recipe_from_dict({"schema_version": 1, "task": {"name": "digits"},
        ...     "model": {"arch": "mlp"}, "train": {"epochs": 2},
        ...     "grid": {"train.lr": [0.1, 0.2]}, "seeds": 3})
        >>> len(expand_recipe(r))
        6
    """
    res = recipe.resolved
    grid = res["grid"]
    keys = list(grid)
    drawn = sample_points(res["sample"]) if res.get("sample") else [{}]
    runs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        for sampled in drawn:
            runs += _cell_runs(recipe, {**dict(zip(keys, values, strict=True)), **sampled})
    return _drop_repeats(runs)


def _cell_runs(recipe: Recipe, point: dict) -> list[RunConfig]:
    """The runs (one per seed) of one grid point and sampled point."""
    base = {s: copy.deepcopy(recipe.data.get(s, {})) for s in SECTIONS}
    for key, value in point.items():
        section, name = key.split(".")
        base[section][name] = value
    sections = {s: resolve_section(s, base[s]) for s in SECTIONS}
    ckpts = checkpoint_epochs(recipe.resolved["checkpoints"], sections["train"]["epochs"])
    steps = tuple(sorted(recipe.resolved["checkpoints"].get("steps") or ()))
    cell = short_hash({**sections, "checkpoints": list(ckpts)} | _steps_entry(steps))
    runs = []
    for seed in range(recipe.resolved["seeds"]):
        config = {**sections, "checkpoints": list(ckpts), "seed": seed} | _steps_entry(steps)
        runs.append(
            RunConfig(
                run_id=make_run_id(config),
                cell_id=cell,
                seed=seed,
                checkpoints=ckpts,
                grid_point=point,
                checkpoint_steps=steps,
                **sections,
            )  # fmt: skip
        )
    return runs


def _drop_repeats(runs: list[RunConfig]) -> list[RunConfig]:
    """Runs in order, each id once: grid points that differ only in keys a run drops (e.g.
    ``train.momentum`` for adam runs of an optimizer x momentum grid) are one run."""
    seen: set[str] = set()
    return [r for r in runs if not (r.run_id in seen or seen.add(r.run_id))]
