"""Tasks: the data every model of a population is trained and evaluated on.

A :class:`Task` holds the train and test tensors of one task config. Loaders are registered in
:data:`TASKS` by name; :func:`load_task` dispatches on ``cfg["name"]`` and caches the result per
process, so a worker reads the data once and all models of a population share the same tensors
(callers must not modify them in place). Loaders that read files or external datasets
(``fashion_mnist``, ``hf``) live in :mod:`zoo.datafiles`, generated ones (``teacher_student``,
``modular``) in :mod:`zoo.synthetic`; this module holds the rest.

Image tasks give ``x`` as ``(N, C, H, W)`` float32 scaled to [0, 1]; vector tasks give
``(N, D)``. Labels are int64 in ``[0, n_classes)``. All randomness comes from
``np.random.default_rng(np.random.SeedSequence([seed, STREAM]))`` with one fixed stream number
per use, so the same config gives bitwise-identical tensors on any machine.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import TaskError
from .ids import canonical_json

# One stream number per use of randomness: the same seed used for two purposes (e.g. the train
# and the test subset) must still give independent draws.
STREAM_SPLIT = 1
STREAM_SUBSET_TRAIN = 2
STREAM_SUBSET_TEST = 3
STREAM_TEACHER = 4
STREAM_X_TRAIN = 5
STREAM_X_TEST = 6
STREAM_LABEL_NOISE = 7

_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class Task:
    """The train and test data of one task config.

    ``eq=False``: tasks compare by identity (comparing tensors field by field is ambiguous),
    which is also what the per-process cache guarantees for equal configs.

    Attributes:
        name: the task's registry name (``cfg["name"]``).
        x_train: ``(N, *input_shape)`` float32, contiguous.
        y_train: ``(N,)`` int64 in ``[0, n_classes)``.
        x_test: ``(N_test, *input_shape)`` float32, contiguous.
        y_test: ``(N_test,)`` int64 in ``[0, n_classes)``.
        n_classes: number of classes.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    def __post_init__(self) -> None:
        _check_split(self.name, "train", self.x_train, self.y_train, self.n_classes)
        _check_split(self.name, "test", self.x_test, self.y_test, self.n_classes)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise TaskError(
                f"{self.name}: train inputs have shape {tuple(self.x_train.shape[1:])} but test "
                f"inputs {tuple(self.x_test.shape[1:])}; both splits must share one input shape"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input: ``x_train.shape[1:]``."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Task(name={self.name!r}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}, n_classes={self.n_classes})"
        )


def _check_split(name: str, split: str, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> None:
    """Raise a TaskError unless ``x``/``y`` of one split follow the Task contract."""
    where = f"{name}: {split} split"
    if x.dtype != torch.float32 or x.ndim < 2 or not x.is_contiguous():
        raise TaskError(f"{where}: x must be contiguous float32 (N, ...), got {x.dtype} {x.shape}")
    if y.dtype != torch.int64 or y.ndim != 1 or len(y) != len(x):
        raise TaskError(f"{where}: y must be int64 ({len(x)},), got {y.dtype} {tuple(y.shape)}")
    if len(y) == 0:
        raise TaskError(f"{where}: no samples; check the split name and the n_* settings")
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise TaskError(
            f"{where}: labels span [{int(y.min())}, {int(y.max())}] but n_classes={n_classes}; "
            "labels must be integers in [0, n_classes)"
        )


def make_task(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    n_classes: int,
) -> Task:
    """Build a :class:`Task` from numpy arrays (float32 x, integer y), copying only if needed.

    Args:
        name: the task's registry name.
        x_train, y_train, x_test, y_test: the splits; x is cast to contiguous float32, y to int64.
        n_classes: number of classes.

    Returns:
        The validated Task.
    """

    def tensor(a: np.ndarray, dtype: Any) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))

    return Task(
        name=name,
        x_train=tensor(x_train, np.float32),
        y_train=tensor(y_train, np.int64),
        x_test=tensor(x_test, np.float32),
        y_test=tensor(y_test, np.int64),
        n_classes=int(n_classes),
    )


# ---------------------------------------------------------------------------------------------
# Seeded randomness, subsets and config values


