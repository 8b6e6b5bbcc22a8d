"""Signal tasks (issue 14): one signal per run, fitted by a coordinate network (an INR).

A run of a signal task fits one signal: ``task.index`` says which. Every run of a population
shares the coordinates (the task's ``x``) and has its own values (``y``), so runs that differ
only in ``task.index`` train together (``task.index`` is a per-model key of the recipe schema,
``x-zoo-per-model``). Values are scaled to [-1, 1]; the objective is ``regression`` (mean
squared error, PSNR).

**The coordinate convention** (what a consumer needs to render a row, see
:func:`coordinate_grid`): a signal on a grid of shape ``(n_1, …, n_d)`` has one coordinate
vector per grid point, ``u_i = -1 + 2 k_i / (n_i - 1)`` for index ``k_i`` on axis ``i`` (so
each axis spans [-1, 1], ends included), and grid points are listed in row-major order. For an
image ``(H, W)``: pixel ``(r, c)`` is input ``(u_r, u_c)`` = (row, column), row ``r * W + c`` of
the grid; the network's output channel ``ch`` there is ``2 v - 1`` for the pixel's intensity
``v`` in [0, 1] (8-bit pixels: ``v = p / 255``; scikit-learn's digits: ``v = p / 16``).

Two families:

- ``inr_image``: images of ``digits``, ``fashion_mnist`` (idx files) or ``hf`` (any Hugging
  Face image dataset or local folder). ``task.order`` (``dataset``, ``random`` or
  ``per_class``, seeded by ``task.order_seed``) lists the source's images; ``task.index`` k is
  the k-th image of that list, so the first ``count`` indices are a seeded choice of ``count``
  images (``per_class``: round robin over the classes, so the first ``k * n_classes`` hold ``k``
  of each class), and a larger count keeps the earlier images. Rows carry ``image_index`` (the
  image's row in the source split; with ``task.split: all``, train rows then test rows) and
  ``label``. ``task.holdout`` > 0 holds a seeded fraction of the pixels out as the test split
  (the same pixels for every image); with 0 the test split is the whole image again.
- ``inr_sinusoid``: ``f(t) = a sin(2 pi f t + phi)`` on ``t`` in [-1, 1], its coefficients drawn
  for each ``task.index`` (seeded by ``coef_seed``, stream ``SIGNAL_COEFFS``, key ``index``:
  frequency ``f`` and amplitude ``a`` uniform in their ranges, then phase ``phi`` uniform in
  [0, 2 pi)), which rows carry as ``signal_frequency``, ``signal_amplitude``, ``signal_phase``:
  regression targets for weight-space models. The grid has ``2 * points - 1`` points; the even
  ones (with both ends) are the training points, the odd ones (the midpoints) the test points.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import torch

from zoo import streams
from zoo.errors import TaskError
from zoo.naming import canonical_json
from zoo.streams import numpy_rng
from zoo.tasks.base import Signal, Task, config_fraction, config_int
from zoo.tasks.idx import FASHION_MNIST_PATH, _fashion_arrays

IMAGE_SOURCES = ("digits", "fashion_mnist", "hf")
ORDERS = ("dataset", "random", "per_class")
SPLITS = ("train", "test", "all")
HF_KEYS = ("config", "train_split", "test_split", "image_column", "label_column", "cache_dir")


def coordinate_grid(shape: tuple[int, ...]) -> torch.Tensor:
    """``(prod(shape), len(shape))`` float32 coordinates of a grid, row-major, each axis from -1
    to 1 with both ends included (an axis of length 1 sits at -1).

    Example:
        >>> coordinate_grid((2, 3)).tolist()
        [[-1.0, -1.0], [-1.0, 0.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 0.0], [1.0, 1.0]]
    """
    axes = [torch.linspace(-1.0, 1.0, n) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))


def _choice(cfg: dict, key: str, allowed: tuple[str, ...], default: str, where: str) -> str:
    value = cfg.get(key, default)
    if value not in allowed:
        raise TaskError(f"{where}: task.{key}={value!r} is not one of {list(allowed)}")
    return value


# --- image sources ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _source(key: str) -> tuple[np.ndarray, np.ndarray, float, str]:
    """``(images (N, C, H, W), labels (N,), peak, source)`` of one source split, cached per
    process: pixel intensity ``v = images / peak`` in [0, 1] (images are kept in their stored
    dtype); ``source`` says where they were read (``Task.source``)."""
    cfg = json.loads(key)
    source, split = cfg["source"], cfg["split"]
    if source == "digits":
        from sklearn.datasets import load_digits  # lazy: only this source needs scikit-learn

        if split == "test":
            raise TaskError(
                "inr_image: the digits source has one split of 1,797 images (no test split); "
                "use task.split: train (or all, the same images)"
            )
        data = load_digits()
        return data.images[:, None].astype(np.uint8), data.target.astype(np.int64), 16.0, ""
    if source == "fashion_mnist":  # the idx folder, or for the default path the Hub copy
        arrays, read = _fashion_arrays(cfg.get("path") or FASHION_MNIST_PATH, "inr_image")
        parts = ["train", "test"] if split == "all" else [split]
        images = np.concatenate([arrays[f"x_{s}"] for s in parts])
        labels = np.concatenate([arrays[f"y_{s}"] for s in parts]).astype(np.int64)
        peak = 255.0 if images.dtype == np.uint8 else 1.0
        return images[:, None], labels, peak, read
    return _hf_source(cfg)


def _hf_source(cfg: dict) -> tuple[np.ndarray, np.ndarray, float, str]:
    """Images of a Hugging Face dataset (Hub id or local folder) via :mod:`zoo.tasks.hf`."""
    from zoo.tasks.hf import load_hf

    if not cfg.get("path"):
        raise TaskError(
            "inr_image: task.source hf needs task.path: a Hub dataset id or a local folder of "
            "images (an imagefolder: one sub-folder per class)"
        )
    hf_cfg = {"name": "hf", "path": cfg["path"], **{k: cfg[k] for k in HF_KEYS if k in cfg}}
    task = load_hf(hf_cfg)
    if task.x_train.ndim != 4:
        raise TaskError(
            f"inr_image: {cfg['path']!r} gives inputs of shape {tuple(task.x_train.shape[1:])}, "
            "not images (C, H, W); set task.image_column to the image column"
        )
    parts = {"train": [task.x_train], "test": [task.x_test], "all": [task.x_train, task.x_test]}
    labels = {"train": [task.y_train], "test": [task.y_test], "all": [task.y_train, task.y_test]}
    split = cfg["split"]
    images, y = torch.cat(parts[split]).numpy(), torch.cat(labels[split]).numpy()
    return images, y, 1.0, task.source


@functools.lru_cache(maxsize=4)
def _order(key: str, order: str, seed: int) -> np.ndarray:
    """Position k -> row of the source: the list ``task.index`` walks."""
    labels = _source(key)[1]
    n = len(labels)
    if order == "dataset":
        return np.arange(n)
    perm = numpy_rng(seed, streams.SIGNAL_ORDER).permutation(n)
    if order == "random":
        return perm
    # per_class: each row's rank among its class in the seeded permutation; rank-major, then by
    # class, so every prefix of k * n_classes positions holds k images of each class
    rank = np.empty(n, dtype=np.int64)
    for c in np.unique(labels):
        members = perm[labels[perm] == c]
        rank[members] = np.arange(len(members))
    return np.lexsort((labels, rank))


def image_values(image: np.ndarray, peak: float) -> torch.Tensor:
    """``(C, H, W)`` stored pixels -> ``(H*W, C)`` float32 values ``2 v - 1`` with
    ``v = pixel / peak`` (in float32), row-major."""
    v = image.astype(np.float32) / np.float32(peak)
    return torch.from_numpy(np.ascontiguousarray((2.0 * v - 1.0).reshape(len(v), -1).T))


def _holdout(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted train and test point indices: a seeded ``fraction`` of the ``n`` points held out."""
    n_test = round(fraction * n)
    if fraction > 0 and not 0 < n_test < n:
        raise TaskError(
            f"inr_image: task.holdout={fraction} holds out {n_test} of {n} pixels; both splits "
            "need at least one (use e.g. 0.1, or 0 to test on the whole image)"
        )
    perm = numpy_rng(seed, streams.PIXEL_HOLDOUT).permutation(n)
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return torch.from_numpy(train), torch.from_numpy(test)


