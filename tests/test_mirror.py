"""Fashion-MNIST without Debian's package (issue 13, item 10): the loader reads the Hub copy,
checked byte for byte against the idx files. Offline: a Hub-format copy built from the Debian
idx files (PNG images + ClassLabel labels, as the Hub stores them) is served by the fake Hub."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi
from typer.testing import CliRunner

from zoo.cli import app
from zoo.errors import TaskError
from zoo.tasks import TASKS, clear_task_cache, idx, mirror
from zoo.tasks.idx import FASHION_MNIST_PATH, find_idx_files, read_idx

from . import test_hub

hub = test_hub.hub  # the fake Hub (a fixture)

FMNIST = Path(FASHION_MNIST_PATH)
HAS_DEBIAN = (FMNIST / "train-images-idx3-ubyte.gz").exists()
PIPELINES = sorted((Path(__file__).parents[1] / "pipelines").glob("fashion_*.yaml"))
OWNER_TOKEN = "hf_zooTestMirrorOwnerToken0123456789"
NAMES = [
    "T - shirt / top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
needs_debian = pytest.mark.skipif(not HAS_DEBIAN, reason="Debian's dataset-fashion-mnist missing")


def _hub_format(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    """``folder/fashion_mnist/{train,test}-00000-of-00001.parquet`` as the Hub stores them."""
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    features = Features({"image": Image(), "label": ClassLabel(names=NAMES)})
    (folder / "fashion_mnist").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        pngs = []
        for img in arrays[f"x_{split}"]:
            buf = io.BytesIO()
            PILImage.fromarray(img).save(buf, format="PNG")
            pngs.append({"bytes": buf.getvalue(), "path": None})
        labels = arrays[f"y_{split}"].astype(int).tolist()
        ds = Dataset.from_dict({"image": pngs, "label": labels}, features=features)
        ds.to_parquet(str(folder / "fashion_mnist" / f"{split}-00000-of-00001.parquet"))
    return folder


@pytest.fixture(scope="module")
def debian_copy(tmp_path_factory) -> Path:
    """The Debian idx files, converted to the Hub's format (once: about 10 s)."""
    files = find_idx_files(FMNIST, "test")
    arrays = {key: read_idx(path) for key, path in files.items()}
    return _hub_format(tmp_path_factory.mktemp("hubcopy"), arrays)


def _serve(fake, folder: Path, repo_id: str) -> None:
    """Put ``folder`` on the fake Hub as the public dataset ``repo_id``."""
    fake.tokens[OWNER_TOKEN] = (repo_id.split("/")[0], "write")
    api = HfApi(token=OWNER_TOKEN)
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset")


@pytest.fixture
def no_debian(tmp_path, monkeypatch):
    """This machine as a pip-only macOS one: the default idx folder does not exist."""
    monkeypatch.setattr(idx, "LOCAL_DEFAULT", tmp_path / "no-such-package")
    clear_task_cache()
    mirror._cached.cache_clear()
    yield
    clear_task_cache()
    mirror._cached.cache_clear()


@needs_debian
def test_without_the_debian_folder_the_hub_copy_gives_the_same_tensors(hub, debian_copy, no_debian):
    _serve(hub, debian_copy, mirror.FASHION_MNIST.repo_id)
    cfg = {"name": "fashion_mnist", "path": FASHION_MNIST_PATH, "n_train": 2000, "n_test": 500}
    remote = TASKS["fashion_mnist"](cfg)
    assert "zalando-datasets/fashion_mnist" in remote.source and "sha256" in remote.source
    assert any("fashion_mnist/train-00000-of-00001.parquet" in r.url for r in hub.requests)
    idx.LOCAL_DEFAULT = FMNIST  # the package is back: the local folder comes first
    local = TASKS["fashion_mnist"](cfg)
    assert local.source == f"idx files in {FMNIST}"
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(remote, name), getattr(local, name)), name
    assert remote.n_classes == local.n_classes == 10


@needs_debian
def test_zoo_plan_of_every_fashion_recipe_works_without_the_debian_package(
    hub,
    debian_copy,
    no_debian,
):
    _serve(hub, debian_copy, mirror.FASHION_MNIST.repo_id)
    assert len(PIPELINES) == 7  # five classifier zoos, the ResNet zoo and the INR zoo
    for path in PIPELINES:
        result = CliRunner().invoke(app, ["plan", str(path)])
        assert result.exit_code == 0, f"{path.name}: {result.output}"
        assert "population batches" in result.output, path.name
    assert mirror._cached.cache_info().misses == 1  # decoded once for all the recipes


def _tiny_arrays() -> dict[str, np.ndarray]:
    gen = np.random.default_rng(3)
    return {
        "x_train": gen.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(20) % 10).astype(np.uint8),
        "x_test": gen.integers(0, 256, (8, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(8) % 10).astype(np.uint8),
    }


def test_a_hub_copy_that_differs_from_the_files_is_refused(hub, tmp_path, no_debian):
    import hashlib

    arrays = _tiny_arrays()
    _serve(hub, _hub_format(tmp_path / "tiny", arrays), "alice/tiny-fashion")
    sha = {k: hashlib.sha256(a.tobytes()).hexdigest() for k, a in arrays.items()}
    copy = mirror.HubCopy("alice/tiny-fashion", None, sha)
    got = mirror.load_hub_copy(copy, "fashion_mnist", "install it")
    assert all(np.array_equal(got[k], arrays[k]) for k in arrays)
    assert not got["x_train"].flags.writeable  # shared by every task of the process
    wrong = mirror.HubCopy("alice/tiny-fashion", None, {**sha, "y_test": "0" * 64})
    with pytest.raises(TaskError) as info:
        mirror.load_hub_copy(wrong, "fashion_mnist", "install Debian's dataset-fashion-mnist")
    text = str(info.value)
    assert "gives y_test (8,) with sha256" in text and "not 0000000000000000…" in text
    assert "install Debian's dataset-fashion-mnist, or pin a revision" in text


def test_no_local_folder_and_no_hub_copy_names_both_ways_out(hub, no_debian):
    cfg = {"name": "fashion_mnist", "path": FASHION_MNIST_PATH, "n_train": 10}
    with pytest.raises(TaskError) as info:
        TASKS["fashion_mnist"](cfg)
    text = str(info.value)
    assert "split 'train' of the Hugging Face Hub dataset zalando-datasets/fashion_mnist" in text
    assert "apt-get install dataset-fashion-mnist" in text and "Hub is reachable" in text


def test_a_folder_of_your_own_must_exist_it_never_falls_back_to_the_hub(hub, tmp_path):
    cfg = {"name": "fashion_mnist", "path": str(tmp_path / "typo")}
    with pytest.raises(TaskError, match=r"no folder .*typo; install Debian's"):
        TASKS["fashion_mnist"](cfg)
    assert hub.requests == []
