"""teacher_student: Gaussian inputs labelled by a random tanh MLP (generated, no files; for
lazy/rich and SGD-noise studies). Bitwise the same from the same config anywhere."""

from __future__ import annotations

import math

import numpy as np

from zoo import streams
from zoo.streams import numpy_rng
from zoo.tasks.base import Task, config_fraction, config_int, make_task


def _teacher_labels(x: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """argmax of the teacher's logits ``tanh(x @ w1) @ w2`` (computed in float64)."""
    return np.argmax(np.tanh(x.astype(np.float64) @ w1) @ w2, axis=1).astype(np.int64)


def _noisy(y: np.ndarray, fraction: float, n_classes: int, seed: int) -> np.ndarray:
    """``y`` with ``round(fraction * len(y))`` seeded rows replaced by a uniform random class.

    A replacement may draw the original class, so about ``fraction * (1 - 1/n_classes)`` of the
    labels actually change (the usual symmetric label-noise definition).
    """
    gen = numpy_rng(seed, streams.LABEL_NOISE)
    rows = gen.permutation(len(y))[: round(fraction * len(y))]
    out = y.copy()
    out[rows] = gen.integers(0, n_classes, size=len(rows))
    return out


def load_teacher_student(cfg: dict) -> Task:
    """Synthetic classification: Gaussian inputs labelled by a random 1-hidden-layer tanh MLP.

    The teacher has no biases and Gaussian weights with std ``1/sqrt(fan_in)``, all from
    ``teacher_seed``; train and test inputs come from two other streams of the same seed.

    Args:
        cfg: task config; keys ``input_dim`` (16), ``teacher_hidden`` (32), ``n_classes`` (4),
            ``n_train`` (1024), ``n_test`` (1024), ``label_noise`` (0.0: fraction of train
            labels replaced by a uniformly random class), ``teacher_seed`` (0).

    Returns:
        A Task with x ``(N, input_dim)`` ~ N(0, I).
    """
    where = "teacher_student"
    dim = config_int(cfg, "input_dim", 16, where, minimum=1)
    hidden = config_int(cfg, "teacher_hidden", 32, where, minimum=1)
    n_classes = config_int(cfg, "n_classes", 4, where, minimum=2)
    n_train = config_int(cfg, "n_train", 1024, where, minimum=1)
    n_test = config_int(cfg, "n_test", 1024, where, minimum=1)
    noise = config_fraction(cfg, "label_noise", 0.0, where, 0.0, 1.0)
    seed = config_int(cfg, "teacher_seed", 0, where)
    teacher = numpy_rng(seed, streams.TEACHER)
    w1 = teacher.standard_normal((dim, hidden)) / math.sqrt(dim)
    w2 = teacher.standard_normal((hidden, n_classes)) / math.sqrt(hidden)
    x_train = numpy_rng(seed, streams.X_TRAIN).standard_normal((n_train, dim)).astype(np.float32)
    x_test = numpy_rng(seed, streams.X_TEST).standard_normal((n_test, dim)).astype(np.float32)
    y_train = _noisy(_teacher_labels(x_train, w1, w2), noise, n_classes, seed)
    y_test = _teacher_labels(x_test, w1, w2)
    return make_task(where, x_train, y_train, x_test, y_test, n_classes)


def describe(cfg: dict) -> str:
    """The data pipeline in words a consumer can reimplement (the dataset card quotes it)."""
    return (
        "Generated (teacher_student): `rng(k) = numpy.random.default_rng(numpy.random."
        "SeedSequence([teacher_seed, k]))`. Teacher: `g = rng(4)`, `w1 = g.standard_normal((dim, "
        "hidden)) / sqrt(dim)`, then `w2 = g.standard_normal((hidden, classes)) / sqrt(hidden)`. "
        "Inputs: `rng(5).standard_normal((n_train, dim))` (training) and `rng(6)` (test), "
        "float32. Labels: `argmax(tanh(x @ w1) @ w2)` in float64. Label noise: `g = rng(7)`, "
        "`rows = g.permutation(n_train)[:round(label_noise × n_train)]`, their labels replaced "
        "by `g.integers(0, classes, len(rows))`."
    )
