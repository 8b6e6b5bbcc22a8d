"""Signal tasks (issue 14): one signal per run on shared coordinates. The coordinate convention,
the seeded image order (per class, stable under growth), held-out pixels, the sinusoid family,
and recipes that vary task.index compactly."""

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from zoo.errors import RecipeError, TaskError
from zoo.recipe import expand_recipe, recipe_from_dict
from zoo.stages.plan import plan_batches, population_key
from zoo.tasks import load_task
from zoo.tasks.signals import coordinate_grid

from .test_datafiles import digits_folder, fake_idx_folder, hf_offline  # noqa: F401 (fixtures)


def image_cfg(**keys) -> dict:
    return {"name": "inr_image", "source": "digits", **keys}


def test_coordinate_grid_is_row_major_from_minus_one_to_one():
    grid = coordinate_grid((3, 5))
    assert grid.shape == (15, 2)
    assert grid[0].tolist() == [-1.0, -1.0] and grid[-1].tolist() == [1.0, 1.0]
    assert grid[1].tolist() == [-1.0, -0.5]  # pixel (0, 1): the column moves fastest
    assert grid[5].tolist() == [0.0, -1.0]  # pixel (1, 0)


def test_digit_image_task_holds_its_pixels_in_the_documented_convention():
    task = load_task(image_cfg(index=7, order="dataset"))
    digits = load_digits()
    assert task.objective == "regression" and task.n_classes == 1
    assert task.signal.shape == (8, 8) and task.signal.columns == {"image_index": 7, "label": 7}
    want = torch.tensor(2 * digits.images[7] / 16 - 1, dtype=torch.float32).reshape(64, 1)
    assert torch.equal(task.y_train, want)
    assert torch.equal(task.x_train, coordinate_grid((8, 8)))
    assert task.x_test is task.x_train  # no holdout: the test split is the whole image again


def test_per_class_order_is_balanced_seeded_and_stable_under_growth():
    labels = [load_task(image_cfg(index=i)).signal.columns["label"] for i in range(30)]
    assert sorted(labels[:10]) == list(range(10)) and sorted(labels[10:20]) == list(range(10))
    rows = [load_task(image_cfg(index=i)).signal.columns["image_index"] for i in range(30)]
    assert len(set(rows)) == 30
    other = [
        load_task(image_cfg(index=i, order_seed=1)).signal.columns["image_index"] for i in range(30)
    ]
    assert rows != other  # the seed chooses the images
    shuffled = [
        load_task(image_cfg(index=i, order="random")).signal.columns["image_index"]
        for i in range(30)
    ]
    assert shuffled != rows and len(set(shuffled)) == 30


def test_holdout_keeps_the_same_pixels_out_of_every_image():
    a, b = (load_task(image_cfg(index=i, holdout=0.25)) for i in (0, 1))
    assert len(a.x_test) == 16 and len(a.x_train) == 48
    assert torch.equal(a.x_test, b.x_test) and not torch.equal(a.y_test, b.y_test)
    seen = torch.cat([a.x_train, a.x_test])
    assert len({tuple(p) for p in seen.tolist()}) == 64  # disjoint, and every pixel is used


def test_fashion_idx_source_splits_and_indexes(tmp_path):
    arrays = fake_idx_folder(tmp_path / "fm", n_train=30, n_test=12)
    cfg = image_cfg(source="fashion_mnist", path=str(tmp_path / "fm"), order="dataset")
    task = load_task({**cfg, "split": "all", "index": 33})  # test row 3 comes after 30 train
    assert task.signal.columns == {"image_index": 33, "label": 3}
    pixels = arrays["t10k-images-idx3-ubyte"][3].astype(np.float32) / 255
    assert torch.allclose(task.y_train[:, 0], torch.from_numpy(2 * pixels - 1).reshape(-1))
    assert task.signal.shape == (28, 28) and task.x_train.shape == (784, 2)
    with pytest.raises(TaskError, match=r"task.index=12 but the fashion_mnist source \(test\) has"):
        load_task({**cfg, "split": "test", "index": 12})


def test_digits_has_no_test_split_and_says_so():
    with pytest.raises(TaskError, match="digits source has one split.*task.split: train"):
        load_task(image_cfg(split="test"))


