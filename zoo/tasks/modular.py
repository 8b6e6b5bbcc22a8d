"""modular: a∘b mod p on one-hot pairs, the grokking task (generated, no files)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from zoo import streams
from zoo.errors import TaskError
from zoo.streams import numpy_rng
from zoo.tasks.base import Task, config_fraction, config_int, make_task

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
    p = config_int(cfg, "modulus", 23, where, minimum=2)
    op = cfg.get("operation", "add")
    if op not in _OPERATIONS:
        raise TaskError(f"{where}: task.operation={op!r}; allowed: {sorted(_OPERATIONS)}")
    if op == "div" and not _is_prime(p):
        raise TaskError(f"{where}: division needs a prime modulus, got {p}; use e.g. 23 or 97")
    fraction = config_fraction(cfg, "train_fraction", 0.5, where, 0.0, 1.0)
    seed = config_int(cfg, "split_seed", 0, where)
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
    perm = numpy_rng(seed, streams.SPLIT).permutation(len(x))
    train, test = np.sort(perm[:n_train]), np.sort(perm[n_train:])
    return make_task(where, x[train], y[train], x[test], y[test], n_classes=p)


def describe(cfg: dict) -> str:
    """The data pipeline in words a consumer can reimplement (the dataset card quotes it)."""
    return (
        "Generated (modular): every pair (a, b) of Z_p², a-major (b ≠ 0 for `div`), labelled "
        "a∘b mod p; an input is `concat(one_hot(a), one_hot(b))`, float32 of length 2p. Split: "
        "`perm = numpy.random.default_rng(numpy.random.SeedSequence([split_seed, 1])).permutation"
        "(N)`; training = `sorted(perm[:round(train_fraction × N)])`, test = the sorted rest."
    )
