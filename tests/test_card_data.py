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


def test_modular_tokens_as_the_card_describes_it():
    cfg = {"name": "modular_tokens", "modulus": 5, "operation": "add", "train_fraction": 0.6}
    assert "[a, p, b, p+1]" in describe_task(cfg)
    a, b = np.divmod(np.arange(25), 5)
    x = np.stack([a, np.full(25, 5), b, np.full(25, 6)], axis=1)
    y = np.full_like(x, -100)
    y[:, -1] = (a + b) % 5
    perm = rng(0, 1).permutation(25)
    train, test = np.sort(perm[:15]), np.sort(perm[15:])
    task = load_task({**cfg, "split_seed": 0})
    assert np.array_equal(task.x_train.numpy(), x[train])
    assert np.array_equal(task.y_test.numpy(), y[test])


@pytest.mark.parametrize("algorithm", ["copy", "reverse", "sort"])
def test_algorithmic_as_the_card_describes_it(algorithm):
    cfg = {
        "name": "algorithmic",
        "algorithm": algorithm,
        "length": 3,
        "symbols": 4,
        "n_train": 30,
        "n_test": 20,
        "split_seed": 1,
    }
    assert "SeedSequence([split_seed, 70])" in describe_task(cfg)
    g, kept, seen = rng(1, 70), [], set()
    while len(kept) < 50:
        for row in g.integers(0, 4, (50, 3)).tolist():
            if tuple(row) not in seen:
                seen.add(tuple(row))
                kept.append(row)
    s = np.array(kept[:50])
    o = {"copy": s, "reverse": s[:, ::-1], "sort": np.sort(s, axis=1)}[algorithm]
    x = np.concatenate([s, np.full((50, 1), 4), o[:, :-1]], axis=1)
    y = np.concatenate([np.full_like(s, -100), o], axis=1)
    task = load_task(cfg)
    assert np.array_equal(task.x_train.numpy(), x[:30])
    assert np.array_equal(task.x_test.numpy(), x[30:])
    assert np.array_equal(task.y_test.numpy(), y[30:])


def test_char_lm_as_the_card_describes_it(tmp_path):
    text = "the quick brown fox jumps over the lazy dog; " * 20 + "ünïcode ✓"
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    cfg = {"name": "char_lm", "path": str(path), "context": 7, "test_fraction": 0.25}
    cfg |= {"n_train": 50, "split_seed": 4}
    assert "sorted(set(text))" in describe_task(cfg)
    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) for c in text])
    cut = round(0.75 * len(ids))

    def cut_windows(part):
        n = (len(part) - 1) // 7
        w = np.stack([part[i * 7 : i * 7 + 8] for i in range(n)])
        return w[:, :-1], w[:, 1:]

    x_train, y_train = cut_windows(ids[:cut])
    x_test, y_test = cut_windows(ids[cut:])
    keep = subset(len(x_train), 50, 4, 2)
    task = load_task(cfg)
    assert task.n_classes == len(vocab)
    assert np.array_equal(task.x_train.numpy(), x_train[keep])
    assert np.array_equal(task.y_train.numpy(), y_train[keep])
    assert np.array_equal(task.x_test.numpy(), x_test)
    assert np.array_equal(task.y_test.numpy(), y_test)
