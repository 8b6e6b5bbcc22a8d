"""Tests of zoo.tasks: the loaders, the idx parser, the registry and its per-process cache."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.errors import TaskError
from zoo.tasks import (
    TASKS,
    Task,
    load_task,
    read_idx,
    subset,
)

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write ``array`` (uint8) as an idx file: magic 00 00 08 <rank>, big-endian dims, data."""
    assert array.dtype == np.uint8
    payload = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    payload += struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def fake_idx_folder(folder: Path, n_train: int = 30, n_test: int = 12) -> dict[str, np.ndarray]:
    """A folder of tiny MNIST-format files (train gzipped, test plain); returns the arrays."""
    gen = np.random.default_rng(7)
    arrays = {
        "train-images-idx3-ubyte": gen.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": gen.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        gz = stem.startswith("train")
        write_idx(folder / (stem + (".gz" if gz else "")), array, gz=gz)
    return arrays


def assert_task_contract(task: Task) -> None:
    """The invariants every loader promises."""
    for x, y in ((task.x_train, task.y_train), (task.x_test, task.y_test)):
        assert x.dtype == torch.float32 and x.is_contiguous()
        assert y.dtype == torch.int64 and y.shape == (len(x),)
        assert int(y.min()) >= 0 and int(y.max()) < task.n_classes
    assert task.input_shape == tuple(task.x_train.shape[1:]) == tuple(task.x_test.shape[1:])


def assert_same_task(a: Task, b: Task) -> None:
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.n_classes == b.n_classes


# ----------------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_range():
    task = TASKS["digits"]({"name": "digits"})
    assert_task_contract(task)
    assert task.input_shape == (1, 8, 8)
    assert task.n_classes == 10
    assert len(task.x_train) + len(task.x_test) == 1797
    assert len(task.x_test) == round(0.2 * 1797)
    assert float(task.x_train.min()) == 0.0 and float(task.x_train.max()) == 1.0
    # every digit appears in both splits
    assert set(task.y_train.tolist()) == set(range(10)) == set(task.y_test.tolist())


def test_digits_pixels_are_the_source_divided_by_16():
    from sklearn.datasets import load_digits

    source = load_digits()
    task = TASKS["digits"]({"name": "digits"})
    # every train row is an actual digits image with its own label
    flat = {
        row.tobytes(): label for row, label in zip(source.images / 16.0, source.target, strict=True)
    }
    for x, y in zip(task.x_train[:50], task.y_train[:50], strict=True):
        key = x[0].double().numpy().tobytes()
        assert flat[key] == int(y)


def test_digits_deterministic_and_seeded():
    a = TASKS["digits"]({"name": "digits", "split_seed": 0})
    b = TASKS["digits"]({"name": "digits", "split_seed": 0})
    c = TASKS["digits"]({"name": "digits", "split_seed": 1})
    assert a is not b
    assert_same_task(a, b)
    assert len(c.x_test) == len(a.x_test)
    assert not torch.equal(a.x_test, c.x_test)


def test_digits_n_train_subset():
    full = TASKS["digits"]({"name": "digits"})
    small = TASKS["digits"]({"name": "digits", "n_train": 100})
    assert small.x_train.shape == (100, 1, 8, 8)
    assert torch.equal(small.x_test, full.x_test)  # the subset leaves the test split alone
    assert_same_task(small, TASKS["digits"]({"name": "digits", "n_train": 100}))
    with pytest.raises(TaskError, match="n_train"):
        TASKS["digits"]({"name": "digits", "n_train": 5000})


def test_digits_bad_test_fraction():
    with pytest.raises(TaskError, match="test_fraction"):
        TASKS["digits"]({"name": "digits", "test_fraction": 1.5})


# -------------------------------------------------------------------------------- subset


def test_subset_same_seed_same_rows():
    x = np.arange(100, dtype=np.float32).reshape(50, 2)
    y = np.arange(50)
    xa, ya = subset(x, y, 10, seed=3)
    xb, yb = subset(x, y, 10, seed=3)
    xc, _ = subset(x, y, 10, seed=4)
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert not np.array_equal(xa, xc)
    assert np.array_equal(xa[:, 0] / 2, ya)  # rows stay paired with their labels
    assert len(set(ya.tolist())) == 10
    xt, yt = subset(torch.from_numpy(x), torch.from_numpy(y), 10, seed=3)
    assert isinstance(xt, torch.Tensor) and np.array_equal(yt.numpy(), ya)
    assert subset(x, y, None, seed=3)[0] is x


# ----------------------------------------------------------------------------------- idx


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    got_images = read_idx(write_idx(tmp_path / "images", images, gz=gz))
    got_labels = read_idx(write_idx(tmp_path / "labels", labels, gz=gz))
    assert got_images.dtype == np.uint8 and got_images.shape == (5, 4, 3)
    assert np.array_equal(got_images, images)
    assert np.array_equal(got_labels, labels)


def test_read_idx_big_endian_int32(tmp_path):
    data = np.array([[1, -2], [70000, 3]], dtype=">i4")
    path = tmp_path / "ints"
    path.write_bytes(struct.pack(">BBBB2I", 0, 0, 0x0C, 2, 2, 2) + data.tobytes())
    assert np.array_equal(read_idx(path), data.astype(np.int32))


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated(tmp_path, gz):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 5, 5), np.uint8), gz=gz)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(TaskError, match="train-images-idx3-ubyte") as info:
        read_idx(path)
    assert "truncated" in str(info.value)


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "junk.idx"
    path.write_bytes(b"\x01\x02\x03\x04" + bytes(20))
    with pytest.raises(TaskError, match="junk.idx.*not an idx file"):
        read_idx(path)


