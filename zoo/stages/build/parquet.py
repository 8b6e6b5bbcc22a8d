"""Parquet: a build part's rows as a typed Arrow table, written as viewer-friendly Parquet files.

:func:`build_part` is the build's task: it reads one train shard pair (checking each file's
sha256 against the manifest as it reads it, one pass), makes the rows of its checkpoints, and
writes them, one config and split at a time, as ``data/<config>/<split>-<batch>-<k>.parquet``.
The weights never become Python objects: they go from the safetensors bytes to one ``(N, P)``
float32 array and into a fixed-length list column. Files and row groups stay under the sizes
the Hub's dataset viewer reads (:data:`FILE_BYTES`, :data:`ROW_GROUP_BYTES`, uncompressed).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zoo import SCHEMA_VERSION, __version__
from zoo.naming import DATASET_DIR, data_file, resource, tensor_name
from zoo.recipe import SECTIONS, recipe_schema
from zoo.store.shards import read_verified, write_file

# Viewer-friendly Parquet (issue 5): the dataset viewer wants row groups <= 100 MB and files
# <= 500 MB; both limits are taken on uncompressed bytes, so compressed files are smaller still.
ROW_GROUP_BYTES = 64 * 2**20
FILE_BYTES = 400 * 2**20
COMPRESSION = "zstd"
# zstd level 1, not pyarrow's default 3: the same size on weights (Parquet / raw, CNN-s zoo:
# 0.559 either way with BYTE_STREAM_SPLIT) and 1.25-2.8x faster to write (201 vs 160 MB/s; PLAIN
# 179 vs 64 MB/s), measured on shipped zoos; the build's cost is mostly this encoding.
COMPRESSION_LEVEL = 1
# float32 weights compress poorly. BYTE_STREAM_SPLIT regroups their bytes by significance so zstd
# finds the repeated sign/exponent bytes (measured, Parquet / raw float32: 0.75 vs 0.83 PLAIN on
# the quickstart MLPs), but PLAIN keeps whole floats together and wins where consecutive
# checkpoints share many exact weights (cnn_small/Adam, 28% unchanged from the previous
# checkpoint: 0.72 vs 0.79). Each file takes whichever encodes its first row group smaller
# (benchmarks/load_throughput.py).
WEIGHTS_ENCODINGS = ("BYTE_STREAM_SPLIT", "PLAIN")
# rows of a file's start on which the encodings are tried before it is written once: trying the
# whole first row group doubled the build's cost; 64 rows pick the same encoding on the shipped
# zoos (benchmarks/build_throughput.py, load_throughput.py)
ENCODING_SAMPLE_ROWS = 64
STAGE = "build"  # the manifest stage of the dataset's data files
# Row groups follow the rows' order (split, epoch, step, grid coordinates, seed): a new group
# starts where the checkpoint (epoch, step) changes once the group holds this many bytes, so
# the groups' statistics let a filtered read (zoo.load(where=...)) skip the other epochs, while
# small zoos keep one group per file (issue 17; benchmarks/load_throughput.py).
MIN_ROW_GROUP_BYTES = 2**20

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


def hyperparameter_type(column: str, values: list) -> pa.DataType:
    """Arrow type of a ``<section>__<key>`` column, from the recipe schema (so a key is typed
    the same in every zoo), else inferred from its values."""
    section, _, name = column.partition("__")
    prop = recipe_schema()["properties"].get(section, {}).get("properties", {}).get(name)
    if prop is None or ("type" not in prop and "enum" not in prop):
        return pa.array(values).type
    if "enum" in prop:
        return pa.string()
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    first = next(t for t in types if t != "null")
    if first == "array":
        return pa.list_(_JSON_TO_ARROW[prop["items"]["type"]])
    return _JSON_TO_ARROW[first]


# --- the task -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildPart:
    """The rows one train shard pair gives one config: a task of the build.

    Attributes:
        part_id: ``D`` + a hash of everything the part's files depend on.
        config: the config name; train_batch: the train batch (it names the files).
        weights, metrics: the shards' records (paths and sha256).
        checkpoints: the checkpoint ids to take from these shards.
        placement: run_id -> ``[split, sort key]`` (the sort key orders rows within a file).
        landscape: checkpoint_id -> its landscape and phase columns.
        schema: the config's columns (serialized Arrow schema, hex).
    """

    part_id: str
    config: str
    train_batch: str
    weights: dict
    metrics: dict
    checkpoints: tuple[str, ...]
    placement: dict = field(default_factory=dict)
    landscape: dict = field(default_factory=dict)
    schema: str = ""

    @property
    def batch_id(self) -> str:
        """The part's id, as a stage's batch (zoo.dist.run.run_stage) is named."""
        return self.part_id

    @property
    def runs(self) -> tuple[str, ...]:
        """The run ids of the part."""
        return tuple(self.placement)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> BuildPart:
        return cls(**{**d, "checkpoints": tuple(d["checkpoints"])})


def build_part(part: dict, out_dir: str, options: dict) -> list[dict]:
    """The build's task: one part's rows -> its Parquet files; returns their receipts (stage
    ``build``, paths relative to ``out_dir``)."""
    part = BuildPart.from_dict(part)
    schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(part.schema)))
    table, bounds = part_table(part, out_dir, schema)
    encoding = None if len(bounds) == 1 else choose_encoding(table)[0]  # once for all splits
    records = []
    for split, (start, stop) in bounds.items():
        rows = table.slice(start, stop - start)  # a view: rows are grouped by split
        for rel, data in encode_files(part.config, split, part.train_batch, rows, encoding):
            ids = rows["run_id"].to_pylist(), rows["checkpoint_id"].to_pylist()
            records.append(
                write_file(out_dir, f"{DATASET_DIR}/{rel}", STAGE, part.part_id, *ids, data)
            )
    return [r.to_dict() for r in records]


def part_table(part, out_dir: str, schema: pa.Schema) -> tuple[pa.Table, dict[str, tuple]]:
    """The part's rows, typed by ``schema``: grouped by split, then ordered by epoch, step and
    the runs' sort keys; and each split's ``(start, stop)`` rows."""
    from safetensors.numpy import load as load_tensors

    metrics = pq.read_table(pa.BufferReader(read_verified(out_dir, part.metrics)))
    data = read_verified(out_dir, part.weights)  # one read: checked, then parsed
    names = json.loads(_metadata(data)["layout"])["names"]
    tensors = load_tensors(data)
    del data
    wanted = set(part.checkpoints)
    rows = [r for r in metrics.to_pylist() if r["checkpoint_id"] in wanted]
    place = part.placement
    rows.sort(key=lambda r: (place[r["run_id"]][0], r["epoch"], r["step"], place[r["run_id"]][1]))
    columns = {f.name: [] for f in schema if f.name != "weights"}
    for row in rows:
        full = _full_row(row, part.landscape.get(row["checkpoint_id"], {}))
        for name, values in columns.items():
            values.append(full.get(name))
    arrays = [_array(values, schema.field(name).type) for name, values in columns.items()]
    p = schema.field("weights").type.list_size
    flat = np.empty((len(rows), p), dtype=np.float32)  # (N, P), filled in place: one copy
    for i, row in enumerate(rows):
        _fill(flat[i], tensors, row["checkpoint_id"], names)
    weights = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), pa.float32()), p)
    table = pa.Table.from_arrays([*arrays, weights], schema=schema.remove_metadata())
    bounds: dict[str, tuple[int, int]] = {}
    for i, row in enumerate(rows):
        start, _ = bounds.get(place[row["run_id"]][0], (i, i))
        bounds[place[row["run_id"]][0]] = (start, i + 1)
    return table.replace_schema_metadata(table_metadata(table)), bounds


def _full_row(row: dict, landscape: dict) -> dict:
    """A train-shard row with its run's config, seed, gaps and landscape columns added."""
    config = json.loads(row["run_config"])
    out = {k: v for k, v in row.items() if k not in ("run_config", "batch_id")}
    for section in SECTIONS:
        for key, value in config[section].items():
            out[f"{section}__{key}"] = value
    out["seed"] = config["seed"]
    if "train_loss" in out:
        out["gen_gap_loss"] = out["test_loss"] - out["train_loss"]
    if "train_acc" in out:
        out["gen_gap_acc"] = out["train_acc"] - out["test_acc"]
    return out | landscape


