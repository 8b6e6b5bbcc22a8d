"""Shards: tensors to safetensors, tables to Parquet, each written whole and returned as a receipt.

A shard is complete or absent: it is serialised in memory, then written once with
:func:`zoo.store.fs.atomic_write_bytes` (temp file, fsync, rename on local disk; one put on
object stores). Each writer returns the :class:`~zoo.store.manifest.ShardRecord` that the
driver appends to the :class:`~zoo.store.manifest.Manifest`; only then is the shard done.

No pickle anywhere: tensors go to safetensors, tables to Parquet, records to JSON lines.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from zoo import SCHEMA_VERSION, __version__
from zoo.errors import StoreError
from zoo.naming import shard_path
from zoo.store.fs import atomic_write_bytes, is_remote, read_bytes, remote_fs, store_location
from zoo.store.manifest import RECOMPUTE_HINT, VERIFY_HINT, ShardRecord


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_name(what: str, value: str) -> None:
    # Stage and batch id become path components: refuse anything that could escape shards/.
    if not value or "/" in value or "\\" in value or value.startswith("."):
        raise StoreError(
            f"invalid {what} {value!r} for a shard path: use a non-empty name without "
            "'/', '\\' or a leading '.'"
        )


def write_file(
    out_dir: str | os.PathLike,
    rel: str,
    stage: str,
    batch: str,
    run_ids,
    checkpoint_ids,
    data: bytes,
) -> ShardRecord:
    """Write ``data`` atomically at ``out_dir/rel`` and return its receipt (one row per
    checkpoint id)."""
    checkpoint_ids = tuple(str(c) for c in checkpoint_ids)
    atomic_write_bytes(Path(out_dir) / rel, data)
    return ShardRecord(
        path=rel,
        stage=stage,
        batch_id=batch,
        # A run appears once even if the caller passed one run id per checkpoint.
        run_ids=tuple(dict.fromkeys(str(r) for r in run_ids)),
        checkpoint_ids=checkpoint_ids,
        rows=len(checkpoint_ids),
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        zoo_version=__version__,
        schema_version=SCHEMA_VERSION,
        created=_now(),
    )


def read_verified(out_dir: str | os.PathLike, record: ShardRecord | dict) -> bytes:
    """A shard's bytes, checked against its receipt's size and sha256 in the same pass: what
    the build and the landscape publish from is never a damaged shard.

    Raises:
        StoreError: naming the file and ``zoo verify --repair`` as the way out.
    """
    rec = record if isinstance(record, ShardRecord) else ShardRecord.from_dict(record)
    full = _existing(out_dir, rec.path)
    data = read_bytes(full)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != rec.bytes or digest != rec.sha256:
        raise StoreError(
            f"{full}: the shard does not match the manifest ({len(data)} bytes, sha256 "
            f"{digest[:12]}…; recorded {rec.bytes} bytes, {rec.sha256[:12]}…): it is damaged. "
            f"Run `zoo verify {out_dir} --repair` to forget it, then `zoo run` to recompute it"
        )
    return data


def _existing(out_dir: str | os.PathLike, path: str) -> Path:
    full = Path(out_dir) / path
    remote = remote_fs(full)
    found = remote[0].isfile(remote[1]) if remote else Path(store_location(full)).is_file()
    if not found:
        raise StoreError(
            f"{full}: shard not found; {VERIFY_HINT}, then run `zoo run` again to recompute it"
        )
    return full


# --------------------------------------------------------------------------- tensor shards


def _prepare_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, detached, contiguous tensors that share no storage (safetensors refuses sharing)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        t = t.detach().to("cpu")
        storage = t.untyped_storage()
        shared = storage.data_ptr() in seen or storage.nbytes() != t.nbytes
        if shared or not t.is_contiguous():
            t = t.contiguous().clone()
        if t.nbytes:
            seen.add(t.untyped_storage().data_ptr())
        out[str(name)] = t
    return out


def write_tensor_shard(
    out_dir: str | os.PathLike,
    stage: str,
    batch_id: str,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str],
    run_ids: Iterable[str],
    checkpoint_ids: Iterable[str],
) -> ShardRecord:
    """Write a safetensors shard at ``shards/<stage>/<batch_id>.safetensors``, atomically.

    Args:
        out_dir: the output folder.
        stage: pipeline stage (``train``, …).
        batch_id: population batch id.
        tensors: name -> tensor; made CPU, contiguous and unshared before saving.
        metadata: str -> str; ``zoo_version`` and ``schema_version`` are added (and win).
        run_ids: runs in the shard.
        checkpoint_ids: checkpoints in the shard, one per row.

    Returns:
        The :class:`ShardRecord` to append to the manifest.
    """
    _check_name("stage", stage)
    _check_name("batch id", batch_id)
    rel = shard_path(stage, batch_id, "safetensors")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise StoreError(
                f"{rel}: metadata key {key!r} has a {type(value).__name__} value but "
                "safetensors metadata must map str to str; convert it (e.g. json.dumps) first"
            )
    meta = {**metadata, "zoo_version": __version__, "schema_version": str(SCHEMA_VERSION)}
    data = save_safetensors_bytes(_prepare_tensors(tensors), metadata=meta)
    ckpts = tuple(checkpoint_ids)
    return write_file(out_dir, rel, stage, batch_id, run_ids, ckpts, data)


def read_tensor_shard(
    out_dir: str | os.PathLike, path: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors shard written by :func:`write_tensor_shard`.

    Args:
        out_dir: the output folder.
        path: shard path relative to ``out_dir`` (as in :attr:`ShardRecord.path`).

    Returns:
        ``(tensors, metadata)``. Raises :class:`StoreError` if missing or unreadable.
    """
    full = _existing(out_dir, path)
    try:
        # safe_open memory-maps the file, so a big shard is not held twice in memory.
        if is_remote(full):
            data = read_bytes(full)
            header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
            return load_safetensors_bytes(data), dict(header.get("__metadata__") or {})
        with safe_open(store_location(full), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:
        raise StoreError(
            f"{full}: cannot read the safetensors shard ({e}); {VERIFY_HINT}, then {RECOMPUTE_HINT}"
        ) from e
    return tensors, metadata


def read_tensor_metadata(out_dir: str | os.PathLike, path: str) -> dict[str, str]:
    """The string metadata of a safetensors shard (the layout, the batch id…), from its header
    alone."""
    full = _existing(out_dir, path)
    try:
        if is_remote(full):
            fs, where = remote_fs(full)
            with fs.open(where, "rb") as f:
                size = int.from_bytes(f.read(8), "little")
                return dict(json.loads(f.read(size)).get("__metadata__") or {})
        with safe_open(store_location(full), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise StoreError(
            f"{full}: cannot read the safetensors header ({e}); {VERIFY_HINT}, "
            f"then {RECOMPUTE_HINT}"
        ) from e


def read_tensors(
    out_dir: str | os.PathLike, path: str, names: list[str]
) -> dict[str, torch.Tensor]:
    """Some tensors of a safetensors shard: on local disk only those are read (memory-mapped);
    from a remote store the shard is fetched whole."""
    full = _existing(out_dir, path)
    try:
        if is_remote(full):
            tensors = load_safetensors_bytes(read_bytes(full))
            return {name: tensors[name] for name in names}
        with safe_open(store_location(full), framework="pt") as f:
            return {name: f.get_tensor(name) for name in names}
    except Exception as e:
        raise StoreError(
            f"{full}: cannot read tensors of the shard ({e}); {VERIFY_HINT}, then {RECOMPUTE_HINT}"
        ) from e


# --------------------------------------------------------------------------- table shards


def _zoo_schema_json(rel: str, metadata: dict[str, Any] | None) -> bytes:
    """JSON for the ``zoo`` key of the Parquet schema metadata; names a non-JSON key."""
    meta = {**(metadata or {}), "zoo_version": __version__, "schema_version": SCHEMA_VERSION}
    for key, value in meta.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as e:
            raise StoreError(
                f"{rel}: metadata key {key!r} ({type(value).__name__}) is not JSON-serialisable; "
                "convert it to str, number, bool, list or dict first"
            ) from e
    return json.dumps(meta, sort_keys=True).encode()


def write_table_shard(
    out_dir: str | os.PathLike,
    stage: str,
    batch_id: str,
    table: pa.Table,
    run_ids: Iterable[str],
    checkpoint_ids: Iterable[str],
    metadata: dict[str, Any] | None = None,
) -> ShardRecord:
    """Write a zstd Parquet shard at ``shards/<stage>/<batch_id>.parquet``, atomically.

    Args:
        out_dir: the output folder.
        stage: pipeline stage.
        batch_id: population batch id.
        table: the rows; existing schema metadata (e.g. ``huggingface``) is kept.
        run_ids: runs in the shard.
        checkpoint_ids: checkpoints in the shard.
        metadata: JSON-serialisable extras stored with the versions under schema key ``zoo``.

    Returns:
        The :class:`ShardRecord` to append to the manifest (``rows = table.num_rows``).
    """
    _check_name("stage", stage)
    _check_name("batch id", batch_id)
    rel = shard_path(stage, batch_id, "parquet")
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[b"zoo"] = _zoo_schema_json(rel, metadata)
    table = table.replace_schema_metadata(schema_meta)
    # Serialise in memory first so the only disk write is the atomic one.
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    return write_file(out_dir, rel, stage, batch_id, run_ids, checkpoint_ids, data)


def read_table_shard(out_dir: str | os.PathLike, path: str) -> pa.Table:
    """Read a Parquet shard written by :func:`write_table_shard`.

    Args:
        out_dir: the output folder.
        path: shard path relative to ``out_dir``.

    Returns:
        The table, schema metadata included. Raises :class:`StoreError` if missing or corrupt.
    """
    full = _existing(out_dir, path)
    try:
        source = pa.BufferReader(read_bytes(full)) if is_remote(full) else store_location(full)
        with pq.ParquetFile(source) as f:
            return f.read()
    except Exception as e:
        raise StoreError(
            f"{full}: cannot read the Parquet shard ({e}); {VERIFY_HINT}, then {RECOMPUTE_HINT}"
        ) from e
