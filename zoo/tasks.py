"""Tasks: the data every model of a population is trained and evaluated on.

A :class:`Task` holds the train and test tensors of one task config. Loaders are registered in
:data:`TASKS` by name; :func:`load_task` dispatches on ``cfg["name"]`` and caches the result per
process, so a worker reads the data once and all models of a population share the same tensors
(callers must not modify them in place).

Image tasks give ``x`` as ``(N, C, H, W)`` float32 scaled to [0, 1]; vector tasks give
``(N, D)``. Labels are int64 in ``[0, n_classes)``. All randomness comes from
``np.random.default_rng(np.random.SeedSequence([seed, STREAM]))`` with one fixed stream number
per use, so the same config gives bitwise-identical tensors on any machine.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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

FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_HINT = (
    "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
    "or set task.path to a folder of idx files"
)
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# idx dtype code -> numpy dtype (multi-byte types are big-endian in the file).
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

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
# idx files (MNIST, Fashion-MNIST)


def _read_bytes(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped if the file starts with the gzip magic number."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TaskError(f"{path}: cannot read idx file ({exc}); check task.path") from exc
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise TaskError(
            f"{path}: truncated or corrupt gzip file ({exc}); re-download or re-install it"
        ) from exc


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (the MNIST format), plain or gzipped.

    Format: two zero bytes, a dtype code (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int,
    0x0D float, 0x0E double), the number of dimensions, then each dimension as a big-endian
    uint32, then the data in C order, big-endian.

    Args:
        path: the file; gzip is detected from its content, not its name.

    Returns:
        A writable array of the file's shape in native byte order.

    Raises:
        TaskError: naming the file, if it is unreadable, malformed or truncated.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise TaskError(
            f"{path}: not an idx file (magic number {raw[:4].hex() or 'missing'}; expected "
            f"00 00, a dtype code in {sorted(hex(c) for c in IDX_DTYPES)}, the rank)"
        )
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise TaskError(f"{path}: truncated idx file: the header needs {header} bytes")
    dims = struct.unpack(f">{raw[3]}I", raw[4:header])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        raise TaskError(
            f"{path}: truncated or malformed idx file: the header says shape {dims} of "
            f"{dtype.name} ({expected} bytes) but the file holds {len(raw)} bytes; "
            "re-download or re-install it"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # a native, writable copy


def find_idx_files(folder: Path, where: str) -> dict[str, Path]:
    """The four idx files of an MNIST-style folder, each plain or ``.gz``.

    Args:
        folder: the folder to look in.
        where: task name for error messages.

    Returns:
        ``{"x_train": path, "y_train": path, "x_test": path, "y_test": path}``.
    """
    if not folder.is_dir():
        raise TaskError(f"{where}: no folder {folder}; {FASHION_MNIST_HINT}")
    found, missing = {}, []
    for key, stem in IDX_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        hits = [c for c in candidates if c.is_file()]
        if hits:
            found[key] = hits[0]
        else:
            missing.append(f"{stem}[.gz]")
    if missing:
        raise TaskError(
            f"{where}: no idx files in {folder} (looked for {', '.join(missing)}); "
            f"{FASHION_MNIST_HINT}"
        )
    return found


def _idx_split(images: np.ndarray, labels: np.ndarray, files: list[Path]) -> None:
    """Raise a TaskError unless idx images ``(N, H, W)`` and labels ``(N,)`` belong together."""
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise TaskError(
            f"{files[0]} / {files[1]}: expected images (N, H, W) and labels (N,), got "
            f"{images.shape} and {labels.shape}; the files do not belong together"
        )
    if len(labels) == 0:
        raise TaskError(f"{files[1]}: holds no samples; re-download or re-install it")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise TaskError(f"{files[1]}: labels must be non-negative integers, got {labels.dtype}")


def _idx_pixels(images: np.ndarray) -> np.ndarray:
    """idx images ``(N, H, W)`` -> float32 ``(N, 1, H, W)``; ubyte pixels are scaled by 1/255."""
    x = images.astype(np.float32)
    if images.dtype == np.uint8:
        x /= np.float32(255.0)
    return x[:, None, :, :]


def load_fashion_mnist(cfg: dict) -> Task:
    """Fashion-MNIST (or any folder of MNIST-format idx files), with optional seeded subsets.

    Args:
        cfg: task config; keys ``path`` (``/usr/share/datasets/fashion-mnist``, where Debian's
            dataset-fashion-mnist installs it), ``n_train`` / ``n_test`` (None = all),
            ``split_seed`` (0).

    Returns:
        A Task with x ``(N, 1, 28, 28)`` in [0, 1]; n_classes = max label + 1 over both splits.
    """
    where = cfg.get("name", "fashion_mnist")
    folder = Path(cfg.get("path") or FASHION_MNIST_PATH)
    split_seed = _int(cfg, "split_seed", 0, where)
    n_train = _int(cfg, "n_train", None, where, minimum=1)
    n_test = _int(cfg, "n_test", None, where, minimum=1)
    files = find_idx_files(folder, where)
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        _idx_split(
            arrays[f"x_{split}"], arrays[f"y_{split}"], [files[f"x_{split}"], files[f"y_{split}"]]
        )
    # n_classes from the full label sets, so a small subset missing a class does not shrink it.
    n_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    # Subset the uint8 arrays before converting: 4x less memory than subsetting floats.
    x_train, y_train = subset(
        arrays["x_train"], arrays["y_train"], n_train, split_seed, where=f"{where}: task.n_train"
    )
    x_test, y_test = subset(
        arrays["x_test"],
        arrays["y_test"],
        n_test,
        split_seed,
        stream=STREAM_SUBSET_TEST,
        where=f"{where}: task.n_test",
    )
    return make_task(where, _idx_pixels(x_train), y_train, _idx_pixels(x_test), y_test, n_classes)


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
# hf: any Hugging Face dataset


def _hf_split(cfg: dict, split: str, columns: dict[str, str]) -> Any:
    """One split (``"train"`` or ``"test"``) of ``cfg["path"]`` via ``datasets.load_dataset``,
    checked to be non-empty and to hold the configured columns."""
    import datasets  # lazy: importing datasets is slow and only this task needs it

    path, config, name = cfg["path"], cfg.get("config"), cfg.get(f"{split}_split", split)
    try:
        ds = datasets.load_dataset(path, name=config, split=name, cache_dir=cfg.get("cache_dir"))
    except Exception as exc:  # third-party boundary: any failure becomes one clear TaskError
        raise TaskError(
            f"hf: cannot load split {name!r} of {path!r} (config={config!r}): "
            f"{type(exc).__name__}: {exc}; check task.path (a Hub id or a local folder of data "
            f"files), task.config and task.{split}_split, and that the Hub is reachable or the "
            "dataset is already cached"
        ) from exc
    if len(ds) == 0:
        raise TaskError(f"hf: split {name!r} of {path!r} is empty; set task.{split}_split")
    for key, column in columns.items():
        if column not in ds.column_names:
            raise TaskError(
                f"hf: column {column!r} (task.{key}) not in split {name!r} of {path!r}; "
                f"available columns: {ds.column_names}; set task.{key} to one of them"
            )
    return ds


def _hf_rows(cfg: dict, split: str, n_rows: int) -> np.ndarray:
    """Rows of one split to keep: all, or a seeded subset of ``task.n_<split>`` rows."""
    n = _int(cfg, f"n_{split}", None, "hf", minimum=1)
    seed = _int(cfg, "split_seed", 0, "hf")
    stream = STREAM_SUBSET_TRAIN if split == "train" else STREAM_SUBSET_TEST
    return subset_indices(n_rows, n, seed, stream, f"hf: task.n_{split}")


def _hf_column(ds: Any, column: str, rows: np.ndarray | None = None) -> np.ndarray:
    """One column as a numpy array (decoded images stack to one array when shapes agree)."""
    if rows is not None:
        ds = ds.select(rows)
    return ds.select_columns([column]).with_format("numpy")[:][column]


def _hf_labels(ds: Any, column: str, split: str) -> np.ndarray:
    """The label column as int64, checked to be one non-negative integer per row."""
    y = np.asarray(_hf_column(ds, column))
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise TaskError(
            f"hf: label column {column!r} of split {split!r} must hold one integer per row, got "
            f"{y.dtype} {y.shape}; use a ClassLabel column (Dataset.class_encode_column) or set "
            "task.label_column"
        )
    if y.min() < 0:
        raise TaskError(
            f"hf: label column {column!r} of split {split!r} holds negative labels (e.g. -1 for "
            "unlabelled rows); set task.test_split / task.train_split to a labelled split"
        )
    return y.astype(np.int64)


def _hf_n_classes(ds: Any, column: str, y_train: np.ndarray, y_test: np.ndarray) -> int:
    """``ClassLabel.num_classes`` of the label feature if it has one, else max label + 1."""
    from datasets import ClassLabel

    feature = ds.features.get(column)
    if isinstance(feature, ClassLabel):
        return int(feature.num_classes)
    return int(max(y_train.max(), y_test.max())) + 1


def _stack_rows(raw: np.ndarray, column: str) -> np.ndarray:
    """Stack rows that the formatter left as an object array (ragged or mixed rows)."""
    if raw.dtype != object:
        return raw
    try:
        return np.stack([np.asarray(r) for r in raw])
    except ValueError as exc:
        shapes = sorted({np.shape(r) for r in raw[:1000]})[:3]
        raise TaskError(
            f"hf: rows of column {column!r} have different shapes (e.g. {shapes}); resize or "
            "pad them to one shape, or set task.image_column"
        ) from exc


def _pixels_to_float32(a: np.ndarray, column: str) -> np.ndarray:
    """Pixels or features -> float32: 8-bit integers scaled by 1/255, floats kept as they are.

    The numpy formatter widens every integer column to int64, so 8-bit data is recognised by
    its range 0..255 rather than by its dtype.
    """
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32)
    if not np.issubdtype(a.dtype, np.integer):
        raise TaskError(
            f"hf: column {column!r} holds {a.dtype} values; expected images, or numbers "
            "(nested lists/arrays); set task.image_column"
        )
    if a.size and (a.min() < 0 or a.max() > 255):
        raise TaskError(
            f"hf: integer column {column!r} spans [{a.min()}, {a.max()}]; integers must be 8-bit "
            "pixels in 0..255; store other data as floats already scaled"
        )
    return a.astype(np.float32) / np.float32(255.0)


def _to_model_layout(a: np.ndarray, column: str) -> np.ndarray:
    """``(N, D)`` vectors stay; ``(N, H, W)`` -> ``(N, 1, H, W)``; ``(N, H, W, C)`` -> NCHW.

    A 3-D sample whose last axis has more than 4 entries but whose first has at most 4 is taken
    to be channel-first already.
    """
    if a.ndim == 2:
        return a
    if a.ndim == 3:
        return a[:, None]
    if a.ndim == 4 and a.shape[3] <= 4:
        return a.transpose(0, 3, 1, 2)
    if a.ndim == 4 and a.shape[1] <= 4:
        return a
    raise TaskError(
        f"hf: column {column!r} gives rows of shape {a.shape[1:]}; expected a vector (D,), an "
        "image (H, W), (H, W, C) or (C, H, W) with C <= 4; set task.image_column"
    )


def _hf_inputs(ds: Any, column: str, rows: np.ndarray) -> np.ndarray:
    """The selected rows of the input column as float32 in the model's layout."""
    raw = _stack_rows(np.asarray(_hf_column(ds, column, rows)), column)
    return np.ascontiguousarray(_to_model_layout(_pixels_to_float32(raw, column), column))


