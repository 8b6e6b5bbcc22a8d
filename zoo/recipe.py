"""Recipes: YAML -> JSON Schema -> frozen dataclasses, before any work is done.

Every problem of a recipe is reported at once, each with its dotted key path and what is
allowed. Defaults live in ``schemas/recipe.schema.json`` and nowhere else: keys that apply to
one kind of task, architecture or optimizer only carry ``x-zoo-for: {kind: default}`` there.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import RecipeError
from .ids import run_id as make_run_id
from .ids import short_hash
from .sampling import checkpoint_epochs, distribution_problems, sample_points, space_size

SECTIONS = ("task", "model", "init", "train")


@cache
def recipe_schema() -> dict:
    """The recipe JSON Schema shipped with the package."""
    return json.loads((Path(__file__).parent / "schemas" / "recipe.schema.json").read_text())


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


# --- loading and validation -------------------------------------------------------------------


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
        out = (data.get("output") or {}).get("dir") or f"out/{data['name']}"
        data.setdefault("output", {})["dir"] = f"{out}-scaled"
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
    problems = schema_problems(data)
    if not problems:
        problems = (
            applicability_problems(data)
            + grid_problems(data)
            + sample_problems(data)
            + consistency_problems(data)
        )
    if problems:
        raise RecipeError(source, problems)
    resolved = fill_defaults(data)
    return Recipe(name=data.get("name") or "zoo", source=source, data=data, resolved=resolved)


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    schema, value = error.schema, error.instance
    kind = error.validator
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed))
        return f"{where}: unknown key(s) {extra}; allowed keys: {allowed}"
    if kind == "enum":
        return f"{where}: {value!r} is not allowed; allowed values: {schema['enum']}"
    if kind == "const":
        return f"{where}: must be {schema['const']!r}, got {value!r}"
    if kind == "required":
        return f"{where}: {error.message}"
    if kind == "type":
        return f"{where}: expected {schema['type']}, got {value!r} ({type(value).__name__})"
    if kind == "pattern" and where in ("grid", "sample.params"):
        return (
            f"{where}: key {value!r} is not a dotted path into task, model, init or train "
            f"(e.g. 'train.lr', 'model.width')"
        )
    if kind == "oneOf" and where.startswith("sample.params."):
        return (
            f"{where}: {value!r} is not a distribution; use one of {{choice: [v, ...]}}, "
            "{uniform: [low, high]}, {log_uniform: [low, high]} or {int: [low, high]}"
        )
    return f"{where}: {error.message}"


def schema_problems(data: dict) -> list[str]:
    """Every JSON Schema violation, described with its key path and the allowed values."""
    validator = jsonschema.Draft202012Validator(recipe_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    return [_describe(error) for error in errors]


def _section_schema(section: str) -> dict:
    return recipe_schema()["properties"][section]


def _applies(prop: dict, kind: Any) -> bool:
    return "x-zoo-for" not in prop or kind in prop["x-zoo-for"]


def applicability_problems(data: dict) -> list[str]:
    """Keys set for a task/arch/optimizer they don't apply to (e.g. momentum with adam)."""
    out = []
    for section in SECTIONS:
        sch = _section_schema(section)
        disc = sch.get("x-zoo-discriminator")
        if not disc:
            continue
        values = data.get(section, {})
        kind = values.get(disc, sch["properties"][disc].get("default"))
        for key in values:
            prop = sch["properties"][key]
            if not _applies(prop, kind):
                users = sorted(prop["x-zoo-for"])
                out.append(
                    f"{section}.{key}: does not apply to {section}.{disc} {kind!r} "
                    f"(it applies to: {users}); remove it"
                )
    return out


