"""Objectives: what a population minimizes and what its checkpoints report, per model.

A task names its objective (``Task.objective``); the trainer, the per-model reference loop and
the evaluation all go through it, so a new kind of zoo (regression on per-model targets,
sequences) adds an objective here rather than a branch in the trainer.

Every method takes population outputs ``(M, B, …)`` and targets ``(M, B, …)`` and reduces over
everything but the model axis: model m's loss never depends on model m'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
from torch.nn import functional as F

IGNORE = -100  # a target position that is not scored (sequence tasks score the answer tokens)


class Objective(Protocol):
    """What the trainer needs of an objective (see :class:`CrossEntropy`)."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]  # reported as train_<metric>, test_<metric> columns

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def sums(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def module_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def means(self, totals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class CrossEntropy:
    """Classification: ``y`` holds class indices, one per example ``(M, B)`` or one per position
    ``(M, B, T)`` (:data:`IGNORE` where a position is not scored); outputs hold logits with
    the classes last. Reports the mean cross-entropy ``loss`` and the accuracy ``acc`` over the
    scored targets."""

    name: ClassVar[str] = "classification"
    metrics: ClassVar[tuple[str, ...]] = ("loss", "acc")

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(M,)`` mean loss of each model over its scored targets (what training minimizes)."""
        m, c = out.shape[0], out.shape[-1]
        ce = F.cross_entropy(out.reshape(-1, c), y.reshape(-1), reduction="none").view(m, -1)
        if y.dim() == 2:  # one target per example: all scored
            return ce.mean(1)
        scored = (y != IGNORE).reshape(m, -1)
        return ce.sum(1) / scored.sum(1).clamp_min(1)

    def sums(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per model: float64 sums of each metric over the scored targets, and their ``count``."""
        m = out.shape[0]
        if y.dim() == 2:  # (M, B, C): the classes as the second axis, as F.cross_entropy wants
            ce = F.cross_entropy(out.transpose(1, 2), y, reduction="none")  # (M, B)
            scored = torch.ones_like(y, dtype=torch.bool)
        else:
            c = out.shape[-1]
            ce = F.cross_entropy(out.reshape(-1, c), y.reshape(-1), reduction="none").view(m, -1)
            y, out = y.reshape(m, -1), out.reshape(m, -1, c)
            scored = y != IGNORE
        hits = (out.argmax(-1) == y) & scored
        return {
            "loss": ce.double().sum(1),
            "acc": hits.double().sum(1),
            "count": scored.double().sum(1),
        }

    def module_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The scalar loss of one plain module's outputs (the per-model reference loop)."""
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=IGNORE)

    def means(self, totals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each metric's mean over the scored targets, from the summed :meth:`sums` of every
        evaluation batch: ``{metric: (M,)}`` for each name in :attr:`metrics`."""
        count = totals["count"]
        return {k: v / count for k, v in totals.items() if k != "count"}


@dataclass(frozen=True)
class LanguageModel(CrossEntropy):
    """Next-token prediction (character-level language modelling): cross-entropy over every
    scored position, as :class:`CrossEntropy`, reporting the token accuracy ``acc`` and the
    perplexity ``ppl`` = exp(mean loss in nats) of the whole split (not a mean of per-batch
    perplexities)."""

    name: ClassVar[str] = "language_model"
    metrics: ClassVar[tuple[str, ...]] = ("loss", "acc", "ppl")

    def means(self, totals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = super().means(totals)
        return out | {"ppl": out["loss"].exp()}


@dataclass(frozen=True)
class MeanSquaredError:
    """Regression on per-example target vectors (a signal's values at its coordinates, issue
    14): outputs and targets ``(M, B, C)``. Training minimizes the mean squared error over every
    target entry; checkpoints report it as ``loss`` and its PSNR,
    ``psnr = 10 log10(PEAK_TO_PEAK^2 / loss)`` in dB. Signal tasks scale their values to
    [-1, 1], so ``PEAK_TO_PEAK = 2``: the PSNR of the same signal in [0, 1] with peak 1."""

    name: ClassVar[str] = "regression"
    metrics: ClassVar[tuple[str, ...]] = ("loss", "psnr")
    PEAK_TO_PEAK: ClassVar[float] = 2.0

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(M,)`` mean squared error of each model over its targets."""
        return (out - y).pow(2).reshape(out.shape[0], -1).mean(1)

    def sums(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per model: the float64 sum of squared errors and the number of target entries."""
        sq = (out.double() - y.double()).pow(2).reshape(out.shape[0], -1)  # (M, B*C)
        return {"loss": sq.sum(1), "count": torch.full_like(sq[:, 0], sq.shape[1])}

    def module_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The scalar loss of one plain module's outputs (the per-model reference loop)."""
        return F.mse_loss(out, y)

    def means(self, totals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``loss`` (the MSE over every target entry of the split) and its ``psnr`` in dB (inf
        for a perfect fit), from the summed :meth:`sums` of every evaluation batch."""
        mse = totals["loss"] / totals["count"]
        return {"loss": mse, "psnr": 10.0 * torch.log10(self.PEAK_TO_PEAK**2 / mse)}


OBJECTIVES: dict[str, Objective] = {
    CrossEntropy.name: CrossEntropy(),
    LanguageModel.name: LanguageModel(),
    MeanSquaredError.name: MeanSquaredError(),
}
