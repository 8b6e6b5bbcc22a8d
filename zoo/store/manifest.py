"""The manifest: ``manifest.jsonl``, one :class:`ShardRecord` per line, the record of "done".

The manifest is the only source of truth for "done": a shard on disk that no record names (a
kill between write and append) is an orphan and is recomputed on the next run. Only the driver
process appends to the manifest; on a remote store (no append) it is rewritten whole.
:meth:`Manifest.verify` checks each recorded shard against its file (size, sha256) and reports
every finding as a :class:`Problem`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import StoreError
from zoo.naming import MANIFEST
from zoo.store.fs import (
    atomic_write_bytes,
    fsync_dir,
    read_bytes,
    remote_fs,
    sha256_file,
    store_location,
)

log = logging.getLogger(__name__)

SHARD_EXTS = ("safetensors", "parquet")
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


class Manifest:
    """The append-only list of completed shards, ``<out_dir>/manifest.jsonl``.

    Only one process (the driver) appends. Reading tolerates a torn last line (a kill during
    :meth:`append`); the next append cuts that torn tail off before writing. ``out_dir`` may be
    an fsspec URL: there each append rewrites the file whole (object stores cannot append).
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(store_location(out_dir))
        self.path = self.out_dir / MANIFEST
        self._fs = remote_fs(self.out_dir)  # (filesystem, root) of a remote store, else None

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
            fsync_dir(self.out_dir)

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

    def stored_checkpoints(self, stage: str, exts: tuple[str, ...] = SHARD_EXTS) -> set[str]:
        """Checkpoint ids recorded for ``stage`` in a shard of every extension in ``exts``: what
        the store holds (planning trains only the rest).

        Args:
            stage: pipeline stage.
            exts: the shard kinds a finished checkpoint of that stage has.

        Returns:
            The checkpoint ids.
        """
        return self._by_ext(stage, exts, lambda r: r.checkpoint_ids)

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
