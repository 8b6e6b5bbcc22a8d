"""Files and locations of the store: local paths or fsspec URLs, read whole, written atomically.

An output folder is a local path or an fsspec URL (``s3://bucket/zoo``, ``memory://zoo``), so
cluster workers can write to shared storage. Every write here leaves a file complete or absent,
never partial. What that rests on:

- local disk (a path or ``file://``): a sibling temp file, fsynced and renamed onto the final
  name, then the directory fsynced, so a crash leaves the old file or the new one;
- object stores (``s3``, ``gs``/``gcs``, ``az``/``abfs``, ``oss``, ``oci``) and ``memory``: one
  put of the whole object, which readers see whole or not at all (``memory`` lives in one
  process only, so it suits in-process runs and tests, not worker processes);
- other filesystems (``sftp``, ``hdfs``, ``smb``, …): a temp name then ``fs.mv``, atomic where
  the server's rename is; no fsync.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path

import fsspec

from zoo.errors import StoreError

HASH_CHUNK = 1 << 20


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


def remote_fs(location: str | os.PathLike) -> tuple[fsspec.AbstractFileSystem, str] | None:
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


def filesystem(location: str | os.PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(filesystem, path in it)`` for any location: fsspec's local filesystem for a local
    path, the URL's for a remote one. Sizes, listings and removals go through it alike."""
    remote = remote_fs(location)
    if remote is not None:
        return remote
    return fsspec.filesystem("file"), os.path.abspath(store_location(location))


def open_file(location: str | os.PathLike):
    """A binary file object to read, local or remote (a context manager)."""
    fs, path = filesystem(location)
    return fs.open(path, "rb")


def file_size(location: str | os.PathLike) -> int | None:
    """Bytes of a file, ``None`` if it is not there."""
    fs, path = filesystem(location)
    return fs.size(path) if fs.isfile(path) else None


def list_files(location: str | os.PathLike) -> list[str]:
    """Every file under a folder, as paths relative to it (``[]`` if there is none), sorted."""
    fs, root = filesystem(location)
    if not fs.isdir(root):
        return []
    root = root.rstrip("/")
    return sorted(p[len(root) :].lstrip("/") for p in fs.find(root))


def remove(location: str | os.PathLike) -> None:
    """Delete a file or a folder tree if it is there."""
    fs, path = filesystem(location)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def read_bytes(location: str | os.PathLike) -> bytes:
    """The bytes of a file on local disk or in a remote store (``FileNotFoundError`` if absent)."""
    remote = remote_fs(location)
    if remote is None:
        return Path(store_location(location)).read_bytes()
    fs, path = remote
    return fs.cat_file(path)


def fsync_dir(directory: Path) -> None:
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
    remote = remote_fs(path)
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
    fsync_dir(path.parent)
