"""The task contract: :class:`Task` (the train and test data every model of a population shares)
and the helpers every data source uses (seeded subsets, checked config values).

Image tasks give ``x`` as ``(N, C, H, W)`` float32 scaled to [0, 1]; vector tasks give
``(N, D)``. Labels are int64 in ``[0, n_classes)``. Sequence tasks (issue 15) give token ids:
``x`` int64 ``(N, T)`` and ``y`` int64 ``(N, T)``, both over one vocabulary of ``n_classes``
tokens (a decoder reads and writes the same tokens), ``IGNORE`` where a position is not
scored. All randomness comes from
:func:`zoo.streams.numpy_rng` with the task's data seed and one stream per use, so the same
config gives bitwise-identical tensors on any machine. This module imports no data source: each
source is a module of :mod:`zoo.tasks` that builds its Task from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zoo import streams
from zoo.errors import TaskError
from zoo.nn.objectives import IGNORE
from zoo.streams import numpy_rng


@dataclass(frozen=True, eq=False)
class Signal:
    """What makes a task a signal task (issue 14): one signal per run, fitted by a coordinate
    network. The task's ``x`` are coordinates shared by every run of the population (only
    ``task.index`` differs between them); its ``y`` are this signal's values there.

    Attributes:
        shape: the grid the signal lives on, ``(H, W)`` for images, ``(T,)`` for 1-D signals;
            row ``k`` of ``coordinates`` is grid point ``k`` in row-major (C) order.
        coordinates: ``(prod(shape), d)`` float32, every grid point (train and test).
        values: ``(prod(shape), C)`` float32 in [-1, 1], the signal at every grid point.
        columns: this run's row columns, e.g. ``{"image_index": 7, "label": 3}``.
    """

    shape: tuple[int, ...]
    coordinates: torch.Tensor
    values: torch.Tensor
    columns: dict[str, Any]


@dataclass(frozen=True, eq=False)
class Task:
    """The train and test data of one task config.

    ``eq=False``: tasks compare by identity (comparing tensors field by field is ambiguous),
    which is also what the per-process cache guarantees for equal configs.

    Attributes:
        name: the task's registry name (``cfg["name"]``).
        x_train: ``(N, *input_shape)`` float32, contiguous; or int64 token ids ``(N, T)`` in
            ``[0, n_classes)`` for a sequence task.
        y_train: ``(N,)`` int64 in ``[0, n_classes)``; ``(N, T)`` for a sequence task.
        x_test: ``(N_test, *input_shape)`` float32, contiguous.
        y_test: ``(N_test,)`` int64 in ``[0, n_classes)``.
        n_classes: number of classes.
        objective: the :data:`zoo.nn.objectives.OBJECTIVES` entry models of this task are
            trained and evaluated with.
        source: where the data came from, in words a card can quote (e.g. ``idx files in
            /usr/share/datasets/fashion-mnist``); empty where the task name says it.
        signal: for signal tasks (``objective="regression"``: ``y`` float32 ``(N, C)``, one
            signal per run, ``n_classes`` = C output channels), what the run fits; else None.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    objective: str = "classification"
    source: str = ""
    signal: Signal | None = None

    def __post_init__(self) -> None:
        check = _check_values if self.objective == "regression" else _check_split
        check(self.name, "train", self.x_train, self.y_train, self.n_classes)
        check(self.name, "test", self.x_test, self.y_test, self.n_classes)
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
    tokens = x.dtype == torch.int64
    if not (x.dtype == torch.float32 or tokens) or x.ndim < 2 or not x.is_contiguous():
        raise TaskError(
            f"{where}: x must be contiguous float32 (N, ...), or int64 token ids (N, T) for a "
            f"sequence task, got {x.dtype} {tuple(x.shape)}"
        )
    if tokens and (x.ndim != 2 or int(x.min()) < 0 or int(x.max()) >= n_classes):
        raise TaskError(
            f"{where}: token ids must be (N, T) in [0, n_classes={n_classes}) (inputs and outputs "
            f"share one vocabulary), got {tuple(x.shape)} in [{int(x.min())}, {int(x.max())}]"
        )
    if y.dtype != torch.int64 or y.ndim not in (1, 2) or len(y) != len(x):
        raise TaskError(
            f"{where}: y must be int64 ({len(x)},), or ({len(x)}, T) for sequences, got "
            f"{y.dtype} {tuple(y.shape)}"
        )
    if len(y) == 0:
        raise TaskError(f"{where}: no samples; check the split name and the n_* settings")
    scored = y[y != IGNORE]  # sequence positions that are not scored hold IGNORE
    if len(scored) == 0 or int(scored.min()) < 0 or int(scored.max()) >= n_classes:
        raise TaskError(
            f"{where}: labels span [{int(y.min())}, {int(y.max())}] but n_classes={n_classes}; "
            "labels must be integers in [0, n_classes)"
        )


