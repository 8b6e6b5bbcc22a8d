"""Parquet: the collected rows as typed Arrow tables, written as viewer-friendly Parquet files.

Column types come from ``schemas/checkpoint.features.json`` (the row schema, in ``datasets``'
Features JSON) and, for hyperparameter columns, from the recipe schema, so a column that is null
in every row is still typed; ``weights`` is a fixed-length float32 list. Files and row groups
stay under the sizes the Hub's dataset viewer reads (:data:`FILE_BYTES`, :data:`ROW_GROUP_BYTES`).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zoo import SCHEMA_VERSION, __version__
from zoo.layout import Layout
from zoo.naming import data_file, resource
from zoo.recipe import recipe_schema
from zoo.stages.build.collect import FIRST_COLUMNS, ConfigRows
from zoo.store.fs import atomic_write_bytes

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


_JSON_TO_ARROW = {
    "integer": pa.int64(),
    "number": pa.float64(),
    "string": pa.string(),
    "boolean": pa.bool_(),
}


@cache
def row_features() -> datasets.Features:
    """The columns every row has (``schemas/checkpoint.features.json``)."""
    spec = json.loads(resource("schemas", "checkpoint.features.json").read_text())
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
            }
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
        pq.write_table(
            part,
            sink,
            compression=COMPRESSION,
            row_group_size=per_group,
            use_dictionary=others,
            write_statistics=others,
            column_encoding={f"{n}.list.element": encoding for n in floats},
        )
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
