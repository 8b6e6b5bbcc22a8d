"""Shared fixtures: small recipes and synthetic tasks that run in seconds."""

from __future__ import annotations

import pytest
import torch

from zoo.recipe import recipe_from_dict
from zoo.tasks import Task

torch.set_num_threads(1)


def tiny_recipe(out_dir=None, **sections):
    """A 2 lr x 2 seeds digits MLP recipe; ``sections`` replace or extend its keys."""
    data = {
        "schema_version": 1,
        "name": "tiny",
        "task": {"name": "digits", "n_train": 256},
        "model": {"arch": "mlp", "width": 8, "depth": 1, "activation": "tanh"},
        "train": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "batch_size": 32, "epochs": 2},
        "grid": {"train.lr": [0.05, 0.1]},
        "seeds": 2,
        "checkpoints": {"epochs": [0, 1, 2]},
        "execution": {"workers": 0, "population_size": 2},
        # 4 runs at split positions 0, .03, .41, .62 (the golden-ratio rule): train 3, validation 1
        "output": {
            "dir": str(out_dir) if out_dir else None,
            "splits": {"train": 0.6, "validation": 0.4},
        },
    }
    output = {**data["output"], **sections.pop("output", {})}  # a given dir keeps the splits
    data.update(sections, output=output)
    return recipe_from_dict(data)


@pytest.fixture
def image_task():
    """A random 28x28 classification task (CNN-s needs 28x28 inputs)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(96, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (96,), generator=g)
    return Task("random28", x[:64].contiguous(), y[:64], x[64:].contiguous(), y[64:], 10)
