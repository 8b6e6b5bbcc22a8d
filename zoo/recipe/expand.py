"""Expansion: a recipe -> one :class:`RunConfig` per run (grid point x sampled point x seed).

A run is the base config with one grid point (and sampled point) and one seed applied, fully
resolved; its ``run_id`` hashes that config, so the same recipe gives the same ids anywhere.
The checkpoint schedule is not part of a run's identity: it says when to look at the run, not
what the run is, so adding checkpoint epochs to a recipe keeps its runs (and trains only the
checkpoints the store lacks).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

from zoo.naming import run_id as make_run_id
from zoo.naming import short_hash
from zoo.recipe.load import Recipe
from zoo.recipe.sampling import checkpoint_epochs, grid_values, sample_points
from zoo.recipe.schema import SECTIONS, resolve_section


@dataclass(frozen=True)
class RunConfig:
    """One run: the base config with one grid point (and sampled point) and one seed applied,
    fully resolved, and when to checkpoint it.

    Attributes:
        run_id: hash of :meth:`config` (the four sections and the seed).
        cell_id: hash of the four sections: runs that differ only by seed share it.
        checkpoints: the epochs saved; checkpoint_steps: mid-epoch optimizer steps saved.
        grid_point: the values the grid (and the sample) set, by dotted key.
        grid_index: the position of each grid value in its list, in the grid's key order;
            sample_index: the sampled point's number (``sample:``), else None. With the seed,
            these are the coordinates the split rule reads (:func:`zoo.naming.split_of`).
    """

    run_id: str
    cell_id: str
    seed: int
    task: dict
    model: dict
    init: dict
    train: dict
    checkpoints: tuple[int, ...]
    grid_point: dict = field(default_factory=dict)
    checkpoint_steps: tuple[int, ...] = ()
    grid_index: tuple[int, ...] = ()
    sample_index: int | None = None

    def config(self) -> dict:
        """The dict ``run_id`` is the hash of: what the run is (not when it is checkpointed)."""
        sections = {"task": self.task, "model": self.model, "init": self.init}
        return sections | {"train": self.train, "seed": self.seed}

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
        schedule = {"checkpoints": list(self.checkpoints)} | _steps_entry(self.checkpoint_steps)
        coords = {"grid_index": list(self.grid_index), "sample_index": self.sample_index}
        return ids | self.config() | schedule | coords

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
            grid_index=tuple(int(i) for i in d.get("grid_index", ())),
            sample_index=d.get("sample_index"),
        )


def _steps_entry(steps: tuple[int, ...]) -> dict:
    """``{"checkpoint_steps": [...]}``, or nothing for runs without mid-epoch checkpoints."""
    return {"checkpoint_steps": list(steps)} if steps else {}


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
    grid = {k: grid_values(v) for k, v in res["grid"].items()}
    keys = list(grid)
    drawn = sample_points(res["sample"]) if res.get("sample") else [None]
    runs = []
    for index in itertools.product(*(range(len(grid[k])) for k in keys)):
        point = {k: grid[k][i] for k, i in zip(keys, index, strict=True)}
        for i, sampled in enumerate(drawn):
            coords = (index, None if sampled is None else i)
            runs += _cell_runs(recipe, {**point, **(sampled or {})}, coords)
    return _drop_repeats(runs)


def _cell_runs(recipe: Recipe, point: dict, coords: tuple) -> list[RunConfig]:
    """The runs (one per seed) of one grid point and sampled point, at ``coords`` (the grid
    index and the sample index)."""
    base = {s: copy.deepcopy(recipe.data.get(s, {})) for s in SECTIONS}
    for key, value in point.items():
        section, name = key.split(".")
        base[section][name] = value
    sections = {s: resolve_section(s, base[s]) for s in SECTIONS}
    ckpts = checkpoint_epochs(recipe.resolved["checkpoints"], sections["train"]["epochs"])
    steps = tuple(sorted(recipe.resolved["checkpoints"].get("steps") or ()))
    cell = short_hash(sections)
    runs = []
    for seed in range(recipe.resolved["seeds"]):
        runs.append(
            RunConfig(
                run_id=make_run_id({**sections, "seed": seed}),
                cell_id=cell,
                seed=seed,
                checkpoints=ckpts,
                grid_point=point,
                checkpoint_steps=steps,
                grid_index=coords[0],
                sample_index=coords[1],
                **sections,
            )
        )
    return runs


def _drop_repeats(runs: list[RunConfig]) -> list[RunConfig]:
    """Runs in order, each id once: grid points that differ only in keys a run drops (e.g.
    ``train.momentum`` for adam runs of an optimizer x momentum grid) are one run."""
    seen: set[str] = set()
    return [r for r in runs if not (r.run_id in seen or seen.add(r.run_id))]
