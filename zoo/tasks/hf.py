"""Any Hugging Face dataset (a Hub id or a local folder of data files) via ``datasets``."""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo import streams
from zoo.errors import TaskError
from zoo.tasks.base import Task, config_int, make_task, subset_indices


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
    n = config_int(cfg, f"n_{split}", None, "hf", minimum=1)
    seed = config_int(cfg, "split_seed", 0, "hf")
    stream = streams.SUBSET_TRAIN if split == "train" else streams.SUBSET_TEST
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
    config_int(cfg, "n_train", None, "hf", minimum=1)
    config_int(cfg, "n_test", None, "hf", minimum=1)
    config_int(cfg, "split_seed", 0, "hf")
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
    config = f" (config {cfg['config']})" if cfg.get("config") else ""
    return make_task(
        "hf", *out, n_classes=n_classes, source=f"the Hugging Face dataset {cfg['path']}{config}"
    )


def describe(cfg: dict) -> str:
    """The data pipeline in words a consumer can reimplement (the dataset card quotes it)."""
    return (
        f"`datasets.load_dataset({cfg.get('path')!r}, {cfg.get('config')!r})`, splits "
        f"{cfg.get('train_split', 'train')!r} (training) and {cfg.get('test_split', 'test')!r} "
        f"(test), input column {cfg.get('image_column', 'image')!r} and label column "
        f"{cfg.get('label_column', 'label')!r}: 8-bit values divided by 255, other numbers kept, "
        "images as (C, H, W). A subset `n_train` / `n_test` keeps the rows at `sorted("
        "rng.permutation(N)[:n])`, `rng = numpy.random.default_rng(numpy.random.SeedSequence("
        f"[split_seed, {streams.SUBSET_TRAIN}]))` (training) or stream {streams.SUBSET_TEST} "
        "(test)."
    )