def load_hf(cfg: dict) -> Task:
    """Any Hugging Face dataset (Hub id or local folder/files) via ``datasets.load_dataset``.

    Args:
        cfg: task config; keys ``path`` (required), ``config`` (None), ``train_split``
            ("train"), ``test_split`` ("test"), ``image_column`` ("image"), ``label_column``
            ("label"), ``n_train`` / ``n_test`` (None = all), ``split_seed`` (0),
            ``cache_dir`` (None = the datasets default cache).

    Returns:
        A Task; images as ``(N, C, H, W)``, vectors as ``(N, D)``, float32 (8-bit data scaled
        to [0, 1]); n_classes from the label's ClassLabel, else max label + 1 over both splits.
    """
    if not cfg.get("path"):
        raise TaskError(
            "hf: task.path is required: a Hub dataset id (e.g. 'zalando-datasets/fashion_mnist') "
            "or a local folder of data files; set task.path"
        )
    # Check the settings before the (possibly slow) load rather than after it.
    _int(cfg, "n_train", None, "hf", minimum=1)
    _int(cfg, "n_test", None, "hf", minimum=1)
    _int(cfg, "split_seed", 0, "hf")
    columns = {
        "image_column": cfg.get("image_column", "image"),
        "label_column": cfg.get("label_column", "label"),
    }
    label = columns["label_column"]
    splits = {s: _hf_split(cfg, s, columns) for s in ("train", "test")}
    labels = {s: _hf_labels(ds, label, cfg.get(f"{s}_split", s)) for s, ds in splits.items()}
    # n_classes from the full label sets, so a small subset missing a class does not shrink it.
    n_classes = _hf_n_classes(splits["train"], label, labels["train"], labels["test"])
    out = []
    for s, ds in splits.items():
        rows = _hf_rows(cfg, s, len(ds))
        out += [_hf_inputs(ds, columns["image_column"], rows), labels[s][rows]]
    return make_task("hf", *out, n_classes=n_classes)


# ---------------------------------------------------------------------------------------------
# Registry and cached dispatch

TASKS: dict[str, Callable[[dict], Task]] = {
    "digits": load_digits_task,
    "fashion_mnist": load_fashion_mnist,
    "teacher_student": load_teacher_student,
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