def load_inr_image(cfg: dict) -> Task:
    """One image of a source, as coordinates -> values (see the module docstring).

    Args:
        cfg: task config; keys ``source`` (digits), ``path`` (null: the source's default),
            ``split`` (train), ``order`` (per_class), ``order_seed`` (0), ``index`` (0),
            ``holdout`` (0.0), and for ``hf`` its column/split keys.

    Returns:
        A regression Task: x ``(H*W, 2)``, y ``(H*W, C)`` in [-1, 1], with its :class:`Signal`.
    """
    where = "inr_image"
    source = _choice(cfg, "source", IMAGE_SOURCES, "digits", where)
    split = _choice(cfg, "split", SPLITS, "train", where)
    order = _choice(cfg, "order", ORDERS, "per_class", where)
    seed = config_int(cfg, "order_seed", 0, where)
    index = config_int(cfg, "index", 0, where)
    holdout = config_fraction(cfg, "holdout", 0.0, where, 0.0, 0.99)
    key = canonical_json(
        {"source": source, "path": cfg.get("path"), "split": split}
        | ({k: cfg[k] for k in HF_KEYS if k in cfg} if source == "hf" else {})
    )
    images, labels, peak, read = _source(key)
    rows = _order(key, order, seed)
    if index >= len(rows):
        raise TaskError(
            f"{where}: task.index={index} but the {source} source ({split}) has {len(rows)} "
            f"images; use indices 0..{len(rows) - 1} (grid: {{task.index: {{range: [0, n]}}}})"
        )
    row = int(rows[index])
    shape = tuple(int(s) for s in images.shape[2:])
    coords, values = coordinate_grid(shape), image_values(images[row], peak)
    columns = {"image_index": row, "label": int(labels[row])}
    signal = Signal(shape, coords, values, columns)
    if holdout == 0:  # the test split is the whole image again
        channels = values.shape[1]
        return Task(
            where, coords, values, coords, values, channels, "regression", read, signal=signal
        )
    train, test = _holdout(len(coords), holdout, seed)
    return Task(
        where,
        coords[train].contiguous(),
        values[train].contiguous(),
        coords[test].contiguous(),
        values[test].contiguous(),
        values.shape[1],
        "regression",
        read,
        signal=signal,
    )


