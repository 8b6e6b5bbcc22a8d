"""Tests of zoo.datafiles: the idx parser, the fashion_mnist loader and the hf loader."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from zoo.errors import TaskError
from zoo.tasks import TASKS, load_task
from zoo.tasks.idx import read_idx

from .test_tasks import assert_same_task, assert_task_contract

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
