"""Collect: the rows of the store's train and landscape shards, per config, ready to write.

A config is one weight space (one :class:`~zoo.layout.Layout`); its rows are the recipe's
checkpoints, each with its run's resolved config flattened into ``<section>__<key>`` columns,
the generalization gaps, the landscape columns where the checkpoint was annotated (null
elsewhere) and the phase labels of its grid cell.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import BuildError
from zoo.layout import Layout
from zoo.nn.architectures import layout_name
from zoo.recipe import SECTIONS, Recipe, expand_recipe
from zoo.stages.landscape import plan_landscape
from zoo.stages.landscape.phases import cell_inputs, label_cells
from zoo.store.manifest import Manifest
from zoo.store.shards import read_table_shard, read_tensor_shard

FIRST_COLUMNS = ["checkpoint_id", "run_id", "cell_id", "epoch", "step", "status"]


@dataclass
class ConfigRows:
    """The rows of one config (one layout) before they are written."""

    layout: Layout
    columns: dict[str, list]
    weights: list[np.ndarray]


def collect(out_dir: Path, keep: set[str]) -> dict[str, ConfigRows]:
    """Read the train shards in the manifest and gather the rows of runs in ``keep`` per
    layout config (a store may hold runs of an older version of the recipe: they are left out).
    """
    manifest = Manifest(out_dir)
    records = manifest.records("train")
    if not records:
        raise BuildError(
            f"{out_dir}: the manifest has no trained checkpoints; run `zoo train` first"
        )
    by_batch = defaultdict(dict)
    for rec in records:
        by_batch[rec.batch_id][rec.ext] = rec.path
    configs: dict[str, ConfigRows] = {}
    for paths in by_batch.values():
        if set(paths) != {"parquet", "safetensors"}:
            continue  # half-recorded batch: not done, `zoo train` recomputes it
        table = read_table_shard(out_dir, paths["parquet"]).to_pylist()
        table = [row for row in table if row["run_id"] in keep]
        if not table:
            continue
        tensors, meta = read_tensor_shard(out_dir, paths["safetensors"])
        layout = Layout.from_dict(json.loads(meta["layout"]))
        name = _config_name(layout, configs)
        rows = configs.setdefault(name, ConfigRows(layout, defaultdict(list), []))
        for row in table:
            _add_row(rows, row, tensors)
    return configs


def _config_name(layout: Layout, configs: dict[str, ConfigRows]) -> str:
    name = layout_name(layout)
    for candidate in (name, f"{name}_{layout.sha256[:6]}"):
        if candidate not in configs or configs[candidate].layout == layout:
            return candidate
    raise BuildError(f"two layouts share the name {name!r} and hash prefix")


def _add_row(rows: ConfigRows, row: dict, tensors: dict) -> None:
    config = json.loads(row.pop("run_config"))
    ckpt = row["checkpoint_id"]
    flat = np.concatenate([tensors[f"{ckpt}/{n}"].numpy().reshape(-1) for n in rows.layout.names])
    for section in SECTIONS:
        for key, value in config[section].items():
            row[f"{section}__{key}"] = value
    row["seed"] = config["seed"]
    row["gen_gap_loss"] = row["test_loss"] - row["train_loss"]
    if "train_acc" in row:  # classification; signal zoos report PSNR instead
        row["gen_gap_acc"] = row["train_acc"] - row["test_acc"]
    row.pop("batch_id", None)
    n = len(rows.weights)  # rows so far: a key only some runs have (momentum of SGD runs in an
    for key in row.keys() - rows.columns.keys():  # SGD/Adam grid) is null in the others
        rows.columns[key] = [None] * n
    for key, column in rows.columns.items():
        column.append(row.get(key))
    rows.weights.append(flat.astype(np.float32))


def landscape_rows(recipe: Recipe, out_dir: Path) -> list[dict]:
    """The landscape rows of the recipe's current landscape plan (stale settings are ignored)."""
    settings = recipe.resolved["landscape"]
    if not settings["metrics"]:
        return []
    wanted = {
        b.batch_id
        for b in plan_landscape(
            expand_recipe(recipe), settings, recipe.execution["population_size"]
        )
    }
    rows = []
    for rec in Manifest(out_dir).records("landscape"):
        if rec.batch_id in wanted and rec.ext == "parquet":
            rows += read_table_shard(out_dir, rec.path).to_pylist()
    return rows


def attach_landscape(configs: dict[str, ConfigRows], recipe: Recipe, out_dir: Path) -> None:
    """Add the landscape columns (and, with ``phase``, the phase columns) to every row; rows at
    epochs that were not annotated get nulls."""
    rows = landscape_rows(recipe, out_dir)
    if not rows:
        return
    by_ckpt = {r["checkpoint_id"]: r for r in rows}
    if "phase" in recipe.resolved["landscape"]["metrics"]:
        labels = label_cells(cell_inputs(rows), recipe.resolved["landscape"]["phase"])
        for row in rows:
            row.update(labels[(row["cell_id"], row["epoch"])])
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in FIRST_COLUMNS]
    for part in configs.values():
        for ckpt in part.columns["checkpoint_id"]:
            extra = by_ckpt.get(ckpt, {})
            for key in keys:
                part.columns[key].append(extra.get(key))
