"""scikit-learn's bundled 8x8 digits: a task that ships with a package and needs no download."""

from __future__ import annotations

import numpy as np

from zoo import streams
from zoo.errors import TaskError
from zoo.streams import numpy_rng
from zoo.tasks.base import Task, config_fraction, config_int, make_task, subset


def load_digits_task(cfg: dict) -> Task:
    """scikit-learn's bundled 8x8 digits (1797 samples, offline), split by a seeded permutation.

    Args:
        cfg: task config; keys ``test_fraction`` (0.2), ``split_seed`` (0), ``n_train`` (None =
            all of the train part, else a seeded subset of it).

    Returns:
        A Task with x ``(N, 1, 8, 8)`` in [0, 1] and 10 classes.
    """
    from sklearn.datasets import load_digits  # lazy: only this task needs scikit-learn

    where = "digits"
    test_fraction = config_fraction(cfg, "test_fraction", 0.2, where, 0.0, 1.0)
    split_seed = config_int(cfg, "split_seed", 0, where)
    n_train = config_int(cfg, "n_train", None, where, minimum=1)
    data = load_digits()
    x = (data.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = data.target.astype(np.int64)
    n_test = round(test_fraction * len(x))
    if not 0 < n_test < len(x):
        raise TaskError(
            f"{where}: task.test_fraction={test_fraction} leaves {n_test} of {len(x)} samples "
            "for test; both splits need at least one sample, use e.g. 0.2"
        )
    perm = numpy_rng(split_seed, streams.SPLIT).permutation(len(x))
    test, train = perm[:n_test], perm[n_test:]
    x_train, y_train = subset(
        x[train], y[train], n_train, split_seed, where=f"{where}: task.n_train"
    )
    return make_task("digits", x_train, y_train, x[test], y[test], n_classes=10)


def describe(cfg: dict) -> str:
    """The data pipeline in words a consumer can reimplement (the dataset card quotes it)."""
    n_train = cfg.get("n_train")
    subset = (
        f" The training set is then cut to {n_train} rows: those at `sorted(rng.permutation("
        "len(train))[:n_train])`, `rng = numpy.random.default_rng(numpy.random.SeedSequence("
        "[split_seed, 2]))`, in their order."
        if n_train
        else ""
    )
    return (
        "scikit-learn's bundled 8×8 digits (`sklearn.datasets.load_digits()`: 1,797 images, 10 "
        "classes): pixels divided by 16 into [0, 1], shape (1, 8, 8), float32. Test set: `perm = "
        "numpy.random.default_rng(numpy.random.SeedSequence([split_seed, 1])).permutation(1797)`; "
        f"the first `round(test_fraction × 1797)` = {round(cfg.get('test_fraction', 0.2) * 1797)} "
        "indices of `perm` are the test set, the rest (in `perm`'s order) the training set."
        + subset
    )
