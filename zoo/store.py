"""The store: shards on disk and the manifest that says which of them are done.

A shard is complete or absent: every shard is written to a sibling temp file, fsynced and
renamed onto its final name, so a crash leaves the old file or the new one, never a partial.
The manifest (``manifest.jsonl``, one :class:`ShardRecord` per line) is the only source of
truth for "done": a shard on disk that no record names (a kill between write and append) is
an orphan and is recomputed on the next run. Only the driver process appends to the manifest.

The output folder may also be an fsspec URL (``s3://bucket/zoo``, ``memory://zoo``), so
cluster workers can write to shared storage. What "complete or absent" rests on there:

- local disk (a path or ``file://``): temp file + fsync + rename, as above;
- object stores (``s3``, ``gs``/``gcs``, ``az``/``abfs``, ``oss``, ``oci``) and ``memory``: one
  put of the whole object, which readers see whole or not at all (``memory`` lives in one
  process only, so it suits in-process runs and tests, not worker processes);
- other filesystems (``sftp``, ``hdfs``, ``smb``, …): a temp name then ``fs.mv``, atomic where
  the server's rename is; no fsync.
The manifest is rewritten whole on remote stores (they have no append); only the driver writes it.

No pickle anywhere: tensors go to safetensors, tables to Parquet, records to JSON lines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import safetensors.torch
import torch
from safetensors import safe_open

from . import SCHEMA_VERSION, __version__
from .errors import StoreError
from .ids import MANIFEST, shard_path

log = logging.getLogger(__name__)

SHARD_EXTS = ("safetensors", "parquet")
HASH_CHUNK = 1 << 20
VERIFY_HINT = "run `zoo verify OUT` to list the damaged shards"
RECOMPUTE_HINT = "run `zoo verify OUT --repair`, then `zoo run` again to recompute it"


@dataclass(frozen=True)
class ShardRecord:
    """The receipt a worker task returns after writing one shard; one line of the manifest.

    Attributes:
        path: shard path relative to the output folder, e.g. ``shards/train/b0123.safetensors``.
        stage: pipeline stage that wrote it (``train``, ``landscape``, …).
        batch_id: population batch the shard holds.
        run_ids: runs with at least one checkpoint in the shard (first-appearance order).
        checkpoint_ids: checkpoints in the shard.
        rows: number of rows (checkpoints) in the shard.
        bytes: file size in bytes.
        sha256: hex sha256 of the file's bytes.
        zoo_version: ``zoo.__version__`` of the writer.
        schema_version: ``zoo.SCHEMA_VERSION`` of the writer.
        created: ISO-8601 UTC time of the write.
    """

    path: str
    stage: str
    batch_id: str
    run_ids: tuple[str, ...]
    checkpoint_ids: tuple[str, ...]
    rows: int
    bytes: int
    sha256: str
    zoo_version: str
    schema_version: int
    created: str

    @property
    def ext(self) -> str:
        """File extension without the dot: ``safetensors`` or ``parquet``."""
        return self.path.rsplit(".", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {
            "path": self.path,
            "stage": self.stage,
            "batch_id": self.batch_id,
            "run_ids": list(self.run_ids),
            "checkpoint_ids": list(self.checkpoint_ids),
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "zoo_version": self.zoo_version,
            "schema_version": self.schema_version,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardRecord:
        """Inverse of :meth:`to_dict`; unknown keys are ignored so newer writers stay readable.

        Args:
            d: a dict as written by :meth:`to_dict`.

        Returns:
            The record. Raises ``KeyError``/``TypeError``/``ValueError`` on a malformed dict.
        """
        if isinstance(d.get("run_ids"), str) or isinstance(d.get("checkpoint_ids"), str):
            raise TypeError("run_ids and checkpoint_ids must be lists of str")
        return cls(
            path=str(d["path"]),
            stage=str(d["stage"]),
            batch_id=str(d["batch_id"]),
            run_ids=tuple(str(x) for x in d["run_ids"]),
            checkpoint_ids=tuple(str(x) for x in d["checkpoint_ids"]),
            rows=int(d["rows"]),
            bytes=int(d["bytes"]),
            sha256=str(d["sha256"]),
            zoo_version=str(d["zoo_version"]),
            schema_version=int(d["schema_version"]),
            created=str(d["created"]),
        )


@dataclass(frozen=True)
class Problem:
    """One finding of :meth:`Manifest.verify`.

    Attributes:
        path: shard path relative to the output folder.
        kind: ``missing``, ``truncated``, ``size``, ``corrupt`` or ``orphan``.
        detail: a human sentence saying what is wrong and how to fix it.
    """

    path: str
    kind: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready dict."""
        return {"path": self.path, "kind": self.kind, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Problem:
        """Inverse of :meth:`to_dict`.

        Args:
            d: a dict as written by :meth:`to_dict`.

        Returns:
            The problem.
        """
        return cls(path=str(d["path"]), kind=str(d["kind"]), detail=str(d["detail"]))


# --------------------------------------------------------------------------- files


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so big shards are never loaded whole.

    Args:
        path: the file.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- locations

# Stores where one put writes a whole object or nothing (memory: a dict entry of this process).
WHOLE_OBJECT_PROTOCOLS = frozenset(
    {"memory", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "oci"}
)
# "proto://rest", and also "proto:/rest": what pathlib.Path makes of a URL
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/+(.*)$", re.DOTALL)


def _url_parts(location: str | os.PathLike) -> tuple[str, str] | None:
    """``(protocol, rest)`` of an fsspec URL (``None`` for a plain path or a drive letter)."""
    m = _URL.match(os.fspath(location))
    if m is None or m[1].lower() not in fsspec.available_protocols():
        return None
    return m[1].lower(), m[2]


def is_remote(location: str | os.PathLike) -> bool:
    """Whether ``location`` is an fsspec URL other than ``file://`` (i.e. not on local disk)."""
    parts = _url_parts(location)
    return parts is not None and parts[0] not in ("file", "local")


def store_location(location: str | os.PathLike) -> str:
    """Canonical text of an output folder: the URL of a remote store, else a local path.

    ``file:///x`` becomes ``/x``; ``memory:/zoo`` (a URL that went through ``pathlib``) becomes
    ``memory://zoo``. Tasks receive this text, so every worker resolves the same place.

    Example:
        >>> store_location("file:///tmp/zoo"), store_location("memory:/zoo")
        ('/tmp/zoo', 'memory://zoo')
    """
    parts = _url_parts(location)
    if parts is None:
        return os.fspath(location)
    if parts[0] in ("file", "local"):
        return "/" + parts[1]
    return f"{parts[0]}://{parts[1]}"


def _remote(location: str | os.PathLike) -> tuple[fsspec.AbstractFileSystem, str] | None:
    """``(filesystem, path in it)`` for a remote location, ``None`` for local disk."""
    if not is_remote(location):
        return None
    try:
        return fsspec.core.url_to_fs(store_location(location))
    except (ImportError, ValueError) as e:
        raise StoreError(
            f"{store_location(location)}: cannot open this fsspec URL ({e}); install the "
            "filesystem's package (e.g. `pip install s3fs` for s3://) or use a local folder"
        ) from e


def _put(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write a whole remote file: one put on object stores, else a temp name and a move."""
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & WHOLE_OBJECT_PROTOCOLS:
        fs.pipe_file(path, data)
        return
    parent, _, name = path.rpartition("/")
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    fs.pipe_file(tmp, data)
    fs.mv(tmp, path)


def read_bytes(location: str | os.PathLike) -> bytes:
    """The bytes of a file on local disk or in a remote store (``FileNotFoundError`` if absent)."""
    remote = _remote(location)
    if remote is None:
        return Path(store_location(location)).read_bytes()
    fs, path = remote
    return fs.cat_file(path)


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry so a rename survives a power loss (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        # Some platforms/filesystems refuse fsync on directories; the rename is still atomic.
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves either the old file or the new one.

    The bytes go to a unique sibling temp file (same directory, so the rename stays on one
    filesystem), which is fsynced and renamed onto ``path``; then the directory is fsynced.
    Parent directories are created. On failure the temp file is removed. ``path`` may be an
    fsspec URL; see the module docstring for what each kind of store guarantees.

    Args:
        path: final location.
        data: the full content.

    Returns:
        None. Raises :class:`StoreError` if the file cannot be written.
    """
    remote = _remote(path)
    if remote is not None:
        try:
            _put(*remote, data)
        except OSError as e:
            raise StoreError(f"{store_location(path)}: could not write the file ({e})") from e
        return
    path = Path(store_location(path))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        # Never leave a partial temp file behind, whatever interrupted us.
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, StoreError):
            raise StoreError(
                f"{path}: could not write the file ({e}); check free disk space and "
                "permissions of the output folder, then run again"
            ) from e
        raise
    _fsync_dir(path.parent)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_name(what: str, value: str) -> None:
    # Stage and batch id become path components: refuse anything that could escape shards/.
    if not value or "/" in value or "\\" in value or value.startswith("."):
        raise StoreError(
            f"invalid {what} {value!r} for a shard path: use a non-empty name without "
            "'/', '\\' or a leading '.'"
        )


def _record(
    out_dir: Path, rel: str, stage: str, batch: str, run_ids, checkpoint_ids, rows: int, data: bytes
) -> ShardRecord:
    """Write ``data`` atomically at ``out_dir/rel`` and return its receipt."""
    atomic_write_bytes(out_dir / rel, data)
    return ShardRecord(
        path=rel,
        stage=stage,
        batch_id=batch,
        # A run appears once even if the caller passed one run id per checkpoint.
        run_ids=tuple(dict.fromkeys(str(r) for r in run_ids)),
        checkpoint_ids=tuple(str(c) for c in checkpoint_ids),
        rows=rows,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        zoo_version=__version__,
        schema_version=SCHEMA_VERSION,
        created=_now(),
    )


def _existing(out_dir: str | os.PathLike, path: str) -> Path:
    full = Path(out_dir) / path
    remote = _remote(full)
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
    data = safetensors.torch.save(_prepare_tensors(tensors), metadata=meta)
    ckpts = tuple(checkpoint_ids)
    return _record(Path(out_dir), rel, stage, batch_id, run_ids, ckpts, len(ckpts), data)


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
            return safetensors.torch.load(data), dict(header.get("__metadata__") or {})
        with safe_open(store_location(full), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:
        raise StoreError(
            f"{full}: cannot read the safetensors shard ({e}); {VERIFY_HINT}, then {RECOMPUTE_HINT}"
        ) from e
    return tensors, metadata


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
    return _record(
        Path(out_dir), rel, stage, batch_id, run_ids, checkpoint_ids, table.num_rows, data
    )


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


# --------------------------------------------------------------------------- manifest


class Manifest:
    """The append-only list of completed shards, ``<out_dir>/manifest.jsonl``.

    Only one process (the driver) appends. Reading tolerates a torn last line (a kill during
    :meth:`append`); the next append cuts that torn tail off before writing. ``out_dir`` may be
    an fsspec URL: there each append rewrites the file whole (object stores cannot append).
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(store_location(out_dir))
        self.path = self.out_dir / MANIFEST
        self._fs = _remote(self.out_dir)  # (filesystem, root) of a remote store, else None

    def _cut_torn_tail(self) -> None:
        """Drop bytes after the last newline (a torn append) so new lines start clean."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        log.warning("%s: dropping a torn last line (%d bytes)", self.path, len(data) - keep)
        with open(self.path, "r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())

    def append(self, records: Iterable[ShardRecord]) -> None:
        """Append records, one JSON object per line, with one write then an fsync.

        Args:
            records: receipts of shards already written (write first, then append).

        Returns:
            None. Raises :class:`StoreError` if the manifest cannot be written.
        """
        lines = [json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in records]
        if not lines:
            return
        payload = "".join(lines).encode()
        if self._fs is not None:
            self._append_remote(payload)
            return
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            self._cut_torn_tail()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(payload)
                while view:  # os.write may write less than asked; finish the same lines
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise StoreError(
                f"{self.path}: could not append to the manifest ({e}); check free disk space "
                "and permissions, then run again (shards already written are recomputed)"
            ) from e
        if created:
            _fsync_dir(self.out_dir)

    def _append_remote(self, payload: bytes) -> None:
        try:
            data = read_bytes(self.path)
        except FileNotFoundError:
            data = b""
        atomic_write_bytes(self.path, data[: data.rfind(b"\n") + 1] + payload)

    def _parse(self, text: str, lineno: int, last: bool) -> ShardRecord | None:
        """One line -> record; ``None`` for a blank or torn last line."""
        if not text.strip():
            return None
        try:
            return ShardRecord.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            if last:
                log.warning("%s: ignoring a torn last line %d", self.path, lineno)
                return None
            raise StoreError(
                f"{self.path}: line {lineno} is not a valid shard record ({e}); fix or delete "
                f"that line, then run `zoo verify {self.out_dir}`"
            ) from e

    def records(self, stage: str | None = None) -> list[ShardRecord]:
        """All records (optionally of one stage), de-duplicated by path, the last one winning.

        Args:
            stage: keep only this stage; ``None`` keeps all.

        Returns:
            Records in order of first appearance of their path.
        """
        try:
            data = read_bytes(self.path)
        except FileNotFoundError:
            return []
        lines = data.decode("utf-8", errors="replace").split("\n")
        while lines and not lines[-1].strip():
            lines.pop()
        by_path: dict[str, ShardRecord] = {}
        for i, text in enumerate(lines):
            rec = self._parse(text, i + 1, last=i == len(lines) - 1)
            if rec is not None:
                by_path[rec.path] = rec  # updating a key keeps its first position
        return [r for r in by_path.values() if stage is None or r.stage == stage]

    def _by_ext(self, stage: str, exts: tuple[str, ...], key) -> set[str]:
        """Ids (from ``key(record)``) present in a shard of every ext in ``exts``."""
        if not exts:
            return set()
        found: dict[str, set[str]] = {ext: set() for ext in exts}
        for rec in self.records(stage):
            if rec.ext in found:
                found[rec.ext].update(key(rec))
        return set.intersection(*found.values())

    def done_run_ids(self, stage: str, exts: tuple[str, ...] = SHARD_EXTS) -> set[str]:
        """Run ids recorded for ``stage`` in a shard of every extension in ``exts``.

        Args:
            stage: pipeline stage.
            exts: the shard kinds a finished batch of that stage has.

        Returns:
            The run ids that are done (a batch missing one of its shards is not).
        """
        return self._by_ext(stage, exts, lambda r: r.run_ids)

    def done_batch_ids(self, stage: str, exts: tuple[str, ...] = SHARD_EXTS) -> set[str]:
        """Batch ids recorded for ``stage`` in a shard of every extension in ``exts``.

        Args:
            stage: pipeline stage.
            exts: the shard kinds a finished batch of that stage has.

        Returns:
            The batch ids that are done.
        """
        return self._by_ext(stage, exts, lambda r: (r.batch_id,))

    def _size(self, rel: str) -> int | None:
        """Bytes of a file of the store, ``None`` if it is not there (or not a file)."""
        if self._fs is not None:
            fs, root = self._fs
            full = f"{root}/{rel}"
            return fs.size(full) if fs.isfile(full) else None
        full = self.out_dir / rel
        return full.stat().st_size if full.is_file() else None

    def _sha256(self, rel: str) -> str:
        if self._fs is not None:
            return hashlib.sha256(read_bytes(self.out_dir / rel)).hexdigest()
        return sha256_file(self.out_dir / rel)

    def _shard_files(self) -> list[str]:
        """Paths (relative to the output folder) of every file under ``shards/``, sorted."""
        if self._fs is not None:
            fs, root = self._fs
            base = f"{root}/shards"
            found = fs.find(base) if fs.exists(base) else []
            return sorted(f"shards/{p[len(base) :].lstrip('/')}" for p in found)
        shards = self.out_dir / "shards"
        files = (p for p in shards.rglob("*") if p.is_file())
        return sorted(p.relative_to(self.out_dir).as_posix() for p in files)

    def _check(self, rec: ShardRecord) -> Problem | None:
        """Compare one recorded shard with the file on disk."""
        size = self._size(rec.path)
        if size is None:
            return Problem(rec.path, "missing", f"recorded but not on disk; {RECOMPUTE_HINT}")
        if size != rec.bytes:
            kind = "truncated" if size < rec.bytes else "size"
            detail = f"expected {rec.bytes} bytes, found {size}; {RECOMPUTE_HINT}"
            return Problem(rec.path, kind, detail)
        digest = self._sha256(rec.path)
        if digest != rec.sha256:
            detail = f"expected sha256 {rec.sha256[:12]}… got {digest[:12]}…; {RECOMPUTE_HINT}"
            return Problem(rec.path, "corrupt", detail)
        return None

    def verify(self) -> list[Problem]:
        """Check every recorded shard (exists, size, sha256) and list unrecorded ones.

        Returns:
            Problems, recorded shards first (manifest order), then orphans (sorted by path);
            ``[]`` for a clean store.
        """
        records = self.records()
        problems = [p for p in map(self._check, records) if p is not None]
        known = {r.path for r in records}
        for rel in self._shard_files():
            if rel in known:
                continue
            detail = (
                "on disk but not in the manifest (a run was stopped between writing it and "
                "recording it); it is recomputed on the next run, and is safe to delete"
            )
            problems.append(Problem(rel, "orphan", detail))
        return problems

    def drop(self, paths: Iterable[str]) -> int:
        """Forget the records of ``paths`` (atomic rewrite), so their batches run again.

        Returns:
            how many records were dropped.
        """
        paths = set(paths)
        records = self.records()
        keep = [r for r in records if r.path not in paths]
        lines = "".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in keep)
        atomic_write_bytes(self.path, lines.encode())
        return len(records) - len(keep)