def rng(seed: int, stream: int) -> np.random.Generator:
    """A generator for one (seed, stream) pair: the only source of randomness in this module."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def subset_indices(n_total: int, n: int | None, seed: int, stream: int, where: str) -> np.ndarray:
    """Sorted indices of a seeded subset of ``n`` of ``n_total`` rows (all rows if n is None).

    Indices are the first ``n`` of a seeded permutation, so a larger ``n`` with the same seed
    gives a superset; they are sorted so the rows keep their original order.

    Args:
        n_total: number of rows available.
        n: rows wanted, or None for all.
        seed: the seed (e.g. ``split_seed``).
        stream: the stream number (use a different one per purpose).
        where: label for error messages, e.g. ``"digits: task.n_train"``.

    Returns:
        An int64 array of row indices.
    """
    if n is None:
        return np.arange(n_total, dtype=np.int64)
    if n > n_total:
        raise TaskError(
            f"{where}={n} but only {n_total} samples are available; "
            "lower it or set it to null to use all of them"
        )
    return np.sort(rng(seed, stream).permutation(n_total)[:n]).astype(np.int64)


def subset(
    x: Any,
    y: Any,
    n: int | None,
    seed: int,
    *,
    stream: int = STREAM_SUBSET_TRAIN,
    where: str = "subset: n",
) -> tuple[Any, Any]:
    """A seeded subset of ``n`` rows of ``x`` and ``y`` (same n, seed and stream -> same rows).

    Args:
        x: numpy array or torch tensor, rows on axis 0.
        y: numpy array or torch tensor with as many rows as ``x``.
        n: rows wanted, or None for all (``x`` and ``y`` are returned as they are).
        seed: the seed.
        stream: the stream number; loaders pass a different one for train and test.
        where: label for error messages.

    Returns:
        ``(x_subset, y_subset)`` of the same types as the inputs.
    """
    if len(x) != len(y):
        raise TaskError(f"{where}: x has {len(x)} rows but y has {len(y)}; they must match")
    if n is None:
        return x, y
    idx = subset_indices(len(x), n, seed, stream, where)
    if isinstance(x, torch.Tensor):
        return x[torch.from_numpy(idx)], y[torch.from_numpy(idx)]
    return x[idx], y[idx]


def _int(cfg: dict, key: str, default: int | None, where: str, minimum: int = 0) -> Any:
    """``cfg[key]`` (or the default) as an int >= minimum; None passes through if the default is
    None (an optional count)."""
    value = cfg.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or null" if default is None else "")
        raise TaskError(f"{where}: task.{key} must be {allowed}, got {value!r}")
    return value


def _fraction(cfg: dict, key: str, default: float, where: str, lo: float, hi: float) -> float:
    """``cfg[key]`` (or the default) as a float in ``[lo, hi]``."""
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise TaskError(f"{where}: task.{key} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------
# digits


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
    test_fraction = _fraction(cfg, "test_fraction", 0.2, where, 0.0, 1.0)
    split_seed = _int(cfg, "split_seed", 0, where)
    n_train = _int(cfg, "n_train", None, where, minimum=1)
    data = load_digits()
    x = (data.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = data.target.astype(np.int64)
    n_test = round(test_fraction * len(x))
    if not 0 < n_test < len(x):
        raise TaskError(
            f"{where}: task.test_fraction={test_fraction} leaves {n_test} of {len(x)} samples "
            "for test; both splits need at least one sample, use e.g. 0.2"
        )
    perm = rng(split_seed, STREAM_SPLIT).permutation(len(x))
    test, train = perm[:n_test], perm[n_test:]
    x_train, y_train = subset(
        x[train], y[train], n_train, split_seed, where=f"{where}: task.n_train"
    )
    return make_task("digits", x_train, y_train, x[test], y[test], n_classes=10)


# ---------------------------------------------------------------------------------------------
# Registry and cached dispatch

# Late imports: datafiles and synthetic import Task, make_task and the helpers above, so those
# come first.
from .datafiles import load_fashion_mnist, load_hf  # noqa: E402
from .synthetic import load_modular, load_teacher_student  # noqa: E402

TASKS: dict[str, Callable[[dict], Task]] = {
    "digits": load_digits_task,
    "fashion_mnist": load_fashion_mnist,
    "teacher_student": load_teacher_student,
    "modular": load_modular,
    "hf": load_hf,
}


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _load_cached(key: str) -> Task:
    """Load the task whose canonical JSON config is ``key`` (cached per process)."""
    cfg = json.loads(key)
    return TASKS[cfg["name"]](cfg)


def load_task(cfg: dict) -> Task:
    """Load the task a config names, once per process per config.

    Args:
        cfg: the recipe's ``task:`` section (a dict with ``name`` and the task's keys); equal
            configs (as canonical JSON) share one cached Task and so the same tensors.

    Returns:
        The Task; callers must not modify its tensors in place.

    Raises:
        TaskError: for an unknown name (listing the allowed ones) or data that cannot be loaded.
    """
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise TaskError(f"task config must be a mapping with a 'name' key, got {cfg!r}")
    if cfg["name"] not in TASKS:
        raise TaskError(
            f"task.name={cfg['name']!r} is not a known task; allowed: {', '.join(sorted(TASKS))}"
        )
    try:
        key = canonical_json(cfg)
    except (TypeError, ValueError) as exc:
        raise TaskError(f"task config {cfg!r} is not plain JSON data ({exc}); use str/num") from exc
    # The lock makes concurrent threads of one worker wait for a single load, not race two.
    with _CACHE_LOCK:
        return _load_cached(key)


def clear_task_cache() -> None:
    """Forget every cached Task (e.g. in tests, or to free memory after a population)."""
    _load_cached.cache_clear()
