"""Training: population batches of runs trained together, and the per-model loop they must equal.

A population batch (planned by :mod:`zoo.stages.plan`) holds runs that share the data, the
architecture's shapes, the batch size, the epochs, the optimizer kind and the checkpoint epochs.
Their parameters are stacked along a leading model axis ``M``; each step draws every model's own
minibatch, sums the per-model mean losses (so each model's gradient is its own) and applies one
:class:`PopulationOptimizer` update. The forward/backward runs in chunks of a few models so
activations stay in cache (8 models for MLPs, 4 for CNNs: measured best on a 2 MB L2 cache).

A model whose loss turns NaN/inf is frozen where it stands and its rows get
``status="diverged"``; the others go on.

Signal tasks (issue 14: one INR per image) give every model its own targets on shared inputs:
the trainer stacks each run's targets ``(M, N, C)`` and gathers them by each model's minibatch
indices; in a full-batch epoch the coordinates are visited in grid order (:func:`epoch_order`),
so the population shares one input and its first layer is one matmul over all models.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import torch

from zoo import streams
from zoo.errors import TrainingError
from zoo.layout import Layout, unflatten
from zoo.naming import canonical_json, checkpoint_id, step_checkpoint_id, tensor_name
from zoo.nn.architectures import set_dropout_generator
from zoo.nn.inits import init_model
from zoo.nn.objectives import OBJECTIVES, Objective
from zoo.nn.optim import PopulationOptimizer
from zoo.nn.population import forward_population, inputs_as
from zoo.recipe import RunConfig
from zoo.stages.plan import PopulationBatch, default_chunk, step_schedule, steps_per_epoch
from zoo.store.manifest import ShardRecord
from zoo.store.provenance import current_provenance
from zoo.store.shards import write_table_shard, write_tensor_shard
from zoo.streams import numpy_rng, torch_generator
from zoo.tasks import Task, load_task


def data_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order in which a run visits the ``n`` training examples in ``epoch`` (1-based)."""
    return torch.from_numpy(numpy_rng(seed, streams.DATA_ORDER, epoch).permutation(n))


def epoch_order(run: RunConfig, epoch: int, n: int, signal: bool = False) -> torch.Tensor:
    """:func:`data_order`, except that a full-batch epoch of a signal task visits the
    coordinates in grid order: its one step sees them all (the order changes only the rounding
    of the sum), and every model of the population then shares the input, which the
    population forward runs as one matmul over all models' first layers."""
    if signal and run.train["batch_size"] >= n:
        return torch.arange(n)
    return data_order(run.seed, epoch, n)


@dataclass
class TrainResult:
    """What training a population batch produced: one entry per checkpoint, in run order."""

    layout: Layout
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # checkpoint_id -> (P,)
    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    metrics: tuple[str, ...] = ("loss", "acc")  # the objective's, reported per split
    task_source: str = ""  # where the task's data came from (Task.source), for the card
    columns: tuple[tuple[str, pa.DataType], ...] = ()  # signal columns (image_index, label, …)


@torch.no_grad()
def evaluate(
    module,
    params,
    x,
    y,
    batch_size: int,
    objective: Objective = OBJECTIVES["classification"],
    per_model: bool = False,
) -> dict[str, torch.Tensor]:
    """Every metric of ``objective`` for every model on ``(x, y)``: ``{metric: (M,)}`` means over
    the scored targets (for classification: cross-entropy ``loss`` and accuracy ``acc``).
    ``per_model``: ``y`` holds each model's own targets ``(M, N, …)`` (signal tasks)."""
    m = next(iter(params.values())).shape[0]
    totals: dict[str, torch.Tensor] = {}
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        yb = (
            y[:, i : i + batch_size]
            if per_model
            else y[i : i + batch_size].expand(m, *[-1] * y.dim())
        )
        out = forward_population(module, params, xb.expand(m, *xb.shape))  # (M, B, …)
        part = objective.sums(out, yb)
        totals = {k: totals[k] + v for k, v in part.items()} if totals else part
    return objective.means(totals)


