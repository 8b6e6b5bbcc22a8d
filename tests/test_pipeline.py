"""End to end: recipe -> train (real Dask LocalCluster or in-process) -> store -> dataset."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from typer.testing import CliRunner

import zoo
from zoo.cli import app
from zoo.dist.options import ExecOptions
from zoo.store.manifest import Manifest

from .conftest import tiny_recipe

runner = CliRunner()


def _load_all(folder):
    layouts = json.loads((folder / "layout.json").read_text())
    out = {}
    for config in layouts:
        for ds in datasets.load_dataset(str(folder), config).values():
            for row in ds:
                out[row["checkpoint_id"]] = row
    return out


def test_run_on_local_cluster_builds_a_loadable_dataset(tmp_path):
    recipe = tiny_recipe(tmp_path, execution={"workers": 2, "population_size": 2})
    folder = zoo.run(recipe)
    assert (folder / "README.md").exists() and (folder / "recipe.yaml").exists()
    ds = datasets.load_dataset(str(folder))  # offline, from the folder
    n_rows = sum(len(s) for s in ds.values())
    assert n_rows == 4 * 3  # 4 runs x 3 checkpoints
    split = next(iter(ds.values()))
    weights = split.with_format("torch")["weights"][:]
    layout = zoo.load_layout(folder)
    assert weights.dtype == torch.float32 and weights.shape == (len(split), layout.num_params)
    assert split.features["weights"].length == layout.num_params
    # every checkpoint of a run is in one split
    runs_per_split = [set(s["run_id"]) for s in ds.values()]
    assert sum(len(r) for r in runs_per_split) == len(set().union(*runs_per_split)) == 4


def test_to_module_reproduces_the_recorded_test_accuracy(tmp_path):
    folder = zoo.run(tiny_recipe(tmp_path))
    layout = zoo.load_layout(folder)
    rows = list(_load_all(folder).values())
    task = zoo.load_task(
        {k[len("task__") :]: v for k, v in rows[0].items() if k.startswith("task__")}
    )
    for row in rows:
        net = zoo.to_module(row, layout)
        with torch.no_grad():
            acc = (net(task.x_test).argmax(1) == task.y_test).double().mean().item()
        assert acc == pytest.approx(row["test_acc"], abs=1e-9)


def test_card_yaml_and_columns(tmp_path):
    folder = zoo.run(tiny_recipe(tmp_path))
    text = (folder / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["configs"][0]["config_name"] == "mlp_d1_w8"
    features = {f["name"]: f for f in header["dataset_info"][0]["features"]}
    assert features["weights"] == {
        "name": "weights",
        "list": "float32",
        "length": 610,
    }  # 64*8+8 + 8*10+10
    assert features["diverged_epoch"]["dtype"] == "int32"
    assert features["train__lr"]["dtype"] == "float64"
    assert "| `train.lr` | grid | [0.05, 0.1] |" in text
    assert "status | ok: 12" in text


def test_built_rows_follow_the_published_row_schema(tmp_path):
    folder = zoo.run(tiny_recipe(tmp_path))
    spec = json.loads(
        (Path(zoo.__file__).parent / "schemas" / "checkpoint.features.json").read_text()
    )
    expected = datasets.Features.from_dict(spec["features"])
    ds = next(iter(datasets.load_dataset(str(folder)).values()))
    for name, feature in expected.items():
        if name == "weights":
            assert ds.features[name] == datasets.List(datasets.Value("float32"), length=610)
        else:
            assert ds.features[name] == feature, name
    assert pq.read_schema(next(folder.glob("data/*/*.parquet"))).metadata[b"zoo"]


def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path):
    recipe = tiny_recipe(
        tmp_path / "a",
        seeds=4,
        train={"optimizer": "sgd", "batch_size": 16, "epochs": 2},
        execution={"workers": 0, "population_size": 1},
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe.to_yaml())
    cmd = [sys.executable, "-m", "zoo", "train", str(path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = Manifest(tmp_path / "a")
    deadline = time.time() + 120
    while time.time() < deadline and len(manifest.records()) < 4 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = manifest.done_batch_ids("train")
    assert 0 < len(before) < 8, "the kill should land mid-run"
    summary = zoo.train(recipe, ExecOptions(workers=0))
    assert summary.stored_runs == len(before) and len(summary.done) == 8 - len(before)
    assert not set(summary.done) & before  # nothing stored is trained again
    records = manifest.records("train")
    ckpts = [c for r in records if r.ext == "parquet" for c in r.checkpoint_ids]
    assert len(ckpts) == len(set(ckpts)) == 8 * 3
    # equal to an uninterrupted run
    other = tiny_recipe(
        tmp_path / "b", **{k: recipe.data[k] for k in ("seeds", "train", "execution")}
    )
    a = _load_all(zoo.build_dataset(recipe, tmp_path / "a"))
    b = _load_all(zoo.run(other))
    assert a.keys() == b.keys()
    assert all(a[k]["weights"] == b[k]["weights"] for k in a)


def test_verify_names_truncated_and_altered_shards(tmp_path):
    zoo.run(tiny_recipe(tmp_path))
    assert runner.invoke(app, ["verify", str(tmp_path)]).exit_code == 0
    shards = sorted((tmp_path / "shards" / "train").glob("*.safetensors"))
    data = shards[0].read_bytes()
    shards[0].write_bytes(data[: len(data) // 2])
    flipped = bytearray(shards[1].read_bytes())
    flipped[-5] ^= 0xFF
    shards[1].write_bytes(bytes(flipped))
    result = runner.invoke(app, ["verify", str(tmp_path)])
    assert result.exit_code == 1
    assert shards[0].name in result.output and "truncated" in result.output
    assert shards[1].name in result.output and "corrupt" in result.output
    assert runner.invoke(app, ["verify", str(tmp_path), "--repair"]).exit_code == 0
    assert runner.invoke(app, ["verify", str(tmp_path)]).exit_code == 0
    summary = zoo.train(tiny_recipe(tmp_path), ExecOptions(workers=0))
    assert len(summary.done) == 2  # both damaged batches were trained again
    assert runner.invoke(app, ["verify", str(tmp_path)]).exit_code == 0


def test_cli_plan_run_inspect_and_bad_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(tiny_recipe(tmp_path / "out").to_yaml())
    result = runner.invoke(app, ["plan", str(path)])
    assert (
        result.exit_code == 0 and "4 runs in 2 population batches, 12 checkpoints" in result.output
    )
    result = runner.invoke(app, ["run", str(path), "--workers", "0"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["inspect", str(tmp_path / "out")])
    assert result.exit_code == 0 and "mlp_d1_w8" in result.output
    result = runner.invoke(app, ["run", str(path), "--set", "model.arch=vgg"])
    assert result.exit_code == 2
    allowed = "['mlp', 'cnn_s', 'cnn_small', 'resnet', 'transformer', 'siren', 'fourier_mlp']"
    assert f"model.arch: 'vgg' is not allowed; allowed values: {allowed}" in result.output


def test_a_failing_batch_is_reported_and_the_others_are_kept(tmp_path):
    # cnn_s cannot run on 8x8 digits: that population fails, the MLP one is saved
    recipe = tiny_recipe(
        tmp_path,
        grid={"model.arch": ["mlp", "cnn_s"]},
        seeds=1,
        execution={"workers": 0, "population_size": 4},
    )
    with pytest.raises(zoo.ZooError) as info:
        zoo.run(recipe)
    assert "1 of 2 train batches failed" in str(info.value)
    assert "cnn_s needs inputs of at least 28x28" in str(info.value)
    assert len(Manifest(tmp_path).done_batch_ids("train")) == 1


def test_runs_with_different_config_keys_share_a_table(tmp_path):
    """An sgd/adam grid: momentum exists only for sgd runs, betas only for adam; each is null
    where it does not apply, and every run's rows are there."""
    recipe = tiny_recipe(tmp_path, grid={"train.optimizer": ["sgd", "adam"]}, seeds=1)
    ds = datasets.concatenate_datasets(list(datasets.load_dataset(str(zoo.run(recipe))).values()))
    by_opt = {o: ds.filter(lambda r, o=o: r["train__optimizer"] == o) for o in ("sgd", "adam")}
    assert {o: len(d) for o, d in by_opt.items()} == {"sgd": 3, "adam": 3}
    assert set(by_opt["sgd"]["train__momentum"]) == {0.9}
    assert set(by_opt["adam"]["train__momentum"]) == {None}