# --- 1-D signals ------------------------------------------------------------------------------


def _range(cfg: dict, key: str, default: list[float], where: str) -> tuple[float, float]:
    value = cfg.get(key, default)
    ok = isinstance(value, list | tuple) and len(value) == 2
    if not ok or not all(isinstance(v, int | float) for v in value) or value[0] > value[1]:
        raise TaskError(f"{where}: task.{key} must be [low, high] with low <= high, got {value!r}")
    return float(value[0]), float(value[1])


def sinusoid_coefficients(cfg: dict) -> dict[str, float]:
    """The coefficients of ``inr_sinusoid`` signal ``cfg["index"]``: frequency, amplitude,
    phase, drawn in that order with ``numpy_rng(coef_seed, SIGNAL_COEFFS, index)``."""
    where = "inr_sinusoid"
    freq = _range(cfg, "frequency", [0.5, 4.0], where)
    amp = _range(cfg, "amplitude", [0.5, 1.0], where)
    if amp[0] <= 0 or amp[1] > 1:
        raise TaskError(
            f"{where}: task.amplitude {list(amp)} must lie in (0, 1]: values in [-1, 1]"
        )
    index = config_int(cfg, "index", 0, where)
    rng = numpy_rng(config_int(cfg, "coef_seed", 0, where), streams.SIGNAL_COEFFS, index)
    frequency, amplitude = float(rng.uniform(*freq)), float(rng.uniform(*amp))
    phase = float(rng.uniform(0.0, 2.0 * math.pi))
    return {"frequency": frequency, "amplitude": amplitude, "phase": phase}


