"""Tests of zoo.tasks: the generated/shipped loaders, subsets, the registry and its cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.errors import TaskError
from zoo.tasks import TASKS, Task, load_task
from zoo.tasks.base import subset


def assert_task_contract(task: Task) -> None:
    """The invariants every loader promises."""
    for x, y in ((task.x_train, task.y_train), (task.x_test, task.y_test)):
        assert x.dtype == torch.float32 and x.is_contiguous()
        assert y.dtype == torch.int64 and y.shape == (len(x),)
        assert int(y.min()) >= 0 and int(y.max()) < task.n_classes
    assert task.input_shape == tuple(task.x_train.shape[1:]) == tuple(task.x_test.shape[1:])


def assert_same_task(a: Task, b: Task) -> None:
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.n_classes == b.n_classes


# ----------------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_range():
    task = TASKS["digits"]({"name": "digits"})
    assert_task_contract(task)
    assert task.input_shape == (1, 8, 8)
    assert task.n_classes == 10
    assert len(task.x_train) + len(task.x_test) == 1797
    assert len(task.x_test) == round(0.2 * 1797)
    assert float(task.x_train.min()) == 0.0 and float(task.x_train.max()) == 1.0
    # every digit appears in both splits
    assert set(task.y_train.tolist()) == set(range(10)) == set(task.y_test.tolist())


def test_digits_pixels_are_the_source_divided_by_16():
    from sklearn.datasets import load_digits

    source = load_digits()
    task = TASKS["digits"]({"name": "digits"})
    # every train row is an actual digits image with its own label
    flat = {
        row.tobytes(): label for row, label in zip(source.images / 16.0, source.target, strict=True)
    }
    for x, y in zip(task.x_train[:50], task.y_train[:50], strict=True):
        key = x[0].double().numpy().tobytes()
        assert flat[key] == int(y)


def test_digits_deterministic_and_seeded():
    a = TASKS["digits"]({"name": "digits", "split_seed": 0})
    b = TASKS["digits"]({"name": "digits", "split_seed": 0})
    c = TASKS["digits"]({"name": "digits", "split_seed": 1})
    assert a is not b
    assert_same_task(a, b)
    assert len(c.x_test) == len(a.x_test)
    assert not torch.equal(a.x_test, c.x_test)


def test_digits_n_train_subset():
    full = TASKS["digits"]({"name": "digits"})
    small = TASKS["digits"]({"name": "digits", "n_train": 100})
    assert small.x_train.shape == (100, 1, 8, 8)
    assert torch.equal(small.x_test, full.x_test)  # the subset leaves the test split alone
    assert_same_task(small, TASKS["digits"]({"name": "digits", "n_train": 100}))
    with pytest.raises(TaskError, match="n_train"):
        TASKS["digits"]({"name": "digits", "n_train": 5000})


def test_digits_bad_test_fraction():
    with pytest.raises(TaskError, match="test_fraction"):
        TASKS["digits"]({"name": "digits", "test_fraction": 1.5})


# -------------------------------------------------------------------------------- subset


def test_subset_same_seed_same_rows():
    x = np.arange(100, dtype=np.float32).reshape(50, 2)
    y = np.arange(50)
    xa, ya = subset(x, y, 10, seed=3)
    xb, yb = subset(x, y, 10, seed=3)
    xc, _ = subset(x, y, 10, seed=4)
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert not np.array_equal(xa, xc)
    assert np.array_equal(xa[:, 0] / 2, ya)  # rows stay paired with their labels
    assert len(set(ya.tolist())) == 10
    xt, yt = subset(torch.from_numpy(x), torch.from_numpy(y), 10, seed=3)
    assert isinstance(xt, torch.Tensor) and np.array_equal(yt.numpy(), ya)
    assert subset(x, y, None, seed=3)[0] is x


# -------------------------------------------------------------------------- teacher_student


def test_teacher_student_shapes_and_determinism():
    cfg = {"name": "teacher_student", "input_dim": 8, "n_classes": 3, "n_train": 200, "n_test": 50}
    task = TASKS["teacher_student"](cfg)
    assert_task_contract(task)
    assert task.x_train.shape == (200, 8) and task.x_test.shape == (50, 8)
    assert task.n_classes == 3
    assert len(set(task.y_train.tolist())) > 1 and len(set(task.y_test.tolist())) > 1
    assert_same_task(task, TASKS["teacher_student"](dict(cfg)))
    other = TASKS["teacher_student"]({**cfg, "teacher_seed": 1})
    assert not torch.equal(task.x_train, other.x_train)
    assert not torch.equal(task.x_train[:50], task.x_test)  # distinct streams
    assert abs(float(task.x_train.mean())) < 0.2 and 0.8 < float(task.x_train.std()) < 1.2


def test_teacher_student_label_noise():
    cfg = {"name": "teacher_student", "n_train": 4000, "n_test": 100, "n_classes": 4}
    clean = TASKS["teacher_student"](cfg)
    noisy = TASKS["teacher_student"]({**cfg, "label_noise": 0.4})
    assert torch.equal(clean.x_train, noisy.x_train) and torch.equal(clean.y_test, noisy.y_test)
    changed = float((clean.y_train != noisy.y_train).float().mean())
    # 40% of rows get a uniform random class, which is a new class 3 times in 4
    assert abs(changed - 0.4 * 0.75) < 0.03


def test_teacher_student_bad_config():
    with pytest.raises(TaskError, match="label_noise"):
        TASKS["teacher_student"]({"name": "teacher_student", "label_noise": 2})
    with pytest.raises(TaskError, match="n_classes"):
        TASKS["teacher_student"]({"name": "teacher_student", "n_classes": 1})


# ------------------------------------------------------------------------------- load_task


def test_load_task_unknown_name():
    allowed = (
        "allowed: algorithmic, char_lm, digits, fashion_mnist, hf, inr_image, inr_sinusoid, "
        "modular, modular_tokens, teacher_student"
    )
    with pytest.raises(TaskError, match=allowed):
        load_task({"name": "imagenet"})
    with pytest.raises(TaskError, match="name"):
        load_task({"test_fraction": 0.2})


def test_load_task_is_cached():
    cfg = {"name": "teacher_student", "n_train": 64, "n_test": 32}
    a = load_task(cfg)
    b = load_task({"n_test": 32, "n_train": 64, "name": "teacher_student"})  # same, reordered
    c = load_task({**cfg, "teacher_seed": 5})
    assert a is b
    assert a.x_train is b.x_train
    assert c is not a
    assert isinstance(a, Task) and a.input_shape == (16,)
