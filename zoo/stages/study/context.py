"""What every study task loads once: its batch, the task's data, the architecture and the
checkpoints' weights from the store."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zoo.layout import Layout
from zoo.nn.architectures import build_model
from zoo.stages.landscape.annotate import load_checkpoints
from zoo.stages.plan import default_chunk
from zoo.stages.study.finetune import evaluate_flat
from zoo.stages.study.plan import StudyBatch
from zoo.tasks import Task, load_task


@dataclass(frozen=True)
class StudyContext:
    """A study batch with its data, module, layout and weights ``{checkpoint_id: (P,)}``."""

    batch: StudyBatch
    task: Task
    module: torch.nn.Sequential
    layout: Layout
    weights: dict[str, torch.Tensor]

    @classmethod
    def load(cls, batch: StudyBatch, out_dir: str) -> StudyContext:
        first = batch.runs[0]
        task = load_task(first.task)
        module, layout = build_model(first.model, task.input_shape, task.n_classes)
        weights = load_checkpoints(out_dir, batch.runs, list(batch.epochs))
        return cls(batch, task, module, layout, {k: v.float() for k, v in weights.items()})

    @property
    def chunk(self) -> int:
        return default_chunk(self.batch.runs[0].model)

    def evaluate(self, flat: torch.Tensor, task: Task | None = None, module=None, layout=None):
        """Test loss and accuracy of flat weights ``(M, P)`` (on ``task``, default the
        recipe's): ``{"loss": (M,), "acc": (M,)}``."""
        task = task or self.task
        return evaluate_flat(
            module or self.module, layout or self.layout, flat, task.x_test, task.y_test, task
        )
