"""Fine-tuning a population of given weights: the training work of the studies.

M models of one architecture start from given flat weights ``(M, P)`` and take SGD steps
together, as the trainer's populations do (:func:`zoo.nn.population.forward_population`,
:class:`zoo.nn.optim.PopulationOptimizer`, the task's objective; chunks of a few models so
activations stay in cache). Two restrictions make the studies' variants:

- ``trainable``: only these parameters move (a linear probe trains the readout alone);
- ``masks``: ``(M, P)`` booleans; masked weights are zero after every step (a pruned model
  fine-tuned with its mask fixed).

Each model visits the training data in its own seeded order (:data:`zoo.streams.STUDY_ORDER`
keyed by the study and the epoch), so a model's result does not depend on the population it
was fine-tuned in; ``tests/test_study.py`` checks it against a per-model ``torch.optim`` loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zoo import streams
from zoo.layout import Layout, unflatten
from zoo.nn.objectives import OBJECTIVES
from zoo.nn.optim import PopulationOptimizer
from zoo.nn.population import forward_population
from zoo.stages.plan import steps_per_epoch
from zoo.stages.train import evaluate
from zoo.streams import numpy_rng
from zoo.tasks import Task


@dataclass(frozen=True)
class Budget:
    """What a fine-tune may spend: epochs of SGD at ``lr`` with ``momentum`` and minibatches of
    ``batch_size``, the same for every model."""

    epochs: int
    lr: float
    momentum: float
    batch_size: int

    def to_dict(self) -> dict:
        return {
            "epochs": self.epochs,
            "lr": self.lr,
            "momentum": self.momentum,
            "batch_size": self.batch_size,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Budget:
        return cls(int(d["epochs"]), float(d["lr"]), float(d["momentum"]), int(d["batch_size"]))


def study_order(seed: int, key: int, epoch: int, n: int) -> torch.Tensor:
    """The order in which a fine-tuned model of seed ``seed`` visits ``n`` examples."""
    return torch.from_numpy(numpy_rng(seed, streams.STUDY_ORDER, key, epoch).permutation(n))


def finetune(
    module,
    layout: Layout,
    start: torch.Tensor,
    task: Task,
    seeds: list[int],
    budget: Budget,
    key: int,
    trainable: tuple[str, ...] | None = None,
    masks: torch.Tensor | None = None,
    chunk: int = 8,
) -> torch.Tensor:
    """Fine-tune ``start: (M, P)`` on ``task``'s training set; returns the weights ``(M, P)``.

    Args:
        module: an instance of the architecture (only its layer list is read).
        layout: the layout of ``start``.
        start: the models' flat weights.
        task: the data (its objective is the loss).
        seeds: per model, the seed of its data order.
        budget: epochs, lr, momentum, batch size.
        key: the study's key of :data:`zoo.streams.STUDY_ORDER`.
        trainable: parameter names that move (None: all).
        masks: ``(M, P)`` booleans: weights where False stay zero.
        chunk: models per forward/backward.
    """
    objective = OBJECTIVES[task.objective]
    names = tuple(trainable or layout.names)
    keep = unflatten(masks.to(start.dtype), layout) if masks is not None else None
    out = []
    for c0 in range(0, len(start), chunk):
        c1 = min(c0 + chunk, len(start))
        params = {n: v.clone() for n, v in unflatten(start[c0:c1], layout).items()}
        mask = {n: v[c0:c1] for n, v in keep.items()} if keep is not None else None
        _train_chunk(module, params, task, seeds[c0:c1], budget, key, names, mask, objective)
        out.append(torch.cat([params[n].reshape(c1 - c0, -1) for n in layout.names], 1))
    return torch.cat(out) if out else start.clone()


def _train_chunk(module, params, task, seeds, budget, key, names, mask, objective) -> None:
    """SGD on one chunk of models, in place (see :func:`finetune`)."""
    hp = {"lr": budget.lr, "momentum": budget.momentum, "weight_decay": 0.0, "nesterov": False}
    opt = PopulationOptimizer("sgd", [hp] * len(seeds))
    active = torch.ones(len(seeds), dtype=torch.bool)
    for n in names:
        params[n].requires_grad_(True)
    n_train, bs = len(task.x_train), budget.batch_size
    for epoch in range(1, budget.epochs + 1):
        order = torch.stack([study_order(s, key, epoch, n_train) for s in seeds])
        for s in range(steps_per_epoch(n_train, bs)):
            idx = order[:, s * bs : (s + 1) * bs]  # (m, B)
            out = forward_population(module, params, task.x_train[idx])
            loss = objective.loss(out, task.y_train[idx])  # (m,)
            grads = torch.autograd.grad(loss.sum(), [params[n] for n in names])
            active &= torch.isfinite(loss.detach())  # a diverging model is frozen, as in training
            opt.step({n: params[n] for n in names}, dict(zip(names, grads, strict=True)), active)
            if mask is not None:
                with torch.no_grad():
                    for n in names:
                        params[n].mul_(mask[n])
    for n in names:
        params[n].requires_grad_(False)


def evaluate_flat(module, layout: Layout, flat: torch.Tensor, x, y, task: Task) -> dict:
    """Test metrics of flat weights ``(M, P)`` on ``(x, y)``: ``{"loss": (M,), "acc": (M,)}``."""
    if len(flat) == 0:
        return {"loss": torch.zeros(0), "acc": torch.zeros(0)}
    return evaluate(module, unflatten(flat, layout), x, y, 1024, OBJECTIVES[task.objective])
