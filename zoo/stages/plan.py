"""The plan stage: which runs train together as one population batch, how many fit in memory,
and what the whole recipe will cost (checkpoints, storage, memory, FLOPs, time).

Runs can share a population when they share the data, the architecture's shapes, the batch size,
the epochs, the optimizer kind and the checkpoints (:func:`population_key`); their per-model
hyperparameters, init and seed may differ. A :class:`MemoryModel` caps a batch's size to a
memory budget. :mod:`zoo.stages.train` trains the batches; :func:`plan` makes a recipe's
:class:`Plan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from zoo.errors import ModelError, TrainingError
from zoo.naming import batch_id as make_batch_id
from zoo.naming import canonical_json, checkpoint_id, step_checkpoint_id
from zoo.nn.architectures import build_model
from zoo.recipe import Recipe, RunConfig, expand_recipe, per_model_keys
from zoo.tasks import Task, load_task

ROW_OVERHEAD_BYTES = 400  # ids, metrics and hyperparameter columns of one row, roughly
# float32 FLOP/s one worker sustains on population batches of small models, for time estimates:
# CPU measured by benchmarks/train_throughput.py (37-50 GFLOP/s per core on a 2-core EPYC, taken
# lower for slower cores); GPU a rough guess for small models (launch-bound), not yet measured.
WORKER_FLOPS = {"cpu": 30e9, "cuda": 2e12}
# The fixed cost of one chunk step (forward, backward, optimizer), fitted on CPU to the
# quickstart (small MLPs, step-bound) and fashion_cnn_s_hyperparameter_grid (compute-bound);
# GPU a guess (kernel launches).
STEP_SECONDS = {"cpu": 6e-3, "cuda": 1e-3}
# The families those two constants were fitted on: the estimate is within 3x of the shipped
# recipes' measured runtimes for them. The others spend most of a step in work it does not count
# (sines and cosines, normalization, softmax, small batched matmuls): their shipped recipes ran
# 5-11x longer than estimated on the 2-core CPU (SIREN zoo 10x on a quiet machine).
CALIBRATED_ARCHS = frozenset({"mlp", "cnn_s", "cnn_small"})


PER_MODEL_KEYS = ("lr", "weight_decay", "momentum", "betas", "eps")


@dataclass(frozen=True)
class PopulationBatch:
    """Runs trained together as one task, and which of their checkpoints to save.

    Attributes:
        batch_id: a hash of the run ids (and of ``save`` when it is set): independent of the
            cluster, so the same plan gives the same batches anywhere.
        runs: the runs, trained from their initialization.
        save: the checkpoint ids to write, where the store already holds the others (a grown
            recipe: new checkpoint epochs); ``None``: every checkpoint of every run.
    """

    batch_id: str
    runs: tuple[RunConfig, ...]
    save: tuple[str, ...] | None = None

    def to_dict(self) -> dict:
        runs = [r.to_dict() for r in self.runs]
        return {"batch_id": self.batch_id, "runs": runs, "save": self.save}

    @classmethod
    def from_dict(cls, d: dict) -> PopulationBatch:
        save = d.get("save")
        runs = tuple(RunConfig.from_dict(r) for r in d["runs"])
        return cls(d["batch_id"], runs, None if save is None else tuple(save))

    @classmethod
    def of(cls, runs: tuple[RunConfig, ...], save: tuple[str, ...] | None = None):
        """The batch of ``runs`` saving ``save``, with its id."""
        ids = [r.run_id for r in runs]
        ident = make_batch_id(ids) if save is None else make_batch_id([*ids, *sorted(save)])
        return cls(ident, runs, save)


def population_key(run: RunConfig) -> str:
    """What runs of one population must share: everything but per-model hyperparameters,
    the init, the seed and the signal a run fits (``task.index`` of signal tasks: the
    coordinates are shared, each model has its own targets)."""
    shared_train = {k: v for k, v in run.train.items() if k not in PER_MODEL_KEYS}
    # the dropout rate is per model (masks are drawn per model); only having the layers is shared
    model = {k: (True if k == "dropout" else v) for k, v in run.model.items()}
    checkpoints = [list(run.checkpoints), list(run.checkpoint_steps)]
    per_model = per_model_keys("task")
    task = {k: v for k, v in run.task.items() if k not in per_model}
    return canonical_json([task, model, shared_train, checkpoints])


def plan_batches(
    runs: list[RunConfig],
    population_size: int,
    max_bytes: int | None = None,
    chunk_size: int | None = None,
    eval_batch_size: int = 1024,
    stored: set[str] | frozenset[str] = frozenset(),
) -> list[PopulationBatch]:
    """Group the runs that still need training into population batches, in recipe order.

    Runs that can share a population (:func:`population_key`) are cut into batches of at most
    ``population_size`` runs, and fewer where :func:`memory_model` says that many would not fit
    in ``max_bytes``. The grouping depends on the runs and these recipe settings only, never on
    the cluster, so a zoo is the same whatever runs it. (Where the memory model cannot be built,
    because the model does not fit the task, the group keeps ``population_size``: its batch
    reports the error when it runs.) Done-ness is per run and checkpoint: a run whose checkpoints
    are all ``stored`` is left out, and a run missing some is trained again, saving only those
    (the store keeps no optimizer state to resume from; a run retrained on the same machine
    reproduces its stored checkpoints bit for bit, as tests/test_growth.py checks).

    Args:
        runs: the recipe's runs (``expand_recipe``).
        population_size: most runs per batch.
        max_bytes: memory budget of one batch on its device (``None``: no memory limit).
        chunk_size, eval_batch_size: the recipe's execution settings the memory model needs.
        stored: checkpoint ids the store holds (:meth:`Manifest.stored_checkpoints`).
    Returns:
        the batches; a batch's id is a hash of its run ids (and of what it saves).
    """
    groups: dict[str, list[RunConfig]] = {}
    keys: dict[str, str] = {}  # runs of one grid cell share a key: hash it once per cell
    for run in runs:
        key = keys.get(run.cell_id) or keys.setdefault(run.cell_id, population_key(run))
        groups.setdefault(key, []).append(run)
    batches = []
    for members in groups.values():
        members, missing, whole = _unfinished(members, stored)
        if not members:
            continue
        size = population_size
        if max_bytes is not None:
            try:
                mem = memory_model(
                    members[0], chunk_size=chunk_size, eval_batch_size=eval_batch_size
                )
                size = min(size, mem.max_models(max_bytes))
            except ModelError:  # the model does not fit the task: its batch reports this when
                pass  # it runs, and the other batches still train
        for i in range(0, len(members), size):
            chunk = tuple(members[i : i + size])
            if all(len(missing[r.run_id]) == whole for r in chunk):
                batches.append(PopulationBatch.of(chunk))
            else:
                save = tuple(c for r in chunk for c in missing[r.run_id])
                batches.append(PopulationBatch.of(chunk, save))
    return batches


def checkpoint_ids(run: RunConfig, n_train: int | None = None) -> list[str]:
    """Every checkpoint id a run saves: its epochs, then its mid-epoch steps (those that do not
    end a saved epoch; ``n_train``, the training set's size, places them)."""
    ids = [checkpoint_id(run.run_id, e) for e in run.checkpoints]
    if run.checkpoint_steps:
        ids += [step_checkpoint_id(run.run_id, s) for s in sorted(step_schedule(run, n_train))]
    return ids


def _unfinished(runs: list[RunConfig], stored) -> tuple[list[RunConfig], dict[str, list[str]], int]:
    """The runs with checkpoints the store lacks, those checkpoints' ids by run, and how many
    checkpoints a run has (the runs of one population share their schedule)."""
    n_train = len(load_task(runs[0].task).x_train) if runs[0].checkpoint_steps else None
    ids = {r.run_id: checkpoint_ids(r, n_train) for r in runs}
    missing = {run: [c for c in cks if c not in stored] for run, cks in ids.items()}
    return [r for r in runs if missing[r.run_id]], missing, len(ids[runs[0].run_id])


@dataclass(frozen=True)
class MemoryModel:
    """Peak bytes of training a population of one kind of model, as ``bytes(M)``.

    ``shared + per_model * M + per_chunk``: the task tensors are held once; every model has its
    parameters, gradients, optimizer state, the checkpoints kept until its shard is written and
    its evaluation activations (all models are evaluated at once); the training activations of
    one chunk of models are alive at a time. A planning estimate (float32, no allocator slack).
    """

    shared: int
    per_model: int
    per_chunk: int

    def bytes(self, n_models: int) -> int:
        return self.shared + self.per_model * n_models + self.per_chunk

    def max_models(self, max_bytes: int) -> int:
        """Most models that fit in ``max_bytes`` (at least 1: a single model always runs)."""
        return max(1, (max_bytes - self.shared - self.per_chunk) // max(1, self.per_model))

    def to_dict(self) -> dict:
        return {"shared": self.shared, "per_model": self.per_model, "per_chunk": self.per_chunk}

    @classmethod
    def from_dict(cls, d: dict) -> MemoryModel:
        return cls(int(d["shared"]), int(d["per_model"]), int(d["per_chunk"]))


def activation_sizes(
    module: nn.Module, input_shape: tuple[int, ...], example: torch.Tensor | None = None
) -> list[int]:
    """Elements per example of the input and of each layer's output, in order.

    Residual networks and transformers (not ``nn.Sequential``) count every leaf module's
    output, plus a transformer's attention scores; ``example`` is one input (token ids for a
    transformer), zeros of ``input_shape`` by default."""
    h = torch.zeros(1, *input_shape) if example is None else example[:1]
    if not isinstance(module, nn.Sequential):
        return (
            [h.numel()] + [out.numel() for _, out in _leaf_outputs(module, h)] + _scores(module, h)
        )
    sizes = [h.numel()]
    with torch.no_grad():
        for layer in module.eval():  # eval: dropout draws nothing
            h = layer(h)
            sizes.append(h.numel())
    return sizes


def _leaf_outputs(module: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor]]:
    """Every leaf module of ``module`` and its output on ``x``, in the order they run."""
    seen: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda m, _i, out: seen.append((m, out)))
        for m in module.modules()
        if not list(m.children())
    ]
    try:
        with torch.no_grad():
            module.eval()(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def _scores(module: nn.Module, x: torch.Tensor) -> list[int]:
    """Attention scores (and their softmax) per example of each transformer layer."""
    heads, layers = getattr(module, "heads", 0), len(getattr(module, "blocks", ()))
    t = x.shape[-1]
    return [2 * heads * t * t] * layers if heads else []


def memory_model(
    run: RunConfig,
    task: Task | None = None,
    chunk_size: int | None = None,
    eval_batch_size: int = 1024,
) -> MemoryModel:
    """The :class:`MemoryModel` of populations of ``run``'s kind (see :mod:`zoo.stages.train`).

    Counted in float32 words: parameters, gradients, the stacked copy a snapshot makes, the
    optimizer state (SGD momentum 1, Adam 2), checkpoints (kept, unflattened and serialized:
    3 copies each), evaluation activations (every layer's output for ``eval_batch_size``
    examples: no-grad frees them as it goes, but the folded copies and convolution buffers of
    population CNNs take about as much; measured 648 MiB for 18 CNN-s at 1024 examples,
    estimated 621), training activations and their gradients for one chunk, and the data.
    """
    task = task or load_task(run.task)
    module, layout = build_model(run.model, task.input_shape, task.n_classes)
    sizes = activation_sizes(module, task.input_shape, task.x_train)
    states = 2 if run.train["optimizer"] in ("adam", "adamw") else int(run.train["momentum"] > 0)
    saved = len(run.checkpoints) + len(run.checkpoint_steps)
    words = layout.num_params * (3 + states + 3 * saved)
    eval_words = min(eval_batch_size, max(len(task.x_train), len(task.x_test))) * sum(sizes)
    chunk = chunk_size or default_chunk(run.model)
    batch = run.train["batch_size"]
    chunk_words = chunk * batch * (2 * sum(sizes) + sizes[0])  # activations, grads, minibatch
    data = sum(
        t.numel() * t.element_size() for t in (task.x_train, task.y_train, task.x_test, task.y_test)
    )
    return MemoryModel(shared=data, per_model=4 * (words + eval_words), per_chunk=4 * chunk_words)


# coordinate networks are tiny and share one input: chunks of 32 measured best on a 2 MB L2
# cache for SIREN 2x32 on 8x8 (64 points) and 28x28 (784 points) grids, full batch
COORDINATE_ARCHS = ("siren", "fourier_mlp")


def default_chunk(model_cfg: dict) -> int:
    """Models per forward/backward chunk when the recipe sets none (see :mod:`zoo.stages.train`):
    32 for coordinate networks (small, full-batch), 8 for MLPs and transformers (batched
    matmuls), 4 for convolutional networks."""
    if model_cfg["arch"] in COORDINATE_ARCHS:
        return 32
    return 8 if model_cfg["arch"] in ("mlp", "transformer") else 4


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps of one epoch over ``n`` examples (the last minibatch may be smaller)."""
    return math.ceil(n / batch_size)


def step_schedule(run: RunConfig, n_train: int) -> set[int]:
    """The optimizer steps of ``run.checkpoint_steps`` saved mid-epoch: those that end a saved
    epoch are that epoch's checkpoint. Raises when a step lies past the last saved epoch."""
    per_epoch = steps_per_epoch(n_train, run.train["batch_size"])
    last = max(run.checkpoints, default=0) * per_epoch
    late = [s for s in run.checkpoint_steps if s > last]
    if late:
        raise TrainingError(
            f"checkpoints.steps {late} lie past step {last}, the end of the last saved epoch "
            f"({max(run.checkpoints, default=0)} epochs x {per_epoch} steps of "
            f"{run.train['batch_size']} of {n_train} examples)"
        )
    saved = set(run.checkpoints)
    return {s for s in run.checkpoint_steps if not (s % per_epoch == 0 and s // per_epoch in saved)}


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
                models[key] = memory_model(
                    batch.runs[0],
                    chunk_size=ex["chunk_size"],
                    eval_batch_size=ex["eval_batch_size"],
                )
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
        shipped recipes (2-core CPU, 2 workers) for ``CALIBRATED_ARCHS``, 5-11x low for the
        others (:meth:`estimate_accuracy`). Divide by the number of workers for the wall
        time."""
        compute = sum(self.flops().values()) / WORKER_FLOPS[device]
        return compute + self.steps() * STEP_SECONDS[device]

    def estimate_accuracy(self) -> str:
        """How far to trust :meth:`estimated_seconds` for this plan's architectures."""
        archs = sorted({b.runs[0].model["arch"] for b in self.batches})
        if set(archs) <= CALIBRATED_ARCHS:
            return "rough: within 3x on the shipped recipes"
        other = ", ".join(a for a in archs if a not in CALIBRATED_ARCHS)
        return f"a lower bound for {other}: its shipped recipes took 5-11x longer than estimated"


def forward_flops(run: RunConfig) -> int:
    """Float operations (2 per multiply-add) of the Linear and Conv2d layers in one forward
    pass of one example through the run's model (and a transformer's attention products);
    elementwise layers are not counted."""
    import torch
    from torch import nn

    task = load_task(run.task)
    module, _ = build_model(run.model, task.input_shape, task.n_classes)
    if not isinstance(module, nn.Sequential):
        return _leaf_flops(module, task.x_train[:1])
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


def _leaf_flops(module: nn.Module, x: torch.Tensor) -> int:
    """:func:`forward_flops` of a residual network or transformer on one example ``x``."""
    total = 0
    for layer, out in _leaf_outputs(module, x):
        if isinstance(layer, nn.Linear):
            total += 2 * layer.in_features * out.numel()
        elif isinstance(layer, nn.Conv2d):
            per_output = layer.in_channels // layer.groups * math.prod(layer.kernel_size)
            total += 2 * per_output * out.numel()
    wte = getattr(module, "wte", None)
    if wte is None:
        return total
    t, (vocab, width) = x.shape[-1], wte.weight.shape
    total += 4 * t * t * width * len(module.blocks)  # q·k and scores·v
    return total + (2 * t * width * vocab if module.head is None else 0)  # a tied head


def plan(recipe: Recipe, stored: set[str] | frozenset[str] = frozenset()) -> Plan:
    """Expand a recipe into runs and the population batches of what ``stored`` (checkpoint ids
    the store holds) lacks; no training."""
    runs = expand_recipe(recipe)
    ex = recipe.execution
    batches = plan_batches(
        runs,
        ex["population_size"],
        max_bytes=ex["batch_memory_mb"] * 2**20,
        chunk_size=ex["chunk_size"],
        eval_batch_size=ex["eval_batch_size"],
        stored=stored,
    )
    for batch in batches:  # mid-epoch steps past the end of training fail here, not on a worker
        if batch.runs[0].checkpoint_steps:
            step_schedule(batch.runs[0], len(load_task(batch.runs[0].task).x_train))
    return Plan(recipe, runs, batches)
