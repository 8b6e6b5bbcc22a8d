"""A zoo that grows, is verified before it is published, and splits as stated (issue 13).

Growing a recipe (more seeds, another grid value, another checkpoint epoch) trains only the new
checkpoints, and the grown dataset equals a fresh run of the grown recipe, row for row and bit
for bit: on CPU a model's weights and metrics do not depend on which models share its
population batch (checked here through the growth itself, whose batches differ from the fresh
run's)."""

import hashlib
import json
import shutil
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import zoo
from zoo.cli import app
from zoo.dist.options import ExecOptions
from zoo.errors import BuildError, StoreError
from zoo.naming import split_of, split_position
from zoo.recipe import expand_recipe
from zoo.stages.build import build_dataset
from zoo.stages.build.collect import unit_position
from zoo.store.manifest import Manifest

from .conftest import tiny_recipe


def _rows(folder: Path) -> dict[str, dict]:
    """checkpoint_id -> row (with its split) of every config of a built dataset."""
    out = {}
    for config in json.loads((folder / "layout.json").read_text()):
        for split, ds in datasets.load_dataset(str(folder), config).items():
            for row in ds:
                out[row["checkpoint_id"]] = dict(row, split=split, config=config)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    """The weight configs' data files (the small metadata config is rewritten by every build)."""
    files = folder.glob("data/*/*")
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in files if "metadata" not in p.parts
    }


def _grow(tmp_path: Path, before: dict, after: dict) -> tuple:
    """Build ``before`` into a, grow it to ``after``; build ``after`` fresh into b."""
    small = tiny_recipe(tmp_path / "a", **before)
    zoo.run(small)
    files = _files(tmp_path / "a" / "dataset")
    grown = tiny_recipe(tmp_path / "a", **after)
    summary = zoo.train(grown, ExecOptions(workers=0))
    folder = build_dataset(grown, tmp_path / "a")
    fresh = zoo.run(tiny_recipe(tmp_path / "b", **after))
    return small, grown, summary, files, folder, fresh


def _trained(out: Path, summary) -> set[str]:
    """Checkpoint ids written by the batches a summary ran."""
    records = Manifest(out).records("train")
    return {c for r in records if r.batch_id in summary.done for c in r.checkpoint_ids}


def test_more_seeds_trains_the_new_runs_only_and_equals_a_fresh_run(tmp_path):
    small, grown, summary, before, folder, fresh = _grow(tmp_path, {"seeds": 2}, {"seeds": 3})
    new = {r.run_id for r in expand_recipe(grown)} - {r.run_id for r in expand_recipe(small)}
    assert len(new) == 2 and summary.stored_runs == 4
    assert {c.split("-")[0] for c in _trained(tmp_path / "a", summary)} == new
    assert _rows(folder) == _rows(fresh)
    after = _files(folder)  # the old runs' files are not rewritten
    assert all(after[name] == data for name, data in before.items())


def test_another_grid_value_trains_its_cell_only(tmp_path):
    grid = {"train.lr": [0.05, 0.1]}
    _, grown, summary, _, folder, fresh = _grow(
        tmp_path, {"grid": grid}, {"grid": {"train.lr": [0.05, 0.1, 0.2]}}
    )
    trained = {r.run_id for r in expand_recipe(grown) if r.train["lr"] == 0.2}
    assert {c.split("-")[0] for c in _trained(tmp_path / "a", summary)} == trained
    assert _rows(folder) == _rows(fresh)


def test_another_checkpoint_epoch_saves_only_the_new_checkpoints(tmp_path):
    """The store keeps no optimizer state to resume from, so each run is trained again from its
    initialization; only the checkpoints the store lacks are written, and the others are
    reproduced bit for bit (the fresh run's rows equal the grown store's)."""
    before, after = {"checkpoints": {"epochs": [0, 2]}}, {"checkpoints": {"epochs": [0, 1, 2]}}
    small, grown, summary, _, folder, fresh = _grow(tmp_path, before, after)
    assert [r.run_id for r in expand_recipe(small)] == [r.run_id for r in expand_recipe(grown)]
    assert {c.split("-")[1] for c in _trained(tmp_path / "a", summary)} == {"e0001"}
    records = [r for r in Manifest(tmp_path / "a").records("train") if r.ext == "parquet"]
    ids = [c for r in records for c in r.checkpoint_ids]
    assert len(ids) == len(set(ids)) == 12  # every checkpoint stored once
    assert _rows(folder) == _rows(fresh)


