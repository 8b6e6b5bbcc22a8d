"""Generated tasks: no files, no downloads, bitwise the same from the same config anywhere.

``teacher_student``: Gaussian inputs labelled by a random tanh MLP (lazy/rich and SGD-noise
studies); ``modular``: a∘b mod p on one-hot pairs (grokking, Power et al. 2022). Both follow
the :class:`~zoo.tasks.Task` contract and are registered in :data:`zoo.tasks.TASKS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .errors import TaskError
from .tasks import (
    STREAM_LABEL_NOISE,
    STREAM_SPLIT,
    STREAM_TEACHER,
    STREAM_X_TEST,
    STREAM_X_TRAIN,
    Task,
    _fraction,
    _int,
    make_task,
    rng,
)

# ---------------------------------------------------------------------------------------------
# teacher_student


def _teacher_labels(x: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """argmax of the teacher's logits ``tanh(x @ w1) @ w2`` (computed in float64)."""
    return np.argmax(np.tanh(x.astype(np.float64) @ w1) @ w2, axis=1).astype(np.int64)


def _noisy(y: np.ndarray, fraction: float, n_classes: int, seed: int) -> np.ndarray:
    """``y`` with ``round(fraction * len(y))`` seeded rows replaced by a uniform random class.

    A replacement may draw the original class, so about ``fraction * (1 - 1/n_classes)`` of the
    labels actually change (the usual symmetric label-noise definition).
    """
    gen = rng(seed, STREAM_LABEL_NOISE)
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
    dim = _int(cfg, "input_dim", 16, where, minimum=1)
    hidden = _int(cfg, "teacher_hidden", 32, where, minimum=1)
    n_classes = _int(cfg, "n_classes", 4, where, minimum=2)
    n_train = _int(cfg, "n_train", 1024, where, minimum=1)
    n_test = _int(cfg, "n_test", 1024, where, minimum=1)
    noise = _fraction(cfg, "label_noise", 0.0, where, 0.0, 1.0)
    seed = _int(cfg, "teacher_seed", 0, where)
    teacher = rng(seed, STREAM_TEACHER)
    w1 = teacher.standard_normal((dim, hidden)) / math.sqrt(dim)
    w2 = teacher.standard_normal((hidden, n_classes)) / math.sqrt(hidden)
    x_train = rng(seed, STREAM_X_TRAIN).standard_normal((n_train, dim)).astype(np.float32)
    x_test = rng(seed, STREAM_X_TEST).standard_normal((n_test, dim)).astype(np.float32)
    y_train = _noisy(_teacher_labels(x_train, w1, w2), noise, n_classes, seed)
    y_test = _teacher_labels(x_test, w1, w2)
    return make_task(where, x_train, y_train, x_test, y_test, n_classes)


# ---------------------------------------------------------------------------------------------
# modular arithmetic

_OPERATIONS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
    "div": lambda a, b, p: (a * np.array([pow(int(v), p - 2, p) for v in b])) % p,
}


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % d for d in range(2, math.isqrt(p) + 1))


def load_modular(cfg: dict) -> Task:
    """Modular arithmetic, the grokking task of Power et al. 2022 ("Grokking: generalization
    beyond overfitting on small algorithmic datasets") in the MLP form of Gromov 2023 ("Grokking
    modular arithmetic"): every pair (a, b) of Z_p² (b != 0 for ``div``) labelled a∘b mod p.

    An input is the concatenation of one-hot(a) and one-hot(b): ``(2p,)`` float32, so a plain
    MLP reads it. A seeded ``train_fraction`` of the pairs is the training set, the rest the
    test set; accuracy on the test set is generalization to unseen pairs.

    Args:
        cfg: task config; keys ``modulus`` (23), ``operation`` (``add``: a+b, ``sub``: a-b,
            ``mul``: a·b, ``div``: a·b⁻¹, which needs p prime), ``train_fraction`` (0.5),
            ``split_seed`` (0).

    Returns:
        A Task with p classes.
    """
    where = "modular"
    p = _int(cfg, "modulus", 23, where, minimum=2)
    op = cfg.get("operation", "add")
    if op not in _OPERATIONS:
        raise TaskError(f"{where}: task.operation={op!r}; allowed: {sorted(_OPERATIONS)}")
    if op == "div" and not _is_prime(p):
        raise TaskError(f"{where}: division needs a prime modulus, got {p}; use e.g. 23 or 97")
    fraction = _fraction(cfg, "train_fraction", 0.5, where, 0.0, 1.0)
    seed = _int(cfg, "split_seed", 0, where)
    a, b = (g.reshape(-1) for g in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    if op == "div":
        a, b = a[b != 0], b[b != 0]
    eye = np.eye(p, dtype=np.float32)
    x, y = np.concatenate([eye[a], eye[b]], axis=1), _OPERATIONS[op](a, b, p)
    n_train = round(fraction * len(x))
    if not 0 < n_train < len(x):
        raise TaskError(
            f"{where}: task.train_fraction={fraction} leaves {n_train} of {len(x)} pairs for "
            "training; both splits need at least one pair, use e.g. 0.5"
        )
    perm = rng(seed, STREAM_SPLIT).permutation(len(x))
    train, test = np.sort(perm[:n_train]), np.sort(perm[n_train:])
    return make_task(where, x[train], y[train], x[test], y[test], n_classes=p)