class PopulationTrainer:
    """Trains one :class:`PopulationBatch`; see the module docstring.

    The population is cut into chunks of a few models; each chunk holds its own leaf tensors
    ``{name: (m, *shape)}`` and its own :class:`PopulationOptimizer`, and steps right after its
    backward pass, while its activations and gradients are still in cache.
    """

    def __init__(
        self,
        batch: PopulationBatch,
        device: str = "cpu",
        chunk_size: int | None = None,
        eval_batch_size: int = 1024,
        task: Task | None = None,
        dtype: torch.dtype = torch.float32,
        tasks: list[Task] | None = None,
    ):
        self.batch, self.runs, self.device = batch, batch.runs, torch.device(device)
        first = self.runs[0]
        self.task = task or (tasks[0] if tasks else load_task(first.task))
        self.objective = OBJECTIVES[self.task.objective]
        self.x_train = inputs_as(self.task.x_train, device, dtype)
        self.x_test = inputs_as(self.task.x_test, device, dtype)
        self.signal = self.task.signal is not None  # per-model targets (M, N, C)
        if self.signal:
            data = tasks or [self.task] + [load_task(r.task) for r in self.runs[1:]]
            y_train, y_test, self.columns = signal_targets(self.runs, data)
            self.y_train, self.y_test = y_train.to(device, dtype), y_test.to(device, dtype)
        else:
            self.y_train, self.y_test = self.task.y_train.to(device), self.task.y_test.to(device)
            self.columns = [{} for _ in self.runs]
        modules = [init_model(r, self.task) for r in self.runs]  # initialized in float32
        self.module, self.layout = modules[0][0].to(device, dtype), modules[0][1]
        size = chunk_size or default_chunk(first.model)
        self.bounds = [(c, min(c + size, len(self.runs))) for c in range(0, len(self.runs), size)]
        trained = set(self.layout.parameters)  # buffers (BatchNorm statistics) get no grad
        self.chunks = [
            {
                n: torch.stack([m.state_dict()[n] for m, _ in modules[c0:c1]])
                .to(device, dtype)
                .requires_grad_(n in trained)
                for n in self.layout.names
            }
            for c0, c1 in self.bounds
        ]  # each {name: (m, *shape)}
        self.optimizers = [
            PopulationOptimizer(first.train["optimizer"], [r.train for r in self.runs[c0:c1]])
            for c0, c1 in self.bounds
        ]
        self.eval_batch_size = eval_batch_size
        self.active = torch.ones(len(self.runs), dtype=torch.bool, device=self.device)
        self.diverged_at: list[int | None] = [None] * len(self.runs)
        self.step_count = 0
        # what to save: every checkpoint, or (a grown recipe) those the store lacks
        self.save = None if batch.save is None else set(batch.save)
        self.epochs_to_save = self._to_save(first.checkpoints, checkpoint_id)
        steps = step_schedule(first, len(self.x_train))
        self.step_checkpoints = self._to_save(steps, step_checkpoint_id)
        # each model's dropout masks come from its own stream, at its own rate (None: no layers)
        self.dropout = (
            [
                (torch_generator(r.seed, streams.DROPOUT), float(r.model["dropout"]))
                for r in self.runs
            ]
            if "dropout" in first.model
            else None
        )

    def _to_save(self, points, ident) -> set[int]:
        """The epochs (or steps) at which some model has a checkpoint to save."""
        if self.save is None:
            return set(points)
        return {p for p in points if any(ident(r.run_id, p) in self.save for r in self.runs)}

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """All models' parameters stacked: ``{name: (M, *shape)}`` (a copy, no grad)."""
        return {n: torch.cat([c[n].detach() for c in self.chunks]) for n in self.layout.names}

    def minibatch(self, k: int, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunk ``k``'s inputs ``(m, B, …)`` and targets on indices ``idx: (m, B)``: shared
        targets gathered by each model's indices, or (signal tasks) each model's own targets
        ``(m, B, C)`` by its indices, with the coordinates as one shared input (a stride-0 view)
        when every model of the chunk visits the same ones (a full-batch epoch)."""
        if not self.signal:
            return self.x_train[idx], self.y_train[idx]  # (m, B, ...), (m, B)
        c0, c1 = self.bounds[k]
        y = self.y_train[c0:c1]  # (m, N, C)
        y = y.gather(1, idx[:, :, None].expand(-1, -1, y.shape[2]))  # (m, B, C)
        if bool((idx == idx[:1]).all()):
            x = self.x_train[idx[0]]
            return x.expand(c1 - c0, *x.shape), y
        return self.x_train[idx], y

    def step_chunk(self, k: int, idx: torch.Tensor) -> torch.Tensor:
        """One optimizer step of chunk ``k`` on minibatch indices ``idx: (m, B)``; returns the
        per-model mean losses ``(m,)``."""
        leaves = self.chunks[k]
        x, y = self.minibatch(k, idx)
        c0, c1 = self.bounds[k]
        gens = self.dropout[c0:c1] if self.dropout else None
        saved = {n: leaves[n].clone() for n in self.layout.buffers}  # the forward updates them
        out = forward_population(self.module, leaves, x, dropout=gens, training=True)  # (m, B, …)
        loss = self.objective.loss(out, y)  # (m,)
        # the sum's gradient w.r.t. model i's weights is model i's own gradient
        params = {n: leaves[n] for n in self.layout.parameters}
        grads = torch.autograd.grad(loss.sum(), list(params.values()))
        bad = ~torch.isfinite(loss.detach()) & self.active[c0:c1]
        if bool(bad.any()):
            for i in bad.nonzero().flatten().tolist():
                self.diverged_at[c0 + i] = self.current_epoch
            self.active[c0:c1] &= ~bad
        self.optimizers[k].step(params, dict(zip(params, grads, strict=True)), self.active[c0:c1])
        for name, before in saved.items():  # frozen models keep their running statistics too
            mask = self.active[c0:c1].reshape(-1, *([1] * (before.dim() - 1)))
            leaves[name].copy_(torch.where(mask, leaves[name], before))
        return loss.detach()

    def train_epoch(self, epoch: int, result: TrainResult | None = None) -> None:
        """One epoch of every model; mid-epoch checkpoints (``checkpoints.steps``) go into
        ``result`` when given."""
        n, bs = len(self.x_train), self.runs[0].train["batch_size"]
        order = torch.stack([epoch_order(r, epoch, n, self.signal) for r in self.runs])
        order = order.to(self.device)
        self.current_epoch, per_epoch = epoch, steps_per_epoch(n, bs)
        for s in range(per_epoch):
            for k, (c0, c1) in enumerate(self.bounds):
                self.step_chunk(k, order[c0:c1, s * bs : (s + 1) * bs])
            self.step_count += 1
            if result is not None and self.step_count in self.step_checkpoints:
                done = epoch - 1 + (s + 1) // per_epoch  # completed epochs
                self.snapshot(done, result, step=self.step_count)

    def snapshot(self, epoch: int, result: TrainResult, step: int | None = None) -> None:
        """Record every model's weights and metrics after ``epoch`` completed epochs, or
        mid-epoch at optimizer ``step`` (a ``checkpoints.steps`` checkpoint)."""
        params = self.params
        args = (self.module, params)
        scores = {
            split: evaluate(*args, x, y, self.eval_batch_size, self.objective, self.signal)
            for split, x, y in (
                ("train", self.x_train, self.y_train),
                ("test", self.x_test, self.y_test),
            )
        }
        flat = torch.cat([params[n].reshape(len(self.runs), -1) for n in self.layout.names], 1)
        for i, run in enumerate(self.runs):
            ckpt = (
                checkpoint_id(run.run_id, epoch)
                if step is None
                else (step_checkpoint_id(run.run_id, step))
            )
            finite = bool(torch.isfinite(flat[i]).all())
            if not finite and self.diverged_at[i] is None:
                self.diverged_at[i], self.active[i] = epoch, False
            if self.save is not None and ckpt not in self.save:
                continue  # the store holds it already
            result.weights[ckpt] = flat[i].cpu().clone()  # the store casts to float32
            result.rows.append(
                {
                    "checkpoint_id": ckpt,
                    "run_id": run.run_id,
                    "cell_id": run.cell_id,
                    "batch_id": self.batch.batch_id,
                    "epoch": epoch,
                    "step": self.step_count,
                    "status": "ok" if self.diverged_at[i] is None else "diverged",
                    "diverged_epoch": self.diverged_at[i],
                    **{
                        f"{split}_{metric}": float(values[i])
                        for split, metrics in scores.items()
                        for metric, values in metrics.items()
                    },
                    **self.columns[i],
                }
            )

    def run(self, on_epoch: Callable[[int, int], None] | None = None) -> TrainResult:
        """Train to the last epoch with a checkpoint to save, snapshotting at each such epoch
        (and at the mid-epoch steps to save)."""
        start = time.perf_counter()
        result = TrainResult(
            self.layout,
            metrics=self.objective.metrics,
            task_source=self.task.source,
            columns=column_types(self.columns[0]),
        )
        epochs = self.runs[0].train["epochs"]
        wanted = self.epochs_to_save
        per_epoch = steps_per_epoch(len(self.x_train), self.runs[0].train["batch_size"])
        last = max([*wanted, *(-(-s // per_epoch) for s in self.step_checkpoints)], default=0)
        if 0 in wanted:
            self.snapshot(0, result)
        for epoch in range(1, last + 1):
            self.train_epoch(epoch, result)
            if epoch in wanted:
                self.snapshot(epoch, result)
            if on_epoch:
                on_epoch(epoch, epochs)
        result.seconds = time.perf_counter() - start
        return result


def signal_targets(
    runs: tuple[RunConfig, ...], tasks: list[Task]
) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Each run's own targets, stacked ``(M, N, C)`` for the train and the test split, and its
    signal columns. A population shares its input: every run's coordinates must be the first's
    (they are, for runs that differ only in ``task.index``)."""
    first = tasks[0]
    for run, task in zip(runs, tasks, strict=True):
        same = task.x_train.shape == first.x_train.shape and task.x_test.shape == first.x_test.shape
        if not (same and torch.equal(task.x_train, first.x_train)):
            raise TrainingError(
                f"run {run.run_id}: its coordinates differ from those of run {runs[0].run_id} of "
                "its population; signal runs train together only when they differ in task.index"
            )
    y_train = torch.stack([t.y_train for t in tasks])  # (M, N, C)
    y_test = torch.stack([t.y_test for t in tasks])
    return y_train, y_test, [dict(t.signal.columns) for t in tasks]


def column_types(columns: dict) -> tuple[tuple[str, pa.DataType], ...]:
    """Arrow types of a run's signal columns: ints as int64, floats as float64, else strings."""
    kinds = {bool: pa.bool_(), int: pa.int64(), float: pa.float64()}
    return tuple((k, kinds.get(type(v), pa.string())) for k, v in columns.items())


def train_population(
    batch: PopulationBatch, on_epoch: Callable[[int, int], None] | None = None, **options
) -> TrainResult:
    """Train a population batch; ``options`` go to :class:`PopulationTrainer`, ``on_epoch`` to
    its ``run`` (e.g. a stop check)."""
    return PopulationTrainer(batch, **options).run(on_epoch)


# --- the reference --------------------------------------------------------------------------


def make_torch_optimizer(run: RunConfig, params) -> torch.optim.Optimizer:
    t = run.train
    if t["optimizer"] == "sgd":
        return torch.optim.SGD(
            params,
            lr=t["lr"],
            momentum=t["momentum"],
            weight_decay=t["weight_decay"],
            nesterov=t["nesterov"],
        )
    cls = torch.optim.Adam if t["optimizer"] == "adam" else torch.optim.AdamW
    return cls(
        params, lr=t["lr"], betas=tuple(t["betas"]), eps=t["eps"], weight_decay=t["weight_decay"]
    )


def train_one(
    run: RunConfig, task: Task | None = None, dtype: torch.dtype = torch.float32
) -> dict[str, dict[str, torch.Tensor]]:
    """The plain per-model loop (``nn.Module`` + ``torch.optim``) the population trainer must
    equal: same init, same data order. Returns ``{checkpoint_id: state_dict}`` at each
    checkpoint epoch and mid-epoch step."""
    task = task or load_task(run.task)
    objective = OBJECTIVES[task.objective]
    module, _ = init_model(run, task)
    set_dropout_generator(module, torch_generator(run.seed, streams.DROPOUT))
    module = module.to(dtype)
    x_train, y_train = inputs_as(task.x_train, "cpu", dtype), task.y_train
    signal = task.signal is not None
    if y_train.is_floating_point():  # regression targets follow the model's dtype
        y_train = y_train.to(dtype)
    opt = make_torch_optimizer(run, module.parameters())
    n, bs, frozen, step = len(task.x_train), run.train["batch_size"], False, 0
    steps = step_schedule(run, n)
    out = {0: {k: v.clone() for k, v in module.state_dict().items()}}
    for epoch in range(1, max(run.checkpoints) + 1):
        order = epoch_order(run, epoch, n, signal)
        for s in range(steps_per_epoch(n, bs)):
            idx = order[s * bs : (s + 1) * bs]
            loss = objective.module_loss(module(x_train[idx]), y_train[idx])
            frozen = frozen or not bool(torch.isfinite(loss))
            if not frozen:
                opt.zero_grad()
                loss.backward()
                opt.step()
            step += 1
            if step in steps:
                out[step_checkpoint_id(run.run_id, step)] = {
                    k: v.clone() for k, v in module.state_dict().items()
                }
        out[epoch] = {k: v.clone() for k, v in module.state_dict().items()}
    saved = {checkpoint_id(run.run_id, e): out[e] for e in run.checkpoints}
    return saved | {k: v for k, v in out.items() if isinstance(k, str)}


# --- the stage: train a batch, write its shards, return receipts --------------------------------


def result_table(batch: PopulationBatch, result: TrainResult) -> pa.Table:
    """Metrics rows of a trained batch, with each run's resolved config as JSON."""
    configs = {r.run_id: canonical_json(r.to_dict()) for r in batch.runs}
    rows = [dict(row, run_config=configs[row["run_id"]]) for row in result.rows]
    return pa.Table.from_pylist(rows, schema=train_schema(result.metrics, result.columns))


def train_schema(
    metrics: tuple[str, ...] = ("loss", "acc"), columns: tuple[tuple[str, pa.DataType], ...] = ()
) -> pa.Schema:
    """The columns of a train shard: ids, status, ``train_<metric>`` and ``test_<metric>`` for
    each metric of the task's objective, a signal task's columns (``image_index``, ``label``;
    ``signal_frequency``, …), and the run's config."""
    scores = [(f"{split}_{m}", pa.float64()) for split in ("train", "test") for m in metrics]
    scores += list(columns)
    return pa.schema(
        [
            ("checkpoint_id", pa.string()),
            ("run_id", pa.string()),
            ("cell_id", pa.string()),
            ("batch_id", pa.string()),
            ("epoch", pa.int32()),
            ("step", pa.int64()),
            ("status", pa.string()),
            ("diverged_epoch", pa.int32()),
            *scores,
            ("run_config", pa.string()),
        ]
    )


def write_train_shards(
    out_dir, batch: PopulationBatch, result: TrainResult, device: str | None = None
) -> list[ShardRecord]:
    """Write a trained batch as ``shards/train/<batch_id>.{safetensors,parquet}``.

    Tensors are named ``<checkpoint_id>/<parameter>`` (float32); the safetensors metadata holds
    the layout as JSON, so a shard describes itself, and both shards the provenance of the
    training on ``device`` (versions, device name, threads, determinism).
    """
    provenance = current_provenance(device)
    tensors = {}
    for ckpt, flat in result.weights.items():
        for name, value in unflatten(flat.float(), result.layout).items():
            tensors[tensor_name(ckpt, name)] = value
    run_ids = [r.run_id for r in batch.runs]
    ckpts = list(result.weights)
    meta = {
        "layout": canonical_json(result.layout.to_dict()),
        "batch_id": batch.batch_id,
        "train_seconds": f"{result.seconds:.3f}",
    }
    weights = write_tensor_shard(
        out_dir, "train", batch.batch_id, tensors, meta, run_ids, ckpts, provenance
    )
    table = result_table(batch, result)
    table_meta = {
        "train_seconds": result.seconds,
        "layout_sha256": result.layout.sha256,
        "task_source": result.task_source,
    }
    metrics = write_table_shard(
        out_dir, "train", batch.batch_id, table, run_ids, ckpts, table_meta, provenance
    )
    return [weights, metrics]


def train_task(batch: dict, out_dir: str, options: dict) -> list[dict]:
    """The stage's task: train a population batch, write its shards, return their receipts.

    A top-level function of plain data, so it runs the same in this process or on any worker;
    :func:`zoo.dist.run.execute` calls it with ``options["device"]`` resolved for the worker
    and ``options["check_stop"]``, called after each epoch (it raises to stop the batch).
    """
    pop = PopulationBatch.from_dict(batch)
    check = options.get("check_stop")
    result = train_population(
        pop,
        on_epoch=(lambda epoch, epochs: check()) if check else None,
        device=options["device"],
        chunk_size=options["chunk_size"],
        eval_batch_size=options["eval_batch_size"],
    )
    return [r.to_dict() for r in write_train_shards(out_dir, pop, result, options["device"])]
