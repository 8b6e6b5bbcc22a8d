"""Build: the store's shards -> a Hugging Face dataset folder that ``load_dataset`` reads.

```
<out>/dataset/
  README.md                    card: YAML (configs, features, license, tags) + prose
  data/<config>/<split>-NNNNN-of-NNNNN.parquet
  layout.json                  config -> layout (names, shapes, offsets, permutation spec)
  recipe.yaml                  the recipe that produced the zoo
```
One row per checkpoint; one config per layout (architecture + shapes); splits by a hash of
``run_id``, so every checkpoint of a run is in the same split.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import SCHEMA_VERSION, __version__
from .card import render_card
from .errors import BuildError
from .fsio import atomic_write_bytes
from .ids import data_file, split_of
from .landscape import COLUMN_DOCS as LANDSCAPE_DOCS
from .landscape import plan_landscape
from .layout import Layout
from .manifest import Manifest
from .models import layout_name
from .phases import cell_inputs, label_cells
from .plot import plot_metrics
from .recipe import Recipe, expand_recipe, recipe_schema
from .store import read_table_shard, read_tensor_shard

# Viewer-friendly Parquet (issue 5): the dataset viewer wants row groups <= 100 MB and files
# <= 500 MB; both limits are taken on uncompressed bytes, so compressed files are smaller still.
ROW_GROUP_BYTES = 64 * 2**20
FILE_BYTES = 400 * 2**20
COMPRESSION = "zstd"
# float32 weights compress poorly. BYTE_STREAM_SPLIT regroups their bytes by significance so zstd
# finds the repeated sign/exponent bytes (measured, Parquet / raw float32: 0.75 vs 0.83 PLAIN on
# the quickstart MLPs), but PLAIN keeps whole floats together and wins where consecutive
# checkpoints share many exact weights (cnn_small/Adam, 28% unchanged from the previous
# checkpoint: 0.72 vs 0.79). Each file takes whichever encodes its first row group smaller
# (benchmarks/load_throughput.py).
WEIGHTS_ENCODINGS = ("BYTE_STREAM_SPLIT", "PLAIN")
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
    for section in ("task", "model", "init", "train"):
        for key, value in config[section].items():
            row[f"{section}__{key}"] = value
    row["seed"] = config["seed"]
    row["gen_gap_loss"] = row["test_loss"] - row["train_loss"]
    row["gen_gap_acc"] = row["train_acc"] - row["test_acc"]
    row.pop("batch_id", None)
    n = len(rows.weights)  # rows so far: a key only some runs have (momentum of SGD runs in an
    for key in row.keys() - rows.columns.keys():  # SGD/Adam grid) is null in the others
        rows.columns[key] = [None] * n
    for key, column in rows.columns.items():
        column.append(row.get(key))
    rows.weights.append(flat.astype(np.float32))


def to_table(rows: ConfigRows, order: np.ndarray, splits: list[str]) -> pa.Table:
    """An Arrow table of the rows in ``order`` with typed columns and fixed-length weights."""
    arrays, names = [], []
    ordered = FIRST_COLUMNS + sorted(k for k in rows.columns if k not in FIRST_COLUMNS)
    for key in ordered:
        values = [rows.columns[key][i] for i in order]
        arrays.append(pa.array(values, type=column_type(key)))
        names.append(key)
    arrays.append(pa.array([splits[i] for i in order]))
    names.append("split")
    flat = np.stack([rows.weights[i] for i in order]) if len(order) else np.zeros((0, 0))
    p = rows.layout.num_params
    weights = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), pa.float32()), p)
    return pa.Table.from_arrays([*arrays, weights], names=[*names, "weights"])


_JSON_TO_ARROW = {"integer": pa.int64(), "number": pa.float64(), "string": pa.string(),
                  "boolean": pa.bool_()}  # fmt: skip


@cache
def row_features() -> datasets.Features:
    """The columns every row has (``schemas/checkpoint.features.json``)."""
    spec = json.loads((Path(__file__).parent / "schemas" / "checkpoint.features.json").read_text())
    return datasets.Features.from_dict(spec["features"])


def column_type(key: str) -> pa.DataType | None:
    """Arrow type of a column: from the row schema, or from the recipe schema for hyperparameter
    columns (so a column that is null in every row is still typed)."""
    if key in row_features():
        return row_features().arrow_schema.field(key).type
    section, _, name = key.partition("__")
    prop = recipe_schema()["properties"].get(section, {}).get("properties", {}).get(name)
    if prop is None:
        return None  # let Arrow infer
    if "enum" in prop:
        return pa.string()
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    first = next(t for t in types if t != "null")
    if first == "array":
        return pa.list_(_JSON_TO_ARROW[prop["items"]["type"]])
    return _JSON_TO_ARROW[first]


def features_of(table: pa.Table) -> datasets.Features:
    """``datasets`` Features of a table: weights as a fixed-length float32 list."""
    return datasets.Features.from_arrow_schema(table.schema)


def with_metadata(table: pa.Table, layout: Layout) -> pa.Table:
    features = features_of(table)
    meta = {
        b"huggingface": json.dumps({"info": {"features": features.to_dict()}}).encode(),
        b"zoo": json.dumps(
            {
                "zoo_version": __version__,
                "schema_version": SCHEMA_VERSION,
                "layout_sha256": layout.sha256,
            }  # fmt: skip
        ).encode(),
    }
    return table.replace_schema_metadata(meta)


def write_parquet_files(
    folder: Path, config: str, split: str, table: pa.Table, weights_encoding: str | None = None
) -> list[str]:
    """Write one split of one config as viewer-friendly Parquet files; return their paths.

    Files hold at most ``FILE_BYTES`` and row groups at most ``ROW_GROUP_BYTES`` of the table
    (uncompressed), zstd-compressed. Float list columns (``weights``) are written without
    dictionary or statistics (min/max of a weight vector's elements help no reader), with
    ``weights_encoding``, or (``None``) the one of ``WEIGHTS_ENCODINGS`` that encodes the file's
    first row group smallest.
    """
    row_bytes = max(1, table.nbytes // max(1, table.num_rows))
    per_file = max(1, FILE_BYTES // row_bytes)
    per_group = max(1, min(per_file, ROW_GROUP_BYTES // row_bytes))
    count = max(1, -(-table.num_rows // per_file))
    floats = [
        f.name
        for f in table.schema
        if (pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type))
        and pa.types.is_floating(f.type.value_type)
    ]
    others = [n for n in table.column_names if n not in floats]

    def encode(part: pa.Table, encoding: str) -> pa.Buffer:
        sink = pa.BufferOutputStream()
        pq.write_table(part, sink, compression=COMPRESSION, row_group_size=per_group,
                       use_dictionary=others, write_statistics=others,
                       column_encoding={f"{n}.list.element": encoding for n in floats})  # fmt: skip
        return sink.getvalue()

    trials = [weights_encoding] if weights_encoding or not floats else WEIGHTS_ENCODINGS
    paths = []
    for i in range(count):
        part = table.slice(i * per_file, per_file)
        sample = part.slice(0, per_group)
        best = min(trials, key=lambda e: encode(sample, e).size) if len(trials) > 1 else trials[0]
        rel = data_file(config, split, i, count)
        atomic_write_bytes(folder / rel, encode(part, best or "PLAIN").to_pybytes())
        paths.append(rel)
    return paths


def build_dataset(recipe: Recipe, out_dir: str | Path) -> Path:
    """Build ``<out>/dataset`` from the store. Idempotent: the folder is rewritten each time.

    Returns:
        the dataset folder; ``datasets.load_dataset(str(folder), config)`` reads it offline.
    """
    out_dir = Path(out_dir)
    folder = out_dir / "dataset"
    configs = collect(out_dir, {r.run_id for r in expand_recipe(recipe)})
    if not configs:
        raise BuildError(f"{out_dir}: none of the recipe's runs is trained yet; run `zoo train`")
    shutil.rmtree(folder / "data", ignore_errors=True)
    shutil.rmtree(folder / "images", ignore_errors=True)
    attach_landscape(configs, recipe, out_dir)
    draw_figures(configs, recipe, folder)
    fractions = recipe.resolved["output"]["splits"]
    summary = {}
    for name, rows in sorted(configs.items()):
        splits = [split_of(r, fractions) for r in rows.columns["run_id"]]
        order = np.lexsort((rows.columns["epoch"], rows.columns["run_id"]))
        table = with_metadata(to_table(rows, order, splits), rows.layout)
        files, counts = {}, {}
        for split in sorted(set(splits)):
            part = table.filter(pa.compute.equal(table["split"], split)).drop_columns(["split"])
            files[split] = write_parquet_files(folder, name, split, part)
            counts[split] = part.num_rows
        table = table.drop_columns(["split"])
        summary[name] = {"rows": rows, "table": table, "files": files, "counts": counts}
    layouts = {name: s["rows"].layout.to_dict() for name, s in summary.items()}
    atomic_write_bytes(folder / "layout.json", json.dumps(layouts, indent=1).encode())
    atomic_write_bytes(folder / "recipe.yaml", recipe.to_yaml().encode())
    card = render_card(recipe, summary, folder, column_docs=LANDSCAPE_DOCS)
    atomic_write_bytes(folder / "README.md", card.encode())
    return folder


def landscape_rows(recipe: Recipe, out_dir: Path) -> list[dict]:
    """The landscape rows of the recipe's current landscape plan (stale settings are ignored)."""
    settings = recipe.resolved["landscape"]
    if not settings["metrics"]:
        return []
    wanted = {b.batch_id for b in plan_landscape(expand_recipe(recipe), settings,
                                                  recipe.execution["population_size"])}  # fmt: skip
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


def draw_figures(configs: dict[str, ConfigRows], recipe: Recipe, folder: Path) -> list[Path]:
    """Phase diagrams over the first two grid axes at the last annotated epoch, one per metric
    over the rows of every config (an axis such as ``model.width`` spans configs)."""
    grid = list(recipe.resolved["grid"])
    if not recipe.resolved["landscape"]["metrics"] or not grid:
        return []
    x, y = (grid[0], grid[1]) if len(grid) > 1 else (grid[0], "seed")
    rows = [
        {k: v[i] for k, v in part.columns.items()}
        for part in configs.values()
        for i in range(len(part.weights))
    ]
    epochs = [r["epoch"] for r in rows if r.get("probe_loss") is not None]
    return plot_metrics(rows, x, y, max(epochs), folder / "images", "") if epochs else []


def status_counts(table: pa.Table) -> Counter:
    return Counter(table["status"].to_pylist())


def load_layout(folder: str | Path, config: str | None = None) -> Layout:
    """The layout of one config of a built dataset folder (the only config if ``None``)."""
    path = Path(folder) / "layout.json"
    try:
        layouts = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise BuildError(f"{path} not found: is {folder} a zoo dataset folder?") from err
    if config is None and len(layouts) == 1:
        config = next(iter(layouts))
    if config not in layouts:
        raise BuildError(f"{path}: no config {config!r}; configs: {sorted(layouts)}")
    return Layout.from_dict(layouts[config])
