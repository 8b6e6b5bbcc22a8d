"""What ``push`` sends: the files of a built dataset folder, how the Hub identifies them, and the
plan that diffs them against the Hub's (pure functions: no Hub call here).

A file is identified as the Hub does it: size, sha256 for LFS files, git blob id for the others.
:func:`plan_push` uploads what differs and deletes remote build files the build no longer writes;
:func:`commit_chunks` splits the uploads into commits, the card/layout/recipe last.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .card import REPO_PLACEHOLDER
from .errors import HubError

META_FILES = ("README.md", "layout.json", "recipe.yaml")  # committed last
BUILD_FOLDERS = ("data/", "images/", "checkpoints/")  # the build owns these: stale files go
COMMIT_FILES = 200  # files per commit
COMMIT_BYTES = 20 * 2**30  # bytes per commit: a large zoo is pushed in several commits
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class FileState:
    """A file as the Hub identifies it: size, sha256 (LFS files) and git blob id."""

    path: str
    size: int
    sha256: str | None
    git_oid: str | None

    def same_as(self, other: FileState) -> bool:
        if self.size != other.size:
            return False
        if self.sha256 and other.sha256:
            return self.sha256 == other.sha256
        return bool(self.git_oid) and self.git_oid == other.git_oid


def file_state(path: str, data: bytes | Path) -> FileState:
    """Size, sha256 and git blob id of bytes or a file (read in 8 MiB blocks)."""
    size = len(data) if isinstance(data, bytes) else data.stat().st_size
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    for block in _blocks(data):
        sha256.update(block)
        sha1.update(block)
    return FileState(path, size, sha256.hexdigest(), sha1.hexdigest())


def _blocks(data: bytes | Path) -> Iterator[bytes]:
    if isinstance(data, bytes):
        yield data
        return
    with open(data, "rb") as f:
        while block := f.read(8 * 2**20):
            yield block


@dataclass(frozen=True)
class PushPlan:
    """What a push does: paths to upload, remote paths to delete, paths already on the Hub."""

    upload: tuple[str, ...]
    delete: tuple[str, ...]
    unchanged: tuple[str, ...]


def plan_push(local: dict[str, FileState], remote: dict[str, FileState]) -> PushPlan:
    """Upload what differs from the Hub; delete remote build files the build no longer has."""
    same = {p for p in local if p in remote and local[p].same_as(remote[p])}
    upload = tuple(p for p in sorted(local) if p not in same)
    unchanged = tuple(sorted(same))
    delete = tuple(p for p in sorted(remote) if p not in local and p.startswith(BUILD_FOLDERS))
    return PushPlan(upload, delete, unchanged)


def dataset_folder(path: str | Path) -> Path:
    """The built dataset folder in ``path`` (a zoo's output folder or the dataset folder)."""
    path = Path(path)
    for candidate in (path, path / "dataset"):
        if (candidate / "layout.json").is_file() and (candidate / "README.md").is_file():
            return candidate
    raise HubError(
        f"{path} is not a built zoo: no layout.json and README.md in it or in {path / 'dataset'};"
        " build it first with `zoo build OUT` (or `zoo run RECIPE`)"
    )


def local_files(folder: Path, repo_id: str, progress: Progress | None = None) -> dict:
    """Path in repo -> (FileState, source): every file of the folder except hidden ones (e.g. a
    snapshot's ``.cache``); the card's load snippet names ``repo_id``."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p, folder))
    out = {}
    for i, path in enumerate(paths):
        rel = path.relative_to(folder).as_posix()
        source: bytes | Path = path
        if rel == "README.md":
            text = path.read_text(encoding="utf-8").replace(f'"{REPO_PLACEHOLDER}"', f'"{repo_id}"')
            source = text.encode("utf-8")
        out[rel] = (file_state(rel, source), source)
        if progress:
            progress("hash", i + 1, len(paths))
    return out


def _hidden(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def commit_chunks(plan: PushPlan, sizes: dict[str, int]) -> list[list[str]]:
    """Split the uploads into commits of at most ``COMMIT_FILES`` files and ``COMMIT_BYTES``
    bytes: data files first, the card/layout/recipe (and the deletions) in the last commit."""
    chunks: list[list[str]] = [[]]
    load = 0
    for path in [p for p in plan.upload if p not in META_FILES]:
        full = len(chunks[-1]) >= COMMIT_FILES or load + sizes[path] > COMMIT_BYTES
        if chunks[-1] and full:
            chunks.append([])
            load = 0
        chunks[-1].append(path)
        load += sizes[path]
    meta = [p for p in plan.upload if p in META_FILES]
    if len(chunks[-1]) + len(meta) + len(plan.delete) > COMMIT_FILES:
        chunks.append([])
    chunks[-1] += meta
    return [c for c in chunks if c] or ([[]] if plan.delete else [])