def _value_problems(prop: dict, value: Any, where: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(prop)
    return [_describe(e).replace("(top level)", where, 1) for e in validator.iter_errors(value)]


def _key_problems(key: str, where: str) -> list[str]:
    section, name = key.split(".")
    props = _section_schema(section)["properties"]
    if name not in props:
        return [f"{where}: {section} has no key {name!r}; allowed keys: {sorted(props)}"]
    return []


def _key_schema(key: str) -> dict:
    section, name = key.split(".")
    return _section_schema(section)["properties"][name]


def grid_problems(data: dict) -> list[str]:
    """Each grid value checked against the schema of the key it sets."""
    out = []
    for key, values in data.get("grid", {}).items():
        problems = _key_problems(key, f"grid.{key}")
        if not problems:
            for i, value in enumerate(values):
                problems += _value_problems(_key_schema(key), value, f"grid.{key}[{i}]")
        out += problems
    return out + _never_applied(data)


def _never_applied(data: dict) -> list[str]:
    """Grid or sampled keys that apply to none of the runs (e.g. ``init.rank`` while no run uses
    ``init.scheme: low_rank``): they would be dropped silently."""
    varied = dict(data.get("grid", {}))
    for key, dist in ((data.get("sample") or {}).get("params") or {}).items():
        varied[key] = dist.get("choice", [])
    out = []
    for key in varied:
        section, name = key.split(".")
        sch = _section_schema(section)
        disc, prop = sch.get("x-zoo-discriminator"), sch["properties"].get(name, {})
        if not disc or "x-zoo-for" not in prop:
            continue
        base = data.get(section, {}).get(disc, sch["properties"][disc].get("default"))
        kinds = varied.get(f"{section}.{disc}") or [base]
        if not set(kinds) & set(prop["x-zoo-for"]):
            out.append(
                f"{key}: varied, but it applies only to {section}.{disc} "
                f"{sorted(prop['x-zoo-for'])} and every run has {section}.{disc} in {kinds}"
            )
    return out


def consistency_problems(data: dict) -> list[str]:
    """Constraints across keys: checkpoint epochs within training, split fractions sum to 1."""
    out = []
    epochs = [data["train"]["epochs"], *data.get("grid", {}).get("train.epochs", [])]
    sampled = ((data.get("sample") or {}).get("params") or {}).get("train.epochs", {})
    epochs += [min(v) for v in sampled.values()]
    wanted = (data.get("checkpoints") or {}).get("epochs") or []
    too_late = [e for e in wanted if e > min(epochs)]
    if too_late:
        out.append(
            f"checkpoints.epochs: {too_late} exceed train.epochs ({min(epochs)}); "
            f"checkpoint epochs must lie in 0..train.epochs"
        )
    out += _landscape_at_problems(data, epochs)
    splits = (data.get("output") or {}).get("splits")
    if splits is not None and abs(sum(splits.values()) - 1.0) > 1e-6:
        out.append(f"output.splits: fractions {splits} sum to {sum(splits.values())}, not 1")
    return out


def _landscape_at_problems(data: dict, epochs: list[int]) -> list[str]:
    """``landscape.at`` must name epochs that every run saves a checkpoint at."""
    at = (data.get("landscape") or {}).get("at") or []
    if not at or not (data.get("landscape") or {}).get("metrics"):
        return []
    spec = data.get("checkpoints") or {}
    saved = set.intersection(*(set(checkpoint_epochs(spec, e)) for e in set(epochs)))
    missing = sorted(set(at) - saved)
    if not missing:
        return []
    return [f"landscape.at: {missing} are not checkpoint epochs of every run; allowed: "
            f"{sorted(saved)} (add them to checkpoints.epochs)"]  # fmt: skip


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
    return _resolve_object(_section_schema(section), values)


def _resolve_object(sch: dict, values: dict) -> dict:
    disc = sch.get("x-zoo-discriminator")
    kind = values.get(disc, sch["properties"].get(disc, {}).get("default")) if disc else None
    out = {}
    for key, prop in sch["properties"].items():
        if not _applies(prop, kind):
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


# --- sampling ----------------------------------------------------------------------------------


def sample_problems(data: dict) -> list[str]:
    """Each sampled key checked: it exists, is not also gridded, and its distribution fits it."""
    sample = data.get("sample")
    if not sample:
        return []
    out = []
    for key, dist in sample["params"].items():
        where = f"sample.params.{key}"
        problems = _key_problems(key, where)
        if not problems and key in data.get("grid", {}):
            problems = [f"{where}: {key} is also in grid; a key is either gridded or sampled"]
        out += problems or distribution_problems(_key_schema(key), dist, where, _value_problems)
    size = math.prod(space_size(d) for d in sample["params"].values())
    if not out and size < sample["count"]:
        out.append(
            f"sample.count: {sample['count']} distinct points asked for, but sample.params has "
            f"only {size}; lower sample.count, add a continuous distribution or use grid"
        )
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
