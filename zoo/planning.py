"""Planning: which runs train together as one population batch, and how many fit in memory.

Runs can share a population when they share the data, the architecture's shapes, the batch size,
the epochs, the optimizer kind and the checkpoints (:func:`population_key`); their per-model
hyperparameters, init and seed may differ. A :class:`MemoryModel` caps a batch's size to a
memory budget. :mod:`zoo.training` trains the batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import ZooError
from .ids import batch_id as make_batch_id
from .ids import canonical_json
from .models import build_model
from .recipe import RunConfig
from .tasks import Task, load_task

PER_MODEL_KEYS = ("lr", "weight_decay", "momentum", "betas", "eps")


@dataclass(frozen=True)
class PopulationBatch:
    """Runs trained together as one task; its id depends on its runs only."""

    batch_id: str
    runs: tuple[RunConfig, ...]

    def to_dict(self) -> dict:
        return {"batch_id": self.batch_id, "runs": [r.to_dict() for r in self.runs]}

    @classmethod
    def from_dict(cls, d: dict) -> PopulationBatch:
        return cls(d["batch_id"], tuple(RunConfig.from_dict(r) for r in d["runs"]))


def population_key(run: RunConfig) -> str:
    """What runs of one population must share: everything but per-model hyperparameters,
    the init and the seed."""
    shared_train = {k: v for k, v in run.train.items() if k not in PER_MODEL_KEYS}
    # the dropout rate is per model (masks are drawn per model); only having the layers is shared
    model = {k: (True if k == "dropout" else v) for k, v in run.model.items()}
    checkpoints = [list(run.checkpoints), list(run.checkpoint_steps)]
    return canonical_json([run.task, model, shared_train, checkpoints])


def plan_batches(
    runs: list[RunConfig], population_size: int, max_bytes: int | None = None,
    chunk_size: int | None = None, eval_batch_size: int = 1024,
) -> list[PopulationBatch]:  # fmt: skip
    """Group runs into population batches, in recipe order.

    Runs that can share a population (:func:`population_key`) are cut into batches of at most
    ``population_size`` runs, and fewer where :func:`memory_model` says that many would not fit
    in ``max_bytes``. The grouping depends on the runs and these recipe settings only, never on
    the cluster, so a zoo is the same whatever runs it. (Where the memory model cannot be built,
    because the model does not fit the task or the task's data cannot be read here, the group
    keeps ``population_size``; plan where the data is, as the workers will.)

    Args:
        runs: the recipe's runs (``expand_recipe``).
        population_size: most runs per batch.
        max_bytes: memory budget of one batch on its device (``None``: no memory limit).
        chunk_size, eval_batch_size: the recipe's execution settings the memory model needs.
    Returns:
        the batches; a batch's id is a hash of its run ids.
    """
    groups: dict[str, list[RunConfig]] = {}
    keys: dict[str, str] = {}  # runs of one grid cell share a key: hash it once per cell
    for run in runs:
        key = keys.get(run.cell_id) or keys.setdefault(run.cell_id, population_key(run))
        groups.setdefault(key, []).append(run)
    batches = []
    for members in groups.values():
        size = population_size
        if max_bytes is not None:
            try:
                mem = memory_model(members[0], chunk_size=chunk_size,
                                   eval_batch_size=eval_batch_size)  # fmt: skip
                size = min(size, mem.max_models(max_bytes))
            except ZooError:  # model or data unusable here: the batch reports it when it runs
                pass
        for i in range(0, len(members), size):
            chunk = tuple(members[i : i + size])
            batches.append(PopulationBatch(make_batch_id([r.run_id for r in chunk]), chunk))
    return batches


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


def activation_sizes(module: nn.Sequential, input_shape: tuple[int, ...]) -> list[int]:
    """Elements per example of the input and of each layer's output, in order."""
    h = torch.zeros(1, *input_shape)
    sizes = [h.numel()]
    with torch.no_grad():
        for layer in module.eval():  # eval: dropout draws nothing
            h = layer(h)
            sizes.append(h.numel())
    return sizes


def memory_model(
    run: RunConfig, task: Task | None = None, chunk_size: int | None = None,
    eval_batch_size: int = 1024,
) -> MemoryModel:  # fmt: skip
    """The :class:`MemoryModel` of populations of ``run``'s kind (see :mod:`zoo.training`).

    Counted in float32 words: parameters, gradients, the stacked copy a snapshot makes, the
    optimizer state (SGD momentum 1, Adam 2), checkpoints (kept, unflattened and serialized:
    3 copies each), evaluation activations (every layer's output for ``eval_batch_size``
    examples: no-grad frees them as it goes, but the folded copies and convolution buffers of
    population CNNs take about as much; measured 648 MiB for 18 CNN-s at 1024 examples,
    estimated 621), training activations and their gradients for one chunk, and the data.
    """
    task = task or load_task(run.task)
    module, layout = build_model(run.model, task.input_shape, task.n_classes)
    sizes = activation_sizes(module, task.input_shape)
    states = 2 if run.train["optimizer"] in ("adam", "adamw") else int(run.train["momentum"] > 0)
    saved = len(run.checkpoints) + len(run.checkpoint_steps)
    words = layout.num_params * (3 + states + 3 * saved)
    eval_words = min(eval_batch_size, max(len(task.x_train), len(task.x_test))) * sum(sizes)
    chunk = chunk_size or default_chunk(run.model)
    batch = run.train["batch_size"]
    chunk_words = chunk * batch * (2 * sum(sizes) + sizes[0])  # activations, grads, minibatch
    data = sum(t.numel() * t.element_size() for t in (task.x_train, task.y_train,
                                                      task.x_test, task.y_test))  # fmt: skip
    return MemoryModel(shared=data, per_model=4 * (words + eval_words), per_chunk=4 * chunk_words)


def default_chunk(model_cfg: dict) -> int:
    """Models per forward/backward chunk when the recipe sets none (see :mod:`zoo.training`)."""
    return 8 if model_cfg["arch"] == "mlp" else 4
