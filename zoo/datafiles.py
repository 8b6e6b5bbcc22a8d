"""Data read from files and external datasets: idx files (MNIST, Fashion-MNIST) and Hugging Face.

The loaders here (:func:`load_fashion_mnist`, :func:`load_hf`) are registered in
:data:`zoo.tasks.TASKS` and follow the same :class:`~zoo.tasks.Task` contract and seeded-subset
rules as the loaders that generate or ship their data (see :mod:`zoo.tasks`).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TaskError
from .tasks import (
    STREAM_SUBSET_TEST,
    STREAM_SUBSET_TRAIN,
    Task,
    _int,
    make_task,
    subset,
    subset_indices,
)

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
