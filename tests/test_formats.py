"""Every config of every shipped recipe loads in every format a user tries first (issue 13: list
columns that were null where a checkpoint had no landscape metrics stopped the torch format and
the DataLoader). Each recipe runs small: one seed, one epoch, a few hundred examples (Fashion-
MNIST from generated idx files, so this runs without Debian's package)."""

from pathlib import Path

import datasets
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

import zoo
from zoo.dist.options import ExecOptions
from zoo.recipe import recipe_from_dict
from zoo.store.dataset import read_layouts

from .test_datafiles import fake_idx_folder

PIPELINES = sorted((Path(__file__).parent.parent / "pipelines").glob("*.yaml"))


def small(path: Path, out: Path) -> dict:
    """The recipe at a size that runs in seconds, with the same grid, configs and columns."""
    data = yaml.safe_load(path.read_text())
    data.update(seeds=1, checkpoints={"epochs": [0, 1]}, output={"dir": str(out)})
    data["train"]["epochs"] = 1
    task = data["task"]
    if task["name"] == "fashion_mnist":
        fake_idx_folder(out.parent / "idx", n_train=96, n_test=32)
        task.update(path=str(out.parent / "idx"), n_train=64, n_test=32)
    elif task["name"] in ("digits", "teacher_student"):
        task.update(n_train=64, **({"n_test": 32} if task["name"] != "digits" else {}))
    elif task["name"] == "modular":
        task["modulus"] = 7
    if "task.n_train" in data.get("grid", {}):
        data["grid"]["task.n_train"] = [32, 64]
    if data.get("sample"):
        data["sample"]["count"] = 3
        if "task.n_train" in data["sample"]["params"]:
            data["sample"]["params"]["task.n_train"] = {"choice": [32, 64]}
    if data.get("landscape"):
        data["landscape"].update(at=[1], probe={"batches": 1, "batch_size": 32, "seed": 0})
        data["landscape"]["hessian"] = {"iterations": 3, "trace_probes": 2}
    return data


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_every_config_loads_in_every_format(path, tmp_path):
    recipe = recipe_from_dict(small(path, tmp_path / "out"), source=str(path))
    folder = zoo.run(recipe, ExecOptions(workers=0))
    for config, layout in read_layouts(folder).items():
        for split, ds in datasets.load_dataset(str(folder), config).items():
            where = f"{path.stem}/{config}/{split}"
            torch_ds = ds.with_format("torch")
            assert torch_ds[0]["weights"].shape == (layout.num_params,), where
            assert torch_ds[0:2]["weights"].shape == (min(2, len(ds)), layout.num_params), where
            assert ds.with_format("numpy")[:]["weights"].shape == (len(ds), layout.num_params)
            batch = next(iter(DataLoader(torch_ds, batch_size=4)))  # the default collate
            assert batch["weights"].dtype == torch.float32, where
            for name, value in batch.items():  # every column collates to a tensor or a list
                assert isinstance(value, torch.Tensor | list), (where, name)