def test_a_checkpoint_stored_twice_is_kept_once_or_refused_when_it_differs(tmp_path):
    out = tmp_path / "out"
    recipe = tiny_recipe(out)
    zoo.run(recipe)
    manifest = Manifest(out)
    pair = [r for r in manifest.records("train") if r.batch_id == manifest.records()[0].batch_id]
    copies = []
    for rec in pair:  # the same shards again, under another batch
        path = rec.path.replace(rec.batch_id, "bcopy")
        shutil.copy(out / rec.path, out / path)
        copies.append(type(rec).from_dict({**rec.to_dict(), "path": path, "batch_id": "bcopy"}))
    manifest.append(copies)
    rows = _rows(build_dataset(recipe, out))
    assert len(rows) == 12  # each checkpoint once
    metrics = next(c for c in copies if c.ext == "parquet")
    table = pq.read_table(out / metrics.path)
    changed = table.set_column(
        table.column_names.index("train_loss"), "train_loss", pa.array([0.0] * table.num_rows)
    )
    pq.write_table(changed, out / metrics.path)
    data = (out / metrics.path).read_bytes()
    fixed = {**metrics.to_dict(), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest.append([type(metrics).from_dict(fixed)])
    with pytest.raises(BuildError, match="stored twice with different contents"):
        build_dataset(recipe, out)


@pytest.mark.parametrize("ext", ["safetensors", "parquet"])
def test_a_flipped_byte_is_never_published(tmp_path, ext):
    out = tmp_path / "out"
    recipe = tiny_recipe(out)
    zoo.run(recipe)
    rec = next(r for r in Manifest(out).records("train") if r.ext == ext)
    data = bytearray((out / rec.path).read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / rec.path).write_bytes(bytes(data))
    shutil.rmtree(out / "dataset")
    with pytest.raises(StoreError, match=rf"{rec.path}.*does not match the manifest.*--repair"):
        build_dataset(recipe, out)
    runner = CliRunner()
    assert runner.invoke(app, ["verify", str(out), "--repair"]).exit_code == 0
    assert len(_rows(zoo.run(recipe))) == 12  # the damaged batch is trained again


# --- splits ---------------------------------------------------------------------------------------


def test_splits_are_stable_under_growth_and_near_their_fractions():
    fractions = {"train": 0.7, "validation": 0.15, "test": 0.15}
    small = {(s, (i, j)): None for s in range(4) for i in range(3) for j in range(3)}
    grown = {(s, (i, j)): None for s in range(8) for i in range(4) for j in range(3)}
    for units in (small, grown):
        for key in units:
            units[key] = split_of(split_position(key[0], key[1], None), fractions)
    assert all(grown[k] == v for k, v in small.items())  # nothing moved
    for units in (small, grown):
        counts = {s: sum(v == s for v in units.values()) / len(units) for s in fractions}
        assert all(abs(counts[s] - f) <= 0.05 for s, f in fractions.items()), counts


def test_every_quickstart_config_holds_every_split():
    recipe = zoo.load_recipe(Path(__file__).parent.parent / "pipelines" / "quickstart.yaml")
    fractions = recipe.resolved["output"]["splits"]
    by_width: dict[int, set[str]] = {}
    for run in expand_recipe(recipe):
        split = split_of(unit_position(run, "run"), fractions)
        by_width.setdefault(run.model["width"], set()).add(split)
    assert all(splits == set(fractions) for splits in by_width.values()), by_width


def test_split_by_cell_keeps_each_cell_in_one_split(tmp_path):
    recipe = tiny_recipe(
        tmp_path, seeds=3, grid={"train.lr": [0.01, 0.02, 0.05, 0.1]}, output={"split_by": "cell"}
    )
    rows = _rows(zoo.run(recipe))
    cells: dict[str, set[str]] = {}
    for row in rows.values():
        cells.setdefault(row["cell_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in cells.values()) and len(cells) == 4
    with pytest.raises(zoo.ZooError, match="output.split_by: task has no key 'nope'"):
        tiny_recipe(tmp_path, output={"split_by": "task.nope"})


def test_a_damaged_dataset_file_is_repaired_and_written_again(tmp_path):
    out = tmp_path / "out"
    recipe = tiny_recipe(out)
    folder = zoo.run(recipe)
    before = _files(folder)
    damaged = sorted(folder.glob("data/mlp_d1_w8/train-*.parquet"))[0]
    damaged.write_bytes(damaged.read_bytes()[:-20])
    runner = CliRunner()
    result = runner.invoke(app, ["verify", str(out)])
    assert result.exit_code == 1 and damaged.name in result.output
    assert runner.invoke(app, ["verify", str(out), "--repair"]).exit_code == 0
    assert not damaged.exists()
    build_dataset(recipe, out)
    assert _files(folder) == before  # the part is written again, the same bytes
