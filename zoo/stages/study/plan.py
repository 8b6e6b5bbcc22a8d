"""Planning a study: which checkpoints, in which batches, with which settings.

A study batch holds whole grid cells of one architecture (averaging needs every seed of a cell
together), about ``execution.population_size`` runs, at the study's epochs. Its id hashes the
study kind, its run ids, the epochs and the study's settings, so changing a setting recomputes
and a rerun skips what the manifest holds (resumable, like the landscape stage).
"""

from __future__ import annotations

from dataclasses import dataclass

from zoo.errors import StudyError
from zoo.naming import short_hash
from zoo.recipe import Recipe, RunConfig, expand_recipe, resolve_section
from zoo.stages.plan import population_key

KINDS = ("averaging", "pruning", "transfer")


def study_stage(kind: str) -> str:
    """The manifest stage (and shard folder) of a study: ``study_<kind>``; also its config name
    in the built dataset."""
    return f"study_{kind}"


@dataclass(frozen=True)
class StudyBatch:
    """Whole grid cells studied together at ``epochs`` with one kind's ``settings``."""

    kind: str
    batch_id: str
    runs: tuple[RunConfig, ...]
    epochs: tuple[int, ...]
    settings: dict

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "batch_id": self.batch_id,
            "runs": [r.to_dict() for r in self.runs],
            "epochs": list(self.epochs),
            "settings": self.settings,
        }

    @classmethod
    def from_dict(cls, d: dict) -> StudyBatch:
        runs = tuple(RunConfig.from_dict(r) for r in d["runs"])
        return cls(d["kind"], d["batch_id"], runs, tuple(d["epochs"]), d["settings"])


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise StudyError(f"unknown study {kind!r}; allowed: {', '.join(KINDS)}")
    return kind


def study_epochs(recipe: Recipe, runs: list[RunConfig]) -> tuple[int, ...]:
    """``studies.at``, else the landscape's ``at`` (with landscape metrics), else the last
    checkpoint epoch; each must be a checkpoint epoch of every run."""
    res = recipe.resolved
    at = res["studies"]["at"]
    if at is None and res["landscape"]["metrics"]:
        at = res["landscape"]["at"]
    if not at:
        return (max(runs[0].checkpoints),)
    common = set.intersection(*(set(r.checkpoints) for r in runs))
    missing = sorted(set(at) - common)
    if missing:
        raise StudyError(
            f"studies.at: {missing} are not checkpoint epochs of every run; allowed: "
            f"{sorted(common)} (set studies.at or checkpoints.epochs)"
        )
    return tuple(sorted(at))


def transfer_task(task: dict, override: dict | None) -> dict:
    """The second task of a transfer study: ``override`` applied to the recipe's resolved task
    section (a whole task when it names another one); None: another teacher for
    ``teacher_student``.

    Example:
        >>> transfer_task({"name": "teacher_student", "teacher_seed": 0}, None)["teacher_seed"]
        1
    """
    if override is None:
        if task["name"] != "teacher_student":
            raise StudyError(
                f"studies.transfer.task is not set, and task {task['name']!r} has no default "
                "second task (teacher_student's is another teacher); set one of the same input "
                "shape, e.g. "
                "`studies: {transfer: {task: {split_seed: 1, n_train: 1000}}}` or a whole task "
                "with a name (another idx folder: {name: fashion_mnist, path: /data/mnist})"
            )
        return resolve_section("task", {**task, "teacher_seed": task.get("teacher_seed", 0) + 1})
    if override.get("name", task["name"]) != task["name"]:
        return resolve_section("task", dict(override))
    return resolve_section("task", {**task, **override})


def study_settings(recipe: Recipe, kind: str, runs: list[RunConfig]) -> dict:
    """The resolved settings of one study kind (transfer: with its second task resolved)."""
    settings = dict(recipe.resolved["studies"][kind])
    if kind == "transfer":
        settings["task"] = transfer_task(runs[0].task, settings["task"])
    return settings


def plan_study(recipe: Recipe, kind: str) -> list[StudyBatch]:
    """The batches of study ``kind`` for a recipe (see the module docstring)."""
    check_kind(kind)
    runs = expand_recipe(recipe)
    epochs = study_epochs(recipe, runs)
    settings = study_settings(recipe, kind, runs)
    size = recipe.execution["population_size"]
    groups: dict[str, dict[str, list[RunConfig]]] = {}
    for run in runs:
        groups.setdefault(population_key(run), {}).setdefault(run.cell_id, []).append(run)
    batches = []
    for cells in groups.values():
        current: list[RunConfig] = []
        for cell in cells.values():
            if current and len(current) + len(cell) > size:
                batches.append(_batch(kind, current, epochs, settings))
                current = []
            current += cell
        if current:
            batches.append(_batch(kind, current, epochs, settings))
    return batches


def _batch(kind, runs, epochs, settings) -> StudyBatch:
    ident = short_hash([kind, sorted(r.run_id for r in runs), list(epochs), settings], n=15)
    return StudyBatch(kind, "S" + ident, tuple(runs), tuple(epochs), settings)
