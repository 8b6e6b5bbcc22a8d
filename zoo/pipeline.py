"""The stages of a zoo, as functions: plan -> train -> build. The CLI only parses and prints.

Every stage reads and writes the output folder only, so each can run alone and again:
``train`` skips batches the manifest already records, ``build`` rewrites the dataset folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .build import build_dataset
from .dist import ExecOptions, Progress, RunSummary, run_stage, run_train
from .errors import DistError
from .fsio import atomic_write_bytes
from .landscape import LandscapeBatch, landscape_task, plan_landscape
from .models import build_model
from .planning import PopulationBatch, default_chunk, memory_model, plan_batches, population_key
from .recipe import Recipe, RunConfig, expand_recipe
from .tasks import load_task
from .training import step_schedule

ROW_OVERHEAD_BYTES = 400  # ids, metrics and hyperparameter columns of one row, roughly
# float32 FLOP/s one worker sustains on population batches of small models, for time estimates:
# CPU measured by benchmarks/train_throughput.py (37-50 GFLOP/s per core on a 2-core EPYC, taken
# lower for slower cores); GPU a rough guess for small models (launch-bound), not yet measured.
WORKER_FLOPS = {"cpu": 30e9, "cuda": 2e12}
# The fixed cost of one chunk step (forward, backward, optimizer), fitted on CPU to the
# quickstart (small MLPs, step-bound) and fashion_cnn_s_hyperparameter_grid (compute-bound);
# GPU a guess (kernel launches).
STEP_SECONDS = {"cpu": 6e-3, "cuda": 1e-3}


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

    def memory_bytes(self) -> dict[str, int]:
        """Estimated peak memory of each batch on its device (:func:`memory_model`)."""
        ex, models = self.recipe.execution, {}
        out = {}
        for batch in self.batches:
            key = population_key(batch.runs[0])
            if key not in models:
                models[key] = memory_model(batch.runs[0], chunk_size=ex["chunk_size"],
                                           eval_batch_size=ex["eval_batch_size"])  # fmt: skip
            out[batch.batch_id] = models[key].bytes(len(batch.runs))
        return out

    def flops(self) -> dict[str, int]:
        """Float operations of each batch: training (a backward pass counted as two forwards)
        and the evaluation of every checkpoint on the train and test data."""
        per_kind, out = {}, {}
        for batch in self.batches:
            run = batch.runs[0]
            key = population_key(run)
            if key not in per_kind:
                task = load_task(run.task)
                fwd, n_train, n_test = forward_flops(run), len(task.x_train), len(task.x_test)
                train = 3 * fwd * n_train * max(run.checkpoints, default=0)
                per_kind[key] = train + fwd * (n_train + n_test) * len(run.checkpoints)
            out[batch.batch_id] = per_kind[key] * len(batch.runs)
        return out

    def steps(self) -> int:
        """Optimizer steps of every chunk of every batch (what the fixed cost of a step, in
        Python and kernel launches, multiplies)."""
        total, chunk = 0, self.recipe.execution["chunk_size"]
        for batch in self.batches:
            run = batch.runs[0]
            n_train = len(load_task(run.task).x_train)
            per_epoch = math.ceil(n_train / run.train["batch_size"])
            chunks = math.ceil(len(batch.runs) / (chunk or default_chunk(run.model)))
            total += per_epoch * max(run.checkpoints, default=0) * chunks  # trained epochs
        return total

    def estimated_seconds(self, device: str = "cpu") -> float:
        """Worker-seconds the plan needs on ``device`` (cpu or cuda): FLOPs / ``WORKER_FLOPS``
        plus ``STEP_SECONDS`` per chunk step. Rough: within 3x of the measured runtimes of the
        shipped recipes (2-core CPU, 2 workers). Divide by the number of workers for the wall
        time."""
        compute = sum(self.flops().values()) / WORKER_FLOPS[device]
        return compute + self.steps() * STEP_SECONDS[device]


def forward_flops(run: RunConfig) -> int:
    """Float operations (2 per multiply-add) of the Linear and Conv2d layers in one forward
    pass of one example through the run's model; elementwise layers are not counted."""
    import torch
    from torch import nn

    task = load_task(run.task)
    module, _ = build_model(run.model, task.input_shape, task.n_classes)
    h, total = torch.zeros(1, *task.input_shape), 0
    with torch.no_grad():
        for layer in module.eval():  # eval: dropout draws nothing
            h = layer(h)
            if isinstance(layer, nn.Linear):
                total += 2 * layer.in_features * layer.out_features
            elif isinstance(layer, nn.Conv2d):
                per_output = layer.in_channels // layer.groups * math.prod(layer.kernel_size)
                total += 2 * per_output * h.numel()
    return total