def test_fashion_mnist_loader_on_synthetic_folder(tmp_path):
    arrays = fake_idx_folder(tmp_path / "fm")
    task = TASKS["fashion_mnist"]({"name": "fashion_mnist", "path": str(tmp_path / "fm")})
    assert_task_contract(task)
    assert task.x_train.shape == (30, 1, 28, 28) and task.x_test.shape == (12, 1, 28, 28)
    assert task.n_classes == 10
    expected = arrays["train-images-idx3-ubyte"].astype(np.float32) / np.float32(255)
    assert np.array_equal(task.x_train[:, 0].numpy(), expected)
    assert np.array_equal(task.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])
    cfg = {"name": "fashion_mnist", "path": str(tmp_path / "fm"), "n_train": 8, "n_test": 5}
    small = TASKS["fashion_mnist"](cfg)
    assert small.x_train.shape == (8, 1, 28, 28) and small.x_test.shape == (5, 1, 28, 28)
    assert_same_task(small, TASKS["fashion_mnist"](cfg))


def test_fashion_mnist_missing_folder(tmp_path):
    with pytest.raises(TaskError, match="dataset-fashion-mnist"):
        TASKS["fashion_mnist"]({"name": "fashion_mnist", "path": str(tmp_path / "nope")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskError, match="train-images-idx3-ubyte.*dataset-fashion-mnist"):
        TASKS["fashion_mnist"]({"name": "fashion_mnist", "path": str(tmp_path / "empty")})


@pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist():
    task = TASKS["fashion_mnist"]({"name": "fashion_mnist", "n_train": 1000, "n_test": 500})
    assert_task_contract(task)
    assert task.x_train.shape == (1000, 1, 28, 28) and task.x_test.shape == (500, 1, 28, 28)
    assert task.n_classes == 10
    assert set(task.y_train.tolist()) == set(range(10))
    assert float(task.x_train.max()) == 1.0 and float(task.x_train.min()) == 0.0


# -------------------------------------------------------------------------- teacher_student


def test_teacher_student_shapes_and_determinism():
    cfg = {"name": "teacher_student", "input_dim": 8, "n_classes": 3, "n_train": 200, "n_test": 50}
    task = TASKS["teacher_student"](cfg)
    assert_task_contract(task)
    assert task.x_train.shape == (200, 8) and task.x_test.shape == (50, 8)
    assert task.n_classes == 3
    assert len(set(task.y_train.tolist())) > 1 and len(set(task.y_test.tolist())) > 1
    assert_same_task(task, TASKS["teacher_student"](dict(cfg)))
    other = TASKS["teacher_student"]({**cfg, "teacher_seed": 1})
    assert not torch.equal(task.x_train, other.x_train)
    assert not torch.equal(task.x_train[:50], task.x_test)  # distinct streams
    assert abs(float(task.x_train.mean())) < 0.2 and 0.8 < float(task.x_train.std()) < 1.2


def test_teacher_student_label_noise():
    cfg = {"name": "teacher_student", "n_train": 4000, "n_test": 100, "n_classes": 4}
    clean = TASKS["teacher_student"](cfg)
    noisy = TASKS["teacher_student"]({**cfg, "label_noise": 0.4})
    assert torch.equal(clean.x_train, noisy.x_train) and torch.equal(clean.y_test, noisy.y_test)
    changed = float((clean.y_train != noisy.y_train).float().mean())
    # 40% of rows get a uniform random class, which is a new class 3 times in 4
    assert abs(changed - 0.4 * 0.75) < 0.03


def test_teacher_student_bad_config():
    with pytest.raises(TaskError, match="label_noise"):
        TASKS["teacher_student"]({"name": "teacher_student", "label_noise": 2})
    with pytest.raises(TaskError, match="n_classes"):
        TASKS["teacher_student"]({"name": "teacher_student", "n_classes": 1})


# ------------------------------------------------------------------------------------- hf


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    """No network and no writes to the home cache for the hf tests."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    # datasets reads the offline flag at import; set the imported value too
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    return tmp_path / "hf_cache"


@pytest.fixture
def digits_folder(tmp_path):
    """A local Hub-style folder of digits as uint8 PIL images: 60 train rows, 20 test rows."""
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage
    from sklearn.datasets import load_digits

    source = load_digits()
    pixels = (source.images * 16).clip(0, 255).astype(np.uint8)
    features = Features({"image": Image(), "label": ClassLabel(num_classes=10)})
    folder = tmp_path / "digits_hf"
    (folder / "data").mkdir(parents=True)
    for split, rows in (("train", range(60)), ("test", range(60, 80))):
        ds = Dataset.from_dict(
            {
                "image": [PILImage.fromarray(pixels[i]) for i in rows],
                "label": [int(source.target[i]) for i in rows],
            },
            features=features,
        )
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder, pixels, source.target


def test_hf_local_folder(hf_offline, digits_folder):
    folder, pixels, target = digits_folder
    cfg = {"name": "hf", "path": str(folder), "cache_dir": str(hf_offline)}
    task = load_task(cfg)
    assert_task_contract(task)
    assert task.name == "hf"
    assert task.x_train.shape == (60, 1, 8, 8) and task.x_test.shape == (20, 1, 8, 8)
    assert task.n_classes == 10
    expected = pixels.astype(np.float32) / np.float32(255)
    assert np.array_equal(task.x_train[:, 0].numpy(), expected[:60])
    assert np.array_equal(task.x_test[:, 0].numpy(), expected[60:80])
    assert np.array_equal(task.y_train.numpy(), target[:60])
    assert hf_offline.exists()  # the arrow cache went to tmp_path, not the home cache

    small = TASKS["hf"]({**cfg, "n_train": 10, "n_test": 5})
    assert small.x_train.shape == (10, 1, 8, 8) and small.x_test.shape == (5, 1, 8, 8)
    rows = [
        int(np.flatnonzero((expected[:60] == x[0].numpy()).all(axis=(1, 2)))[0])
        for x in small.x_train
    ]
    assert np.array_equal(small.y_train.numpy(), target[rows])  # images keep their labels


def test_hf_vectors_and_inferred_classes(hf_offline, tmp_path):
    from datasets import Dataset

    folder = tmp_path / "vec"
    (folder / "data").mkdir(parents=True)
    x = np.random.default_rng(0).standard_normal((12, 5)).astype(np.float32)
    for split, rows in (("train", slice(0, 8)), ("test", slice(8, 12))):
        y = [0, 2, 1, 0, 0, 2, 1, 0, 1, 4, 0, 1][rows]
        ds = Dataset.from_dict({"features": x[rows].tolist(), "target": y})
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    cfg = {"name": "hf", "path": str(folder), "cache_dir": str(hf_offline)}
    task = TASKS["hf"]({**cfg, "image_column": "features", "label_column": "target"})
    assert task.x_train.shape == (8, 5) and task.x_test.shape == (4, 5)
    assert np.array_equal(task.x_train.numpy(), x[:8])  # floats are kept as they are
    assert task.n_classes == 5  # max label + 1 over both splits


def test_hf_wrong_column_and_missing_path(hf_offline, digits_folder):
    folder, _, _ = digits_folder
    cfg = {"name": "hf", "path": str(folder), "cache_dir": str(hf_offline), "image_column": "img"}
    with pytest.raises(TaskError, match=r"'img'.*available columns: \['image', 'label'\]"):
        TASKS["hf"](cfg)
    with pytest.raises(TaskError, match="task.path is required"):
        TASKS["hf"]({"name": "hf"})
    with pytest.raises(TaskError, match="validation"):
        TASKS["hf"]({**cfg, "image_column": "image", "test_split": "validation"})


# ------------------------------------------------------------------------------- load_task


def test_load_task_unknown_name():
    with pytest.raises(TaskError, match="allowed: digits, fashion_mnist, hf, teacher_student"):
        load_task({"name": "imagenet"})
    with pytest.raises(TaskError, match="name"):
        load_task({"test_fraction": 0.2})


def test_load_task_is_cached():
    cfg = {"name": "teacher_student", "n_train": 64, "n_test": 32}
    a = load_task(cfg)
    b = load_task({"n_test": 32, "n_train": 64, "name": "teacher_student"})  # same, reordered
    c = load_task({**cfg, "teacher_seed": 5})
    assert a is b
    assert a.x_train is b.x_train
    assert c is not a
    assert isinstance(a, Task) and a.input_shape == (16,)