def test_sinusoids_follow_their_coefficients():
    cfg = {"name": "inr_sinusoid", "points": 16, "frequency": [1.0, 2.0], "index": 4}
    task = load_task(cfg)
    c = task.signal.columns
    assert set(c) == {"signal_frequency", "signal_amplitude", "signal_phase"}
    assert 1 <= c["signal_frequency"] <= 2 and 0.5 <= c["signal_amplitude"] <= 1
    t = task.x_train[:, 0].double()
    want = c["signal_amplitude"] * torch.sin(
        2 * math.pi * c["signal_frequency"] * t + c["signal_phase"]
    )
    torch.testing.assert_close(task.y_train[:, 0].double(), want, atol=1e-6, rtol=0)
    assert len(task.x_train) == 16 and len(task.x_test) == 15  # the midpoints
    assert task.x_train[0, 0] == -1 and task.x_train[-1, 0] == 1
    torch.testing.assert_close(task.x_test[:, 0], (task.x_train[1:, 0] + task.x_train[:-1, 0]) / 2)
    other = load_task({**cfg, "index": 5}).signal.columns
    assert other["signal_frequency"] != c["signal_frequency"]


def signal_recipe(**sections) -> dict:
    data = {
        "schema_version": 1,
        "name": "sig",
        "task": {"name": "inr_image", "source": "digits"},
        "model": {"arch": "siren", "width": 8, "depth": 1},
        "init": {"scheme": "siren", "bias": "uniform"},
        "train": {"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 2},
        "grid": {"task.index": {"range": [0, 6]}},
        "seeds": 2,
    }
    return {**data, **sections}


def test_index_range_expands_and_every_image_shares_one_population():
    runs = expand_recipe(recipe_from_dict(signal_recipe()))
    assert [r.task["index"] for r in runs] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert len({r.cell_id for r in runs}) == 6  # a cell per image; seeds are its views
    assert len({population_key(r) for r in runs}) == 1
    (batch,) = plan_batches(runs, 64)
    assert len(batch.runs) == 12
    grown = expand_recipe(recipe_from_dict(signal_recipe(grid={"task.index": {"range": [0, 9]}})))
    assert {r.run_id for r in runs} <= {r.run_id for r in grown}  # growth keeps the ids


def test_recipe_errors_name_the_key_for_ranges_and_landscape():
    bad = signal_recipe(grid={"task.index": {"range": [5, 5]}, "train.lr": {"range": [1, 3]}})
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(bad)
    text = str(info.value)
    assert "grid.task.index.range: [5, 5] is empty" in text
    assert "grid.train.lr.range[first]: expected number" not in text  # integers are numbers
    with pytest.raises(RecipeError, match=r"grid.task.index: \{'rng': 3\} is neither a list"):
        recipe_from_dict(signal_recipe(grid={"task.index": {"rng": 3}}))
    with pytest.raises(RecipeError, match=r"grid.task.index.range\[first\]: -1 is less than"):
        recipe_from_dict(signal_recipe(grid={"task.index": {"range": [-1, 3]}}))
    landscape = signal_recipe(landscape={"metrics": ["hessian"]})
    with pytest.raises(RecipeError, match="landscape.metrics: the landscape stage needs a class"):
        recipe_from_dict(landscape)


def test_hf_image_folder_source(hf_offline, digits_folder):  # noqa: F811 (pytest fixtures)
    """Any Hugging Face image dataset or local folder: here a local Hub-style folder."""
    folder, pixels, target = digits_folder
    cfg = image_cfg(source="hf", path=str(folder), cache_dir=str(hf_offline), order="dataset")
    task = load_task({**cfg, "split": "all", "index": 65})  # test row 5 after 60 train rows
    assert task.signal.columns == {"image_index": 65, "label": int(target[65])}
    v = pixels[65].astype(np.float32) / np.float32(255)
    torch.testing.assert_close(task.y_train[:, 0], torch.from_numpy(2 * v - 1).reshape(-1))
    with pytest.raises(TaskError, match="source hf needs task.path"):
        load_task(image_cfg(source="hf"))
