"""A signal zoo end to end (issue 14): train -> build -> load_dataset, and an outsider renders
every network from the published weights and layout.json alone, with the card's code."""

import math
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import zoo
from zoo.naming import REPO_PLACEHOLDER
from zoo.recipe import load_recipe, recipe_from_dict

PIPELINES = Path(__file__).parent.parent / "pipelines"


def signal_zoo(tmp_path, **sections):
    data = {
        "schema_version": 1,
        "name": "sig",
        "task": {"name": "inr_image", "source": "digits"},
        "model": {"arch": "siren", "width": 12, "depth": 2, "w0": 20.0},
        "init": {"scheme": "siren", "bias": "uniform"},
        "train": {"optimizer": "adam", "lr": 2e-3, "batch_size": 64, "epochs": 30},
        "grid": {"task.index": {"range": [0, 12]}},
        "seeds": 2,
        "checkpoints": {"epochs": [0, 30]},
        "execution": {"workers": 0},
        "output": {"dir": str(tmp_path / "zoo"), "splits": {"train": 0.5, "test": 0.5}},
    }
    return zoo.run(recipe_from_dict({**data, **sections}))


def card_code(folder) -> str:
    """The card's rendering code, pointed at the local folder."""
    card = (folder / "README.md").read_text()
    section = card[card.index("## Rendering a network") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return code.replace(REPO_PLACEHOLDER, str(folder))


def test_digit_inr_zoo_renders_from_weights_and_layout_alone(tmp_path):
    folder = signal_zoo(tmp_path)
    ds = datasets.load_dataset(str(folder), split="train")
    assert {"image_index", "label", "train_psnr", "test_psnr", "task__index"} <= set(ds.features)
    assert "train_acc" not in ds.features and "gen_gap_acc" not in ds.features
    card = (folder / "README.md").read_text()
    assert "w0 = 20.0" in card and "`2 v - 1`" in card and "mean squared error" in card
    assert (folder / "images" / "inr_renderings.png").stat().st_size > 0
    assert (folder / "images" / "inr_psnr.png").stat().st_size > 0
    scope: dict = {}
    exec(card_code(folder), scope)  # the outsider: json, datasets and torch only
    render, layout, row = scope["render"], scope["layout"], scope["row"]
    images = load_digits().images / 16
    for row in ds.select(range(0, len(ds), 5)):
        image = render(row["weights"], layout)  # (1, 8, 8) in [0, 1]
        assert image.shape == (1, 8, 8)
        mse = float(
            ((2 * image[0] - 1) - (2 * torch.tensor(images[row["image_index"]]) - 1)).pow(2).mean()
        )
        assert mse == pytest.approx(row["train_loss"], rel=1e-4, abs=1e-7)
        assert row["label"] == load_digits().target[row["image_index"]]
    last = [r for r in ds if r["epoch"] == 30]
    assert np.median([r["train_psnr"] for r in last]) > 12  # the networks did fit their images


def test_sinusoid_zoo_with_fourier_features_renders_from_the_card(tmp_path):
    folder = signal_zoo(
        tmp_path,
        task={"name": "inr_sinusoid", "points": 24},
        model={"arch": "fourier_mlp", "width": 16, "depth": 1, "frequencies": 3},
        init={"scheme": "kaiming_uniform", "bias": "uniform"},
        grid={"task.index": {"range": [0, 6]}},
        train={"optimizer": "adam", "lr": 1e-2, "batch_size": 24, "epochs": 30},
    )
    ds = datasets.load_dataset(str(folder), split="train")
    scope: dict = {}
    exec(card_code(folder), scope)
    for row in ds:
        values = scope["render"](row["weights"], scope["layout"])[0]  # (47,) on [-1, 1]
        t = torch.linspace(-1, 1, 47, dtype=torch.float64)
        a, f, p = row["signal_amplitude"], row["signal_frequency"], row["signal_phase"]
        wave = a * torch.sin(2 * math.pi * f * t + p)
        assert float((values[::2] - wave[::2]).pow(2).mean()) == pytest.approx(
            row["train_loss"], rel=1e-4, abs=1e-7
        )
        assert float((values[1::2] - wave[1::2]).pow(2).mean()) == pytest.approx(
            row["test_loss"], rel=1e-4, abs=1e-7
        )


def test_shipped_digits_recipe_runs_end_to_end_at_a_small_size(tmp_path):
    overrides = [
        "grid={task.index: {range: [0, 20]}}",
        "train.epochs=5",
        "checkpoints={epochs: [0, 5]}",
        f"output.dir={tmp_path / 'digits'}",
        "execution.workers=0",
    ]
    folder = zoo.run(load_recipe(PIPELINES / "digits_siren_views.yaml", overrides))
    ds = datasets.load_dataset(str(folder))
    rows = sum(len(split) for split in ds.values())
    assert rows == 20 * 2 * 2  # images x views x checkpoints
    assert set(ds["train"]["model__w0"]) == {30.0}