def _fill(out: np.ndarray, tensors: dict, ckpt: str, names: list[str]) -> None:
    """One checkpoint's flat vector written into ``out`` (its parameters in layout order)."""
    start = 0
    for name in names:
        value = tensors[tensor_name(ckpt, name)].reshape(-1)
        out[start : start + len(value)] = value
        start += len(value)


def _metadata(data: bytes) -> dict:
    size = int.from_bytes(data[:8], "little")
    return dict(json.loads(data[8 : 8 + size]).get("__metadata__") or {})


def _array(values: list, kind: pa.DataType) -> pa.Array:
    """A column as every ``datasets`` format and the default DataLoader collate read it:
    booleans stored as int8 are 1/0 (null: NaN in torch), fixed-length lists are NaN-filled and
    text is "" where absent (a null list, or a batch whose first text is null, stops them); a
    null number stays null (NaN in torch)."""
    if pa.types.is_fixed_size_list(kind):
        n = kind.list_size
        filled = [v if v is not None else [math.nan] * n for v in values]
        flat = np.asarray(filled, dtype=np.float64).reshape(-1)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, kind.value_type), n)
    if pa.types.is_int8(kind):
        values = [None if v is None else int(v) for v in values]
    elif pa.types.is_string(kind):
        values = ["" if v is None else v for v in values]
    return pa.array(values, type=kind)


def table_metadata(table: pa.Table) -> dict:
    """``datasets``' Features (weights: a fixed-length float32 list) and zoo's versions."""
    features = datasets.Features.from_arrow_schema(table.schema)
    zoo = {"zoo_version": __version__, "schema_version": SCHEMA_VERSION}
    return {
        b"huggingface": json.dumps({"info": {"features": features.to_dict()}}).encode(),
        b"zoo": json.dumps(zoo).encode(),
    }


