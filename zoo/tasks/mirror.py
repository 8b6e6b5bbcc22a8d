"""Public data sets read from their Hugging Face Hub copy when no local files exist, checked
byte for byte against the files they copy.

Fashion-MNIST's recipes name Debian's idx folder (``/usr/share/datasets/fashion-mnist``, part of
every run id). A pip-only user on macOS or a cluster without root has no such folder, so the
loader reads the same 70,000 images and labels from the Hub (issue 13, item 10): the dataset
:data:`FASHION_MNIST`, whose parquet files hold each image as a PNG (lossless) and each label as
a class index, in the idx files' order. The decoded uint8 arrays must have the sha256 of the idx
files' arrays, so either source gives the same tensors, bit for bit, or the load stops and says
why (e.g. the Hub copy changed: pin :attr:`HubCopy.revision`).

How the hashes were checked: they are the sha256 of the arrays :func:`zoo.tasks.idx.read_idx`
reads from Debian's ``dataset-fashion-mnist`` (0.0~git20200605); the first 100 training labels
shown by the Hub's viewer for ``zalando-datasets/fashion_mnist`` equal the idx file's; and
``tests/test_mirror.py`` serves a Hub-format copy built from the idx files (PNG + ClassLabel, as
the Hub stores it) through the fake Hub and gets identical tensors.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import numpy as np

from zoo.errors import TaskError

SPLITS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}


@dataclass(frozen=True)
class HubCopy:
    """A Hub dataset that copies a set of local files: where it is and what it must decode to.

    Attributes:
        repo_id: the Hub dataset id (``datasets.load_dataset`` reads it).
        revision: a branch, tag or commit to pin; ``None``: the default branch (the hashes
            below still guarantee the bytes).
        sha256: ``x_train``/``y_train``/``x_test``/``y_test`` -> sha256 of the uint8 array's
            bytes (C order), as the local files give it.
        image_column, label_column: the columns of the Hub copy.
    """

    repo_id: str
    revision: str | None
    sha256: dict[str, str] = field(default_factory=dict)
    image_column: str = "image"
    label_column: str = "label"

    def describe(self) -> str:
        at = f" at revision {self.revision}" if self.revision else ""
        return f"the Hugging Face Hub dataset {self.repo_id}{at}"


FASHION_MNIST = HubCopy(
    repo_id="zalando-datasets/fashion_mnist",
    revision=None,
    sha256={
        "x_train": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "y_train": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "x_test": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "y_test": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    },
)


def load_hub_copy(copy: HubCopy, where: str, hint: str) -> dict[str, np.ndarray]:
    """The four uint8 arrays of ``copy`` (``x_train`` ``(N, H, W)``, ``y_train`` ``(N,)``, …),
    checked against their sha256; read once per process (the arrays are read-only).

    Args:
        copy: the Hub dataset and its hashes.
        where: the task name, for error messages.
        hint: what else the user can do (e.g. install the local files), for error messages.
    Raises:
        TaskError: the Hub cannot be read (naming the error and ``hint``), or the copy does not
            decode to the expected bytes.
    """
    return _cached(
        copy.repo_id,
        copy.revision,
        copy.image_column,
        copy.label_column,
        tuple(sorted(copy.sha256.items())),
        where,
        hint,
    )


@functools.lru_cache(maxsize=2)
def _cached(repo_id, revision, image_column, label_column, hashes, where, hint):
    copy = HubCopy(repo_id, revision, dict(hashes), image_column, label_column)
    arrays = {}
    for split, (x_key, y_key) in SPLITS.items():
        ds = _read_split(copy, split, where, hint)
        arrays[x_key] = _images(ds, copy, split, where)
        arrays[y_key] = _labels(ds, copy, split, where)
    for key, array in arrays.items():
        _check_hash(copy, key, array, where, hint)
        array.setflags(write=False)  # shared by every task of this process
    return arrays


def _read_split(copy: HubCopy, split: str, where: str, hint: str):
    import datasets  # lazy: only a machine without the local files needs it

    try:
        return datasets.load_dataset(copy.repo_id, split=split, revision=copy.revision)
    except Exception as exc:  # third-party boundary: any failure becomes one clear TaskError
        raise TaskError(
            f"{where}: no local files, and reading split {split!r} of {copy.describe()} failed "
            f"({type(exc).__name__}: {' '.join(str(exc).split())}); {hint}, or check that the "
            "Hub is reachable (the first read downloads about 30 MB, later reads use the cache)"
        ) from exc


def _images(ds, copy: HubCopy, split: str, where: str) -> np.ndarray:
    """The image column decoded to one ``(N, H, W)`` uint8 array."""
    images = ds.select_columns([copy.image_column]).with_format("numpy")[:][copy.image_column]
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise TaskError(
            f"{where}: {copy.describe()} split {split!r} decodes to images of {images.dtype} "
            f"{images.shape[1:]}, not 8-bit grayscale (H, W); it is not the expected copy"
        )
    return np.ascontiguousarray(images)


def _labels(ds, copy: HubCopy, split: str, where: str) -> np.ndarray:
    """The label column as uint8, the idx files' label type."""
    labels = np.asarray(ds.with_format("numpy")[copy.label_column])
    if labels.ndim != 1 or labels.min() < 0 or labels.max() > 255:
        raise TaskError(
            f"{where}: {copy.describe()} split {split!r} has labels of shape {labels.shape} in "
            f"[{labels.min()}, {labels.max()}], not one class index in 0..255 per row"
        )
    return labels.astype(np.uint8)


def _check_hash(copy: HubCopy, key: str, array: np.ndarray, where: str, hint: str) -> None:
    got = hashlib.sha256(array.tobytes()).hexdigest()
    want = copy.sha256.get(key)
    if want is not None and got != want:
        raise TaskError(
            f"{where}: {copy.describe()} gives {key} {array.shape} with sha256 {got[:16]}…, not "
            f"{want[:16]}… of the local files it copies, so runs would not match runs on the "
            f"local files; {hint}, or pin a revision of {copy.repo_id} that matches"
        )
