"""A zoo's stages run in order on a cluster: train -> landscape -> build (``zoo run``).

Every stage reads and writes the output folder only, so each can run alone and again:
``train`` and ``landscape`` skip batches the manifest already records, ``build`` rewrites the
dataset folder. The CLI only parses and prints; these functions are also the Python API
(``zoo.run``, ``zoo.train``).
"""

from __future__ import annotations

from pathlib import Path

from zoo.dist.options import ExecOptions
from zoo.dist.run import Progress, RunSummary, run_stage
from zoo.errors import DistError
from zoo.naming import RECIPE_FILE
from zoo.recipe import Recipe, expand_recipe
from zoo.stages.build import finish_build, parts_to_write, plan_build
from zoo.stages.build.collect import BuildPlan
from zoo.stages.build.parquet import STAGE, build_part
from zoo.stages.landscape import LandscapeBatch, landscape_task, plan_landscape_batches
from zoo.stages.plan import PopulationBatch, plan
from zoo.stages.train import train_task
from zoo.store.fs import atomic_write_bytes
from zoo.store.manifest import Manifest


def train(
    recipe: Recipe,
    options: ExecOptions,
    progress: Progress | None = None,
    batches: list[PopulationBatch] | None = None,
    **kwargs,
) -> RunSummary:
    """Train what the store lacks: every run with a checkpoint the manifest does not hold
    (``batches``: the plan of that, when the caller has it already); ``kwargs`` go to
    :func:`zoo.dist.run.run_stage` (``client``, ``on_start``)."""
    out = recipe.out_dir  # a folder, or an fsspec URL (the store reads Path-mangled URLs too)
    atomic_write_bytes(out / RECIPE_FILE, recipe.to_yaml().encode())  # creates the folder
    if batches is None:
        batches = plan(recipe, stored_checkpoints(recipe)).batches
    todo = {r.run_id for b in batches for r in b.runs}
    stored = sum(r.run_id not in todo for r in expand_recipe(recipe))
    return run_stage(
        "train", batches, train_task, out, options, progress, stored_runs=stored, **kwargs
    )


def stored_checkpoints(recipe: Recipe) -> set[str]:
    """The checkpoint ids the recipe's store holds (planning trains only the others)."""
    return Manifest(recipe.out_dir).stored_checkpoints("train")


def raise_for_failures(
    summary: RunSummary, recipe: Recipe, stage: str = "train", command: str | None = None
) -> None:
    """Stop with the failed batches named and how to retry them (``command``: the command that
    retries them, default ``zoo STAGE RECIPE-or-OUT``)."""
    if not summary.failed:
        return
    lines = []
    for b, e in summary.failed.items():
        runs = summary.failed_runs.get(b, [])
        shown = ", ".join(runs[:8]) + (f" … +{len(runs) - 8}" if len(runs) > 8 else "")
        lines.append(f"  {b} (runs {shown}): {e.splitlines()[-1]}")
    target = recipe.source if stage == "train" else recipe.out_dir
    command = command or f"zoo {stage} {target}"
    raise DistError(
        f"{len(summary.failed)} of {len(summary.failed) + len(summary.done)} {stage} batches "
        "failed:\n"
        + "\n".join(lines)
        + f"\nThe others are saved. Fix the cause and run `{command}` again: "
        "only the failed batches run."
    )


def run(
    recipe: Recipe, options: ExecOptions | None = None, progress: Progress | None = None
) -> Path:
    """Train what is missing, then build the dataset folder; returns the folder."""
    options = options or ExecOptions.from_recipe(recipe.execution)
    summary = train(recipe, options, progress)
    raise_for_failures(summary, recipe)
    if recipe.resolved["landscape"]["metrics"]:
        raise_for_failures(landscape(recipe, options, progress), recipe, stage="landscape")
    return build(recipe, options, progress)


def build(
    recipe: Recipe,
    options: ExecOptions,
    progress: Progress | None = None,
    plan: BuildPlan | None = None,
    **kwargs,
) -> Path:
    """Build the dataset folder, writing its parts as tasks where ``options`` say (in this
    process for ``workers=0``, else on a Dask cluster, like training); only parts whose inputs
    changed are written. ``plan``: the build plan, when the caller has it already; ``kwargs``
    go to :func:`zoo.dist.run.run_stage` (``client``, ``on_start``)."""
    plan = plan or plan_build(recipe, recipe.out_dir)
    parts = parts_to_write(plan, recipe.out_dir)
    summary = run_stage(
        STAGE, parts, build_part, recipe.out_dir, options, progress, done_exts=(), **kwargs
    )
    raise_for_failures(summary, recipe, stage="build")
    return finish_build(recipe, recipe.out_dir, plan)


def landscape(
    recipe: Recipe,
    options: ExecOptions,
    progress: Progress | None = None,
    batches: list[LandscapeBatch] | None = None,
    **kwargs,
) -> RunSummary:
    """Annotate the trained checkpoints with the recipe's landscape metrics (resumable: batches
    whose metric shard the manifest holds are skipped; ``batches``: the landscape plan, when the
    caller has it already); ``kwargs`` go to :func:`zoo.dist.run.run_stage` (``client``,
    ``on_start``)."""
    batches = plan_landscape_batches(recipe) if batches is None else batches
    return run_stage(
        "landscape",
        batches,
        landscape_task,
        recipe.out_dir,
        options,
        progress,
        done_exts=("parquet",),
        **kwargs,
    )


def study(
    recipe: Recipe,
    kind: str,
    options: ExecOptions | None = None,
    progress: Progress | None = None,
    batches: list | None = None,
    **kwargs,
) -> RunSummary:
    """Run study ``kind`` (averaging, pruning, transfer) on the trained checkpoints (resumable:
    batches whose shard the manifest holds are skipped; ``batches``: the study's plan, when the
    caller has it already); ``kwargs`` go to :func:`zoo.dist.run.run_stage`. The build then
    publishes it as the config ``study_<kind>``."""
    from zoo.stages.study import plan_study, study_stage, study_task

    options = options or ExecOptions.from_recipe(recipe.execution)
    batches = plan_study(recipe, kind) if batches is None else batches
    return run_stage(
        study_stage(kind),
        batches,
        study_task,
        recipe.out_dir,
        options,
        progress,
        done_exts=("parquet",),
        **kwargs,
    )