def load_inr_sinusoid(cfg: dict) -> Task:
    """One sinusoid ``a sin(2 pi f t + phi)`` on [-1, 1] (see the module docstring).

    Args:
        cfg: task config; keys ``index`` (0), ``coef_seed`` (0), ``points`` (64 training
            points), ``frequency`` ([0.5, 4.0]), ``amplitude`` ([0.5, 1.0]).

    Returns:
        A regression Task: x ``(points, 1)``, test x the ``points - 1`` midpoints.
    """
    points = config_int(cfg, "points", 64, "inr_sinusoid", minimum=2)
    coef = sinusoid_coefficients(cfg)
    shape = (2 * points - 1,)
    coords = coordinate_grid(shape)  # (2 points - 1, 1)
    t = coords[:, 0].double()
    wave = coef["amplitude"] * torch.sin(2 * math.pi * coef["frequency"] * t + coef["phase"])
    values = wave.float()[:, None]
    columns = {f"signal_{k}": v for k, v in coef.items()}
    signal = Signal(shape, coords, values, columns)
    train, test = slice(0, None, 2), slice(1, None, 2)
    return Task(
        "inr_sinusoid",
        coords[train].contiguous(),
        values[train].contiguous(),
        coords[test].contiguous(),
        values[test].contiguous(),
        1,
        "regression",
        signal=signal,
    )


# --- the card's words -----------------------------------------------------------------------------


def describe_image(cfg: dict) -> str:
    """The data pipeline of ``inr_image`` in words a consumer can reimplement (the card)."""
    source = {
        "digits": "scikit-learn's 8×8 digits (`load_digits()`, 1,797 images; pixel / 16)",
        "fashion_mnist": "Fashion-MNIST's idx files (60,000 train then 10,000 test images, "
        "28×28; pixel / 255)",
        "hf": f"the Hugging Face dataset `{cfg.get('path')}` (8-bit pixels / 255)",
    }[cfg.get("source", "digits")]
    order = {
        "dataset": "in the source's order",
        "random": "in the order `rng.permutation(N)`",
        "per_class": "per class in the order `rng.permutation(N)`, then round robin over the "
        "classes (position k holds the (k // C)-th image of class k % C while every class has "
        "one; a class that runs out drops from the round)",
    }[cfg.get("order", "per_class")]
    holdout = cfg.get("holdout", 0.0)
    test = (
        f"the task's test set holds round({holdout} × H·W) pixels, the first of "
        "`numpy.random.default_rng(numpy.random.SeedSequence([order_seed, 62])).permutation(H·W)`"
        ", its training set the rest (both in grid order)"
        if holdout
        else "the task's test set is the whole image again (test_loss = train_loss)"
    )
    return (
        f"One image per run, from {source}, split `{cfg.get('split', 'train')}`: `task.index` "
        f"k is the k-th image {order}, with `rng = numpy.random.default_rng(numpy.random."
        f"SeedSequence([order_seed, 60]))`. The network maps each pixel's coordinates (row, "
        "column), each `-1 + 2i/(n-1)` in row-major order, to its intensity v as `2v - 1` in "
        f"[-1, 1]; {test}."
    )


def describe_sinusoid(cfg: dict) -> str:
    """The data pipeline of ``inr_sinusoid`` in words a consumer can reimplement (the card)."""
    points = cfg.get("points", 64)
    freq, amp = cfg.get("frequency", [0.5, 4.0]), cfg.get("amplitude", [0.5, 1.0])
    return (
        "One sinusoid `a sin(2π f t + φ)` per run, on t in [-1, 1]: with `rng = numpy.random."
        "default_rng(numpy.random.SeedSequence([coef_seed, 61, index]))`, f = `rng.uniform("
        f"*{freq})`, a = `rng.uniform(*{amp})`, then φ = `rng.uniform(0, 2π)` (the row's "
        "`signal_*` columns). The grid "
        f"`linspace(-1, 1, {2 * points - 1})`: its even points (both ends included) are the "
        "task's training set, its odd points (the midpoints) its test set."
    )
