"""idx files (the MNIST format): Fashion-MNIST, MNIST, or any folder of such files.

The default folder is Debian's ``dataset-fashion-mnist`` package; ``task.path`` names any other.
Where the default folder does not exist (macOS, pip-only installs, clusters without root), the
same Fashion-MNIST arrays are read from the Hugging Face Hub, checked byte for byte against the
idx files (:mod:`zoo.tasks.mirror`); the local folder always comes first.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from zoo import streams
from zoo.errors import TaskError
from zoo.tasks.base import Task, config_int, make_task, subset
from zoo.tasks.mirror import FASHION_MNIST, load_hub_copy

FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"  # the recipes' default task.path
# Where this machine looks for the default path's files (a test points it at an empty folder).
LOCAL_DEFAULT = Path(FASHION_MNIST_PATH)
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
        A Task with x ``(N, 1, 28, 28)`` in [0, 1]; n_classes = max label + 1 over both splits;
        ``source`` says where the arrays came from. With the default path and no such folder,
        the arrays come from the Hub copy (:data:`zoo.tasks.mirror.FASHION_MNIST`), equal to
        the idx files' byte for byte; a ``task.path`` of your own must exist.
    """
    where = cfg.get("name", "fashion_mnist")
    split_seed = config_int(cfg, "split_seed", 0, where)
    n_train = config_int(cfg, "n_train", None, where, minimum=1)
    n_test = config_int(cfg, "n_test", None, where, minimum=1)
    arrays, source = _fashion_arrays(cfg.get("path") or FASHION_MNIST_PATH, where)
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
        stream=streams.SUBSET_TEST,
        where=f"{where}: task.n_test",
    )
    return make_task(
        where,
        _idx_pixels(x_train),
        y_train,
        _idx_pixels(x_test),
        y_test,
        n_classes,
        source=source,
    )


def _fashion_arrays(path: str, where: str) -> tuple[dict[str, np.ndarray], str]:
    """The four uint8 arrays and where they came from: the idx folder ``path``; for the default
    path without a local folder, the Hub copy."""
    default = path == FASHION_MNIST_PATH
    folder = LOCAL_DEFAULT if default else Path(path)
    if default and not folder.is_dir():
        hint = f"no folder {folder}: {FASHION_MNIST_HINT}"
        return load_hub_copy(FASHION_MNIST, where, hint), (
            f"{FASHION_MNIST.describe()} (no local {folder}; its arrays equal the idx files' "
            "by sha256)"
        )
    files = find_idx_files(folder, where)
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        _idx_split(
            arrays[f"x_{split}"], arrays[f"y_{split}"], [files[f"x_{split}"], files[f"y_{split}"]]
        )
    return arrays, f"idx files in {folder}"


def describe(cfg: dict) -> str:
    """The data pipeline in words a consumer can reimplement (the dataset card quotes it)."""
    subsets = [
        f"`n_{split}` = {cfg[f'n_{split}']} rows of the {split} images, those at "
        f"`sorted(rng.permutation(N)[:n])` with `rng = numpy.random.default_rng("
        f"numpy.random.SeedSequence([split_seed, {stream}]))`, in their order"
        for split, stream in (("train", streams.SUBSET_TRAIN), ("test", streams.SUBSET_TEST))
        if cfg.get(f"n_{split}")
    ]
    return (
        "Fashion-MNIST in its idx files (60,000 training and 10,000 test images, 28×28, 10 "
        "classes; the order of the files): pixels divided by 255 into [0, 1], shape (1, 28, 28), "
        "float32. " + ("Subsets: " + "; ".join(subsets) + "." if subsets else "All images.")
    )