def _check_values(name: str, split: str, x: torch.Tensor, y: torch.Tensor, channels: int) -> None:
    """Raise a TaskError unless ``x``/``y`` of one split of a regression (signal) task follow the
    contract: coordinates ``(N, d)`` and finite values ``(N, channels)``, float32."""
    where = f"{name}: {split} split"
    if x.dtype != torch.float32 or x.ndim != 2 or not x.is_contiguous():
        raise TaskError(f"{where}: x must be contiguous float32 (N, d), got {x.dtype} {x.shape}")
    if y.dtype != torch.float32 or y.shape != (len(x), channels):
        raise TaskError(
            f"{where}: y must be float32 ({len(x)}, {channels}), got {y.dtype} {tuple(y.shape)}"
        )
    if len(y) == 0 or not bool(torch.isfinite(y).all()):
        raise TaskError(f"{where}: no points, or non-finite values; check the signal's source")


def make_task(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    n_classes: int,
    source: str = "",
) -> Task:
    """Build a :class:`Task` from numpy arrays (float32 x, integer y), copying only if needed.

    Args:
        name: the task's registry name.
        x_train, y_train, x_test, y_test: the splits; x is cast to contiguous float32, y to int64.
        n_classes: number of classes.
        source: where the data came from (:attr:`Task.source`).

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
        source=source,
    )


def make_sequence_task(
    name: str,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    vocabulary: int,
    objective: str = "classification",
) -> Task:
    """A sequence :class:`Task` from integer arrays ``(x_train, y_train, x_test, y_test)``, each
    ``(N, T)``: token ids in ``[0, vocabulary)``, targets there or :data:`IGNORE`.

    Example:
        >>> x = np.array([[0, 1], [1, 0]])
        >>> make_sequence_task("demo", (x, x, x, x), 2).input_shape
        (2,)
    """
    x_train, y_train, x_test, y_test = (
        torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)) for a in splits
    )
    return Task(name, x_train, y_train, x_test, y_test, int(vocabulary), objective)


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
    return np.sort(numpy_rng(seed, stream).permutation(n_total)[:n]).astype(np.int64)


def subset(
    x: Any,
    y: Any,
    n: int | None,
    seed: int,
    *,
    stream: int = streams.SUBSET_TRAIN,
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


def config_int(cfg: dict, key: str, default: int | None, where: str, minimum: int = 0) -> Any:
    """``cfg[key]`` (or the default) as an int >= minimum; None passes through if the default is
    None (an optional count)."""
    value = cfg.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or null" if default is None else "")
        raise TaskError(f"{where}: task.{key} must be {allowed}, got {value!r}")
    return value


def config_fraction(cfg: dict, key: str, default: float, where: str, lo: float, hi: float) -> float:
    """``cfg[key]`` (or the default) as a float in ``[lo, hi]``."""
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise TaskError(f"{where}: task.{key} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)
