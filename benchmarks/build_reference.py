"""The build as it was before issue 18, kept as the benchmark's reference: read every row of every
config into Python lists (one numpy array per checkpoint), sort, then write one table per config
and split. ``benchmarks/build_throughput.py`` measures it beside the streaming build and checks
that both give the same rows, weights bit for bit. It reads the store through zoo's readers and
writes nothing but Parquet files under its own folder.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zoo.layout import Layout
from zoo.naming import split_of
from zoo.recipe import SECTIONS, Recipe, expand_recipe
from zoo.stages.build.collect import unit_position
from zoo.store.manifest import Manifest
from zoo.store.shards import read_table_shard, read_tensor_shard


def reference_build(recipe: Recipe, out_dir: Path, folder: Path) -> dict[str, int]:
    """Write ``folder/<split>.parquet`` (one config: the synthetic zoo has one); rows per split."""
    runs = {r.run_id: r for r in expand_recipe(recipe)}
    by_batch: dict[str, dict] = defaultdict(dict)
    for rec in Manifest(out_dir).records("train"):
        by_batch[rec.batch_id][rec.ext] = rec.path
    columns: dict[str, list] = defaultdict(list)
    weights: list[np.ndarray] = []
    for paths in by_batch.values():
        rows = [r for r in read_table_shard(out_dir, paths["parquet"]).to_pylist()]
        rows = [r for r in rows if r["run_id"] in runs]
        tensors, meta = read_tensor_shard(out_dir, paths["safetensors"])
        layout = Layout.from_dict(json.loads(meta["layout"]))
        for row in rows:
            config = json.loads(row.pop("run_config"))
            ckpt = row["checkpoint_id"]
            flat = [tensors[f"{ckpt}/{n}"].numpy().reshape(-1) for n in layout.names]
            weights.append(np.concatenate(flat).astype(np.float32))
            for section in SECTIONS:
                for key, value in config[section].items():
                    row[f"{section}__{key}"] = value
            row["seed"] = config["seed"]
            row.pop("batch_id", None)
            for key, value in row.items():
                columns[key].append(value)
    fractions = recipe.resolved["output"]["splits"]
    splits = np.array(
        [split_of(unit_position(runs[r], "run"), fractions) for r in columns["run_id"]]
    )
    order = np.lexsort((columns["epoch"], columns["run_id"]))
    counts = {}
    for split in sorted(set(splits.tolist())):
        idx = order[splits[order] == split]
        arrays = {k: pa.array([v[i] for i in idx]) for k, v in columns.items()}
        flat = np.stack([weights[i] for i in idx])
        arrays["weights"] = pa.FixedSizeListArray.from_arrays(
            pa.array(flat.reshape(-1), pa.float32()), flat.shape[1]
        )
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(arrays), folder / f"{split}.parquet", compression="zstd")
        counts[split] = len(idx)
    return counts
