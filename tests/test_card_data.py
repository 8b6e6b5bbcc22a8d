"""The card's "Data" section is a specification: a consumer who implements it from the words
alone (here with numpy and scikit-learn only) gets the tensors zoo trained on (issue 13)."""

import math

import numpy as np
import pytest

from zoo.tasks import describe_task, load_task

from .test_datafiles import fake_idx_folder


def rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def subset(n_total: int, n: int, seed: int, stream: int) -> np.ndarray:
    return np.sort(rng(seed, stream).permutation(n_total)[:n])


def test_digits_as_the_card_describes_it():
    from sklearn.datasets import load_digits

    cfg = {"name": "digits", "test_fraction": 0.2, "split_seed": 3, "n_train": 500}
    text = describe_task(cfg)
    assert "SeedSequence([split_seed, 1])" in text and "= 359 indices" in text
    data = load_digits()
    x = (data.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    perm = rng(3, 1).permutation(1797)
    test, train = perm[: round(0.2 * 1797)], perm[round(0.2 * 1797) :]
    keep = subset(len(train), 500, 3, 2)
    task = load_task(cfg)
    assert np.array_equal(task.x_test.numpy(), x[test])
    assert np.array_equal(task.x_train.numpy(), x[train][keep])
    assert np.array_equal(task.y_train.numpy(), data.target[train][keep])


def test_modular_as_the_card_describes_it():
    cfg = {"name": "modular", "modulus": 7, "operation": "add", "train_fraction": 0.5}
    assert "a-major" in describe_task(cfg)
    a, b = np.divmod(np.arange(49), 7)
    x = np.concatenate([np.eye(7)[a], np.eye(7)[b]], axis=1).astype(np.float32)
    perm = rng(0, 1).permutation(49)
    train, test = np.sort(perm[: round(0.5 * 49)]), np.sort(perm[round(0.5 * 49) :])
    task = load_task({**cfg, "split_seed": 0})
    assert np.array_equal(task.x_train.numpy(), x[train])
    assert np.array_equal(task.y_test.numpy(), ((a + b) % 7)[test])


def test_teacher_student_as_the_card_describes_it():
    cfg = {
        "name": "teacher_student",
        "input_dim": 5,
        "teacher_hidden": 7,
        "n_classes": 3,
        "n_train": 40,
        "n_test": 20,
        "label_noise": 0.25,
        "teacher_seed": 2,
    }
    assert "rng(7)" in describe_task(cfg)
    g = rng(2, 4)
    w1 = g.standard_normal((5, 7)) / math.sqrt(5)
    w2 = g.standard_normal((7, 3)) / math.sqrt(7)
    x = rng(2, 5).standard_normal((40, 5)).astype(np.float32)
    y = np.argmax(np.tanh(x.astype(np.float64) @ w1) @ w2, axis=1)
    noise = rng(2, 7)
    rows = noise.permutation(40)[: round(0.25 * 40)]
    y[rows] = noise.integers(0, 3, size=len(rows))
    task = load_task(cfg)
    assert np.array_equal(task.x_train.numpy(), x) and np.array_equal(task.y_train.numpy(), y)


def test_fashion_mnist_as_the_card_describes_it(tmp_path):
    arrays = fake_idx_folder(tmp_path, n_train=50, n_test=20)
    cfg = {"name": "fashion_mnist", "path": str(tmp_path), "n_train": 30, "n_test": 10}
    assert "divided by 255" in describe_task(cfg)
    images = arrays["train-images-idx3-ubyte"].astype(np.float32) / np.float32(255)
    keep = subset(50, 30, 0, 2)
    task = load_task(cfg)
    assert np.array_equal(task.x_train.numpy()[:, 0], images[keep])
    test_keep = subset(20, 10, 0, 3)
    assert np.array_equal(task.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"][test_keep])


@pytest.mark.parametrize("name", ["digits", "modular", "teacher_student", "fashion_mnist", "hf"])
def test_every_task_is_described(name):
    assert describe_task({"name": name, "path": "x"})