# --- writing ------------------------------------------------------------------------------------


def encode_files(
    config: str, split: str, part: str, table: pa.Table, weights_encoding: str | None = None
) -> list[tuple[str, bytes]]:
    """One part's rows of one split as viewer-friendly Parquet files: ``[(path, bytes)]``.

    Files hold at most ``FILE_BYTES`` and row groups at most ``ROW_GROUP_BYTES`` of the table
    (uncompressed), zstd-compressed. Float list columns (``weights``) are written without
    dictionary or statistics (min/max of a weight vector's elements help no reader), with
    ``weights_encoding``, or (``None``) the one of ``WEIGHTS_ENCODINGS`` that encodes the file's
    first ``ENCODING_SAMPLE_ROWS`` rows smallest (:func:`choose_encoding`).
    """
    per_file = max(1, FILE_BYTES // _row_bytes(table))
    count = max(1, -(-table.num_rows // per_file))
    out = []
    for i in range(count):
        rows, name = table.slice(i * per_file, per_file), data_file(config, split, part, i)
        encoding, data = weights_encoding, None
        if encoding is None:
            encoding, data = choose_encoding(rows)
        out.append((name, (data or _encode(rows, encoding)).to_pybytes()))
    return out


def choose_encoding(table: pa.Table) -> tuple[str, pa.Buffer | None]:
    """The one of ``WEIGHTS_ENCODINGS`` that encodes the table's first ``ENCODING_SAMPLE_ROWS``
    rows smallest (PLAIN without float lists), and the encoded table where those rows are all
    of it (else None: the sample's bytes are not the file's)."""
    if not _float_lists(table):
        return "PLAIN", None
    per_group = max(1, ROW_GROUP_BYTES // _row_bytes(table))
    sample = table.slice(0, min(per_group, ENCODING_SAMPLE_ROWS))
    tried = {e: _encode(sample, e) for e in WEIGHTS_ENCODINGS}
    best = min(WEIGHTS_ENCODINGS, key=lambda e: tried[e].size)
    return best, tried[best] if sample.num_rows == table.num_rows else None


def _row_bytes(table: pa.Table) -> int:
    return max(1, table.nbytes // max(1, table.num_rows))


def _float_lists(table: pa.Table) -> list[str]:
    return [
        f.name
        for f in table.schema
        if (pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type))
        and pa.types.is_floating(f.type.value_type)
    ]


def _encode(rows: pa.Table, encoding: str) -> pa.Buffer:
    """One file's bytes: float lists in ``encoding`` without dictionary or statistics, the rest
    with both; row groups by :func:`row_groups`."""
    row_bytes = _row_bytes(rows)
    per_group = max(1, min(FILE_BYTES // row_bytes, ROW_GROUP_BYTES // row_bytes))
    floats = _float_lists(rows)
    others = [n for n in rows.column_names if n not in floats]
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(
        sink,
        rows.schema,
        compression=COMPRESSION,
        compression_level=COMPRESSION_LEVEL,
        use_dictionary=others,
        write_statistics=others,
        column_encoding={f"{n}.list.element": encoding for n in floats},
    ) as writer:
        for start, stop in row_groups(rows, per_group, row_bytes):
            writer.write_table(rows.slice(start, stop - start), row_group_size=max(1, stop - start))
    return sink.getvalue()


def row_groups(table: pa.Table, per_group: int, row_bytes: int) -> list[tuple[int, int]]:
    """A file's row groups as ``(start, stop)`` rows: at most ``per_group`` rows each, and a new
    one where the checkpoint (``epoch``, ``step``) changes once a group holds
    ``MIN_ROW_GROUP_BYTES``."""
    n = table.num_rows
    cuts: list[int] = []
    if {"epoch", "step"} <= set(table.column_names) and n > 1:
        key = np.stack(
            [
                table["epoch"].to_numpy(zero_copy_only=False),
                table["step"].to_numpy(zero_copy_only=False),
            ],
            axis=1,
        )
        cuts = list(1 + np.flatnonzero((key[1:] != key[:-1]).any(axis=1)))
    least = max(1, MIN_ROW_GROUP_BYTES // row_bytes)
    bounds, start = [], 0
    for cut in [*cuts, n]:
        while cut - start > per_group:  # a long stretch of one checkpoint: cap the groups
            bounds.append((start, start + per_group))
            start += per_group
        if cut - start >= least or cut == n:
            bounds.append((start, cut))
            start = cut
    return [b for b in bounds if b[1] > b[0]] or [(0, n)]


def write_parquet_files(
    folder: Path, config: str, split: str, table: pa.Table, weights_encoding: str | None = None
) -> list[str]:
    """:func:`encode_files` written under ``folder`` (a dataset folder); returns the paths."""
    from zoo.store.fs import atomic_write_bytes

    paths = []
    for rel, data in encode_files(config, split, "p", table, weights_encoding):
        atomic_write_bytes(Path(folder) / rel, data)
        paths.append(rel)
    return paths