def test_a_config_is_a_weight_space_with_the_activation_as_a_column(tmp_path):
    """Rows that differ only in their activation share one config (issue 13: the random-
    hyperparameter recipe published its ReLU half as a hash-suffixed twin config)."""
    recipe = tiny_recipe(tmp_path, grid={"model.activation": ["tanh", "relu"]})
    folder = zoo.run(recipe)
    layouts = json.loads((folder / "layout.json").read_text())
    assert list(layouts) == ["mlp_d1_w8"] and layouts["mlp_d1_w8"]["model"]["activation"] is None
    ds = datasets.load_dataset(str(folder), "mlp_d1_w8", split="train")
    layout = zoo.load_layout(folder)
    task = zoo.load_task(recipe.resolved["task"])
    for row in (r for r in ds if r["epoch"] == 2):
        net = zoo.to_module(row, layout)  # the row's model__activation
        acc = (net(task.x_test).argmax(1) == task.y_test).float().mean().item()
        assert abs(acc - row["test_acc"]) < 1e-6
    with pytest.raises(zoo.ZooError, match="differ in their activation"):
        zoo.to_module(ds[0]["weights"], layout)


def test_inspect_reads_at_80_columns(tmp_path):
    from rich.console import Console

    from zoo.cli.app import _print_inspect

    zoo.run(tiny_recipe(tmp_path / "a_long_output_folder_name"))
    console = Console(width=80, record=True)
    _print_inspect(tmp_path / "a_long_output_folder_name", console)
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "mlp_d1_w8   train" in text and "parameters: mlp_d1_w8 610" in text