def plan(recipe: Recipe) -> Plan:
    """Expand a recipe into runs and population batches (no training)."""
    runs = expand_recipe(recipe)
    ex = recipe.execution
    batches = plan_batches(
        runs, ex["population_size"], max_bytes=ex["batch_memory_mb"] * 2**20,
        chunk_size=ex["chunk_size"], eval_batch_size=ex["eval_batch_size"],
    )  # fmt: skip
    for batch in batches:  # mid-epoch steps past the end of training fail here, not on a worker
        if batch.runs[0].checkpoint_steps:
            step_schedule(batch.runs[0], len(load_task(batch.runs[0].task).x_train))
    return Plan(recipe, runs, batches)


def train(
    recipe: Recipe, options: ExecOptions, progress: Progress | None = None,
    batches: list[PopulationBatch] | None = None, **kwargs,
) -> RunSummary:  # fmt: skip
    """Train every batch of the recipe that the manifest does not hold yet (``batches``: the
    recipe's plan, when the caller has it already); ``kwargs`` go to
    :func:`zoo.dist.run_stage` (``client``, ``on_start``)."""
    out = recipe.out_dir  # a folder, or an fsspec URL (the store reads Path-mangled URLs too)
    atomic_write_bytes(out / "recipe.yaml", recipe.to_yaml().encode())  # creates the folder
    batches = plan(recipe).batches if batches is None else batches
    return run_train(batches, out, options, progress, **kwargs)


def raise_for_failures(summary: RunSummary, recipe: Recipe, stage: str = "train") -> None:
    """Stop with the failed batches named and how to retry them."""
    if not summary.failed:
        return
    lines = []
    for b, e in summary.failed.items():
        runs = summary.failed_runs.get(b, [])
        shown = ", ".join(runs[:8]) + (f" … +{len(runs) - 8}" if len(runs) > 8 else "")
        lines.append(f"  {b} (runs {shown}): {e.splitlines()[-1]}")
    target = recipe.source if stage == "train" else recipe.out_dir
    command = f"zoo {stage} {target}"
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
    return build_dataset(recipe, recipe.out_dir)


def plan_landscape_batches(recipe: Recipe) -> list[LandscapeBatch]:
    """The landscape batches of a recipe (whole grid cells, about ``population_size`` runs)."""
    settings = recipe.resolved["landscape"]
    return plan_landscape(expand_recipe(recipe), settings, recipe.execution["population_size"])


def landscape(
    recipe: Recipe, options: ExecOptions, progress: Progress | None = None,
    batches: list[LandscapeBatch] | None = None, **kwargs,
) -> RunSummary:  # fmt: skip
    """Annotate the trained checkpoints with the recipe's landscape metrics (resumable: batches
    whose metric shard the manifest holds are skipped; ``batches``: the landscape plan, when the
    caller has it already); ``kwargs`` go to :func:`zoo.dist.run_stage` (``client``,
    ``on_start``)."""
    batches = plan_landscape_batches(recipe) if batches is None else batches
    return run_stage("landscape", batches, landscape_task, recipe.out_dir, options, progress,
                     done_exts=("parquet",), **kwargs)  # fmt: skip
