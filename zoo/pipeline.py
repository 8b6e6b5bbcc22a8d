"""The stages of a zoo, as functions: plan -> train -> build. The CLI only parses and prints.

Every stage reads and writes the output folder only, so each can run alone and again:
``train`` skips batches the manifest already records, ``build`` rewrites the dataset folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .build import build_dataset
from .dist import ExecOptions, Progress, RunSummary, run_stage, run_train
from .errors import DistError
from .landscape import LandscapeBatch, landscape_task, plan_landscape
from .models import build_model
from .recipe import Recipe, RunConfig, expand_recipe
from .store import Manifest, atomic_write_bytes
from .tasks import load_task
from .training import PopulationBatch, plan_batches

ROW_OVERHEAD_BYTES = 400  # ids, metrics and hyperparameter columns of one row, roughly


@dataclass(frozen=True)
class Plan:
    """What a recipe will compute."""

    recipe: Recipe
    runs: list[RunConfig]
    batches: list[PopulationBatch]

    @property
    def checkpoints(self) -> int:
        return sum(len(r.checkpoints) for r in self.runs)

    def num_params(self) -> dict[str, int]:
        """Parameters per model of each batch (loads each task once to know its input shape)."""
        out = {}
        for batch in self.batches:
            run = batch.runs[0]
            task = load_task(run.task)
            out[batch.batch_id] = build_model(run.model, task.input_shape, task.n_classes)[
                1
            ].num_params
        return out

    def storage_bytes(self) -> int:
        """Estimated bytes of the store plus the dataset (weights are float32, written twice)."""
        params = self.num_params()
        total = 0
        for batch in self.batches:
            per_row = 4 * params[batch.batch_id] + ROW_OVERHEAD_BYTES
            total += per_row * sum(len(r.checkpoints) for r in batch.runs)
        return 2 * total


def plan(recipe: Recipe) -> Plan:
    """Expand a recipe into runs and population batches (no training)."""
    runs = expand_recipe(recipe)
    return Plan(recipe, runs, plan_batches(runs, recipe.execution["population_size"]))


def train(recipe: Recipe, options: ExecOptions, progress: Progress | None = None) -> RunSummary:
    """Train every batch of the recipe that the manifest does not hold yet."""
    out = recipe.out_dir
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "recipe.yaml", recipe.to_yaml().encode())
    return run_train(plan(recipe).batches, out, options, progress)


def raise_for_failures(summary: RunSummary, recipe: Recipe, stage: str = "train") -> None:
    """Stop with the failed batches named and how to retry them."""
    if not summary.failed:
        return
    lines = [f"  {b}: {e.splitlines()[-1]}" for b, e in summary.failed.items()]
    target = recipe.source if stage == "train" else recipe.out_dir
    command = f"zoo {stage} {target}"
    raise DistError(
        f"{len(summary.failed)} of {len(summary.failed) + len(summary.done)} {stage} batches "
        "failed:\n" + "\n".join(lines)
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
    return build_dataset(recipe, recipe.out_dir)


def plan_landscape_batches(recipe: Recipe) -> list[LandscapeBatch]:
    """The landscape batches of a recipe (whole grid cells, about ``population_size`` runs)."""
    settings = recipe.resolved["landscape"]
    return plan_landscape(expand_recipe(recipe), settings, recipe.execution["population_size"])


def landscape(recipe: Recipe, options: ExecOptions, progress: Progress | None = None) -> RunSummary:
    """Annotate the trained checkpoints with the recipe's landscape metrics (resumable: batches
    whose metric shard the manifest holds are skipped)."""
    out = recipe.out_dir
    batches = plan_landscape_batches(recipe)
    done = Manifest(out).done_batch_ids("landscape", exts=("parquet",))
    todo = [b for b in batches if b.batch_id not in done]
    summary = run_stage("landscape", todo, landscape_task, out, options, progress)
    summary.skipped += [b.batch_id for b in batches if b.batch_id in done]
    return summary
