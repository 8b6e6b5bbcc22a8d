"""``zoo push``: publish a built zoo as a Hub dataset repo, sending only what the Hub lacks.

Resumable and idempotent:

1. Find the dataset folder (``layout.json``, ``README.md``, ``data/``) and the token.
2. Create the dataset repo (and the branch) if needed.
3. List the remote tree; refuse a repo that holds another dataset or other layouts.
4. Diff (:func:`plan_push`): a local file is uploaded when the Hub does not hold the same bytes
   (sha256 for LFS files, git blob id for the others); remote files under ``data/``,
   ``images/`` or ``checkpoints/`` that the build no longer writes are deleted.
5. Commit in chunks (:data:`COMMIT_FILES` files, :data:`COMMIT_BYTES` bytes): data first, the
   card, ``layout.json`` and ``recipe.yaml`` last, so the card never describes data that is not
   there yet. Transient failures are retried with backoff; after that, rerunning the same
   command uploads only what the Hub does not hold yet.
6. Tag the version (``v<zoo_version>-<n>`` or ``--tag``).

What was sent is counted as sent: before each commit the Hub's LFS store is asked which of its
files' contents it lacks (content it holds, e.g. uploaded by a push that failed before its
commit, is not sent again). A dry run needs no token for a public repo.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import huggingface_hub
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from zoo import __version__
from zoo.errors import HubError
from zoo.hub.client import REPO_TYPE, check_repo_id, hf_api, hub_errors, resolve_token, retry
from zoo.layout import Layout
from zoo.naming import CARD_FILE, DATA_DIR, IMAGES_DIR, LAYOUT_FILE, RECIPE_FILE, REPO_PLACEHOLDER
from zoo.store.dataset import dataset_folder

META_FILES = (CARD_FILE, LAYOUT_FILE, RECIPE_FILE)  # committed last
BUILD_FOLDERS = (
    f"{DATA_DIR}/",
    f"{IMAGES_DIR}/",
    "checkpoints/",
)  # the build owns these: stale files go
COMMIT_FILES = 200  # files per commit
COMMIT_BYTES = 20 * 2**30  # bytes per commit: a large zoo is pushed in several commits
LFS_BATCH = 256  # objects per question to the LFS store
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


def local_files(folder: Path, repo_id: str, progress: Progress | None = None) -> dict:
    """Path in repo -> (FileState, source): every file of the folder except hidden ones (e.g. a
    snapshot's ``.cache``); the card's load snippet names ``repo_id``."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p, folder))
    out = {}
    for i, path in enumerate(paths):
        rel = path.relative_to(folder).as_posix()
        source: bytes | Path = path
        if rel == CARD_FILE:
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


@dataclass(frozen=True)
class PushResult:
    """What ``push`` did."""

    repo_id: str
    revision: str
    url: str
    plan: PushPlan
    commits: tuple[str, ...]
    tag: str | None
    upload_bytes: int  # size of plan.upload (what changes in the repo)
    sent: tuple[str, ...] = ()  # files whose bytes this push sent (the Hub lacked them)
    sent_bytes: int = 0
    visible: bool = True  # the repo exists and is readable (False: a dry run of a new repo)


def remote_files(api: HfApi, repo_id: str, revision: str) -> dict[str, FileState]:
    """The files of a repo at ``revision`` as the Hub identifies them (empty if none)."""
    entries = retry(
        lambda: list(
            api.list_repo_tree(repo_id, revision=revision, recursive=True, repo_type=REPO_TYPE)
        )
    )
    out = {}
    for e in entries:
        if isinstance(e, huggingface_hub.hf_api.RepoFile):
            sha = e.lfs.sha256 if e.lfs else None
            out[e.path] = FileState(e.path, e.size, sha, e.blob_id)
    return out


def check_remote_layout(
    api: HfApi, repo_id: str, revision: str, remote: dict[str, FileState], local: dict
) -> None:
    """Refuse to push into a repo that holds another dataset, or layouts that differ from this
    zoo's (same config name, other shapes) or configs this zoo does not build."""
    if LAYOUT_FILE not in remote:
        other = sorted(set(remote) - {".gitattributes", CARD_FILE})
        if other:
            raise HubError(
                f"{repo_id} holds {len(other)} file(s) ({', '.join(other[:3])}, …) but no "
                "layout.json: it is not a zoo dataset, and pushing would mix two datasets. "
                "Push to a new --repo-id, or delete those files on the Hub first."
            )
        return
    state, source = local[LAYOUT_FILE]
    if remote[LAYOUT_FILE].same_as(state):
        return
    path = retry(api.hf_hub_download, repo_id, LAYOUT_FILE, repo_type=REPO_TYPE, revision=revision)
    theirs = json.loads(Path(path).read_text())
    ours = json.loads(Path(source).read_text())
    differ = [
        c
        for c in theirs
        if c in ours and Layout.from_dict(theirs[c]).sha256 != Layout.from_dict(ours[c]).sha256
    ]
    missing = [c for c in theirs if c not in ours]
    if differ or missing:
        raise HubError(
            f"{repo_id} holds another zoo: its layout.json has configs {sorted(theirs)}, this "
            f"zoo builds {sorted(ours)} (different layouts: {differ or 'none'}; configs this "
            f"zoo lacks: {missing or 'none'}). Push to a new --repo-id, or to a new branch "
            "with --revision."
        )


def _commit(api, repo_id, revision, paths, deletes, files, message) -> str:
    def attempt() -> str:  # fresh operations: an operation object commits once
        operations = [_addition(p, *files[p]) for p in paths]
        operations += [CommitOperationDelete(path_in_repo=p) for p in deletes]
        info = api.create_commit(
            repo_id, operations, commit_message=message, revision=revision, repo_type=REPO_TYPE
        )
        return info.oid

    # A retried commit re-sends only what the Hub lacks: create_commit skips files whose remote
    # oid already matches, and LFS objects the Hub already holds are not uploaded again.
    return retry(attempt)


def _addition(path: str, state: FileState, source: bytes | Path) -> CommitOperationAdd:
    op = CommitOperationAdd(path_in_repo=path, path_or_fileobj=_source(source))
    op.upload_info.sha256 = bytes.fromhex(state.sha256)  # hashed once, for the diff
    return op


def _source(source: bytes | Path) -> bytes | str:
    return source if isinstance(source, bytes) else str(source)


def _next_tag(api: HfApi, repo_id: str) -> str:
    refs = retry(api.list_repo_refs, repo_id, repo_type=REPO_TYPE)
    pattern = re.compile(rf"v{re.escape(__version__)}-(\d+)")
    taken = [int(m[1]) for t in refs.tags if (m := pattern.fullmatch(t.name))]
    return f"v{__version__}-{max(taken, default=0) + 1}"


def push(
    path: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    message: str | None = None,
    tag: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PushResult:
    """Publish a built zoo as a Hub dataset repo, uploading only what the Hub does not hold.

    Args:
        path: the zoo's output folder or its ``dataset`` folder.
        repo_id: ``user/name`` (or ``org/name``); created if missing.
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to push to (created from ``main`` if missing); default ``main``.
        message: commit message; default names the zoo version and what changed.
        tag: tag of the pushed version; default ``v<zoo_version>-<n>`` (nothing is tagged when
            nothing changed).
        token: a write token; default ``HF_TOKEN`` or the ``hf auth login`` store (a dry run
            of a public repo needs none).
        dry_run: plan only: nothing is created, uploaded or deleted.
        progress: called as ``progress(stage, done, total)`` for ``hash`` and ``commit``.
    Returns:
        a :class:`PushResult` (the plan, commit ids, tag, bytes to upload).
    Example:
        >>> zoo.push("out/quickstart", "alice/quickstart-zoo")  # doctest: +SKIP
    """
    check_repo_id(repo_id)
    folder = dataset_folder(path)
    if not (folder / CARD_FILE).is_file():
        raise HubError(f"{folder} has no {CARD_FILE}: rebuild it with `zoo build OUT` first")
    api = hf_api(token if dry_run else resolve_token(token))
    branch = revision or "main"
    resume = (
        f"What was committed stays on the Hub; run the same `zoo push {path} --repo-id {repo_id}`"
        " again to upload the rest (files the Hub holds are skipped)."
    )
    with hub_errors(repo_id, "push to", resume, token=token):
        files = local_files(folder, repo_id, progress)
        remote = _prepare_repo(api, repo_id, branch, private, dry_run)
        visible = remote is not None
        remote = remote or {}
        check_remote_layout(api, repo_id, branch, remote, files)
        plan = plan_push({p: f[0] for p, f in files.items()}, remote)
        sizes = {p: f[0].size for p, f in files.items()}
        commits, new_tag, sent = [], None, []
        if not dry_run:
            commits, sent = _push_commits(api, repo_id, branch, plan, files, message, progress)
        if not dry_run and (commits or tag):
            new_tag = tag or _next_tag(api, repo_id)
            head = commits[-1] if commits else branch
            retry(
                api.create_tag,
                repo_id,
                tag=new_tag,
                revision=head,
                tag_message=message or f"zoo {__version__}",
                repo_type=REPO_TYPE,
            )
    url = f"{api.endpoint}/datasets/{repo_id}" + (f"/tree/{branch}" if revision else "")
    upload_bytes = sum(sizes[p] for p in plan.upload)
    sent_bytes = sum(sizes[p] for p in sent)
    return PushResult(
        repo_id,
        branch,
        url,
        plan,
        tuple(commits),
        new_tag,
        upload_bytes,
        tuple(sent),
        sent_bytes,
        visible,
    )


def _prepare_repo(api, repo_id, branch, private, dry_run) -> dict[str, FileState] | None:
    """Create the repo and the branch if needed; the branch's files (empty when new; ``None``
    in a dry run where the repo does not exist or is private to another token)."""
    if dry_run:
        try:
            return remote_files(api, repo_id, branch)
        except RevisionNotFoundError:  # a new branch starts from main
            return remote_files(api, repo_id, "main")
        except RepositoryNotFoundError:
            return None
        except HfHubHTTPError as err:  # 401 without a token: private or missing
            anonymous = not (api.token or huggingface_hub.get_token())
            if err.response is not None and err.response.status_code == 401 and anonymous:
                return None
            raise
    retry(api.create_repo, repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
    if branch != "main":
        retry(api.create_branch, repo_id, branch=branch, repo_type=REPO_TYPE, exist_ok=True)
    return remote_files(api, repo_id, branch)


def _push_commits(api, repo_id, branch, plan, files, message, progress):
    """Commit the plan in chunks; returns the commit ids and the paths whose bytes were sent."""
    sizes = {p: f[0].size for p, f in files.items()}
    chunks = commit_chunks(plan, sizes)
    commits, sent = [], []
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        deletes = plan.delete if last else ()
        text = message or (
            f"zoo {__version__}: upload {len(plan.upload)} file(s), delete {len(plan.delete)}"
        )
        if len(chunks) > 1:
            text += f" (part {i + 1}/{len(chunks)})"
        missing = _missing_contents(api, repo_id, branch, [files[p][0] for p in chunk])
        commits.append(_commit(api, repo_id, branch, chunk, deletes, files, text))
        sent += [p for p in chunk if missing is None or files[p][0].sha256 in missing]
        if progress:
            progress("commit", i + 1, len(chunks))
    return commits, sent


def _missing_contents(api, repo_id: str, branch: str, states: list[FileState]) -> set | None:
    """sha256 of the contents the Hub's LFS store lacks (asked before a commit: what it holds,
    the commit does not send again); ``None`` where the store cannot say (count all as sent).
    Plain files are never in the LFS store, so they always count as sent."""
    from huggingface_hub.lfs import UploadInfo, post_lfs_batch_info

    missing = set()
    for start in range(0, len(states), LFS_BATCH):
        infos = [
            UploadInfo(sha256=bytes.fromhex(s.sha256), size=s.size, sample=b"")
            for s in states[start : start + LFS_BATCH]
        ]
        try:
            actions, errors, _ = retry(
                post_lfs_batch_info,
                infos,
                token=api.token,
                repo_type=REPO_TYPE,
                repo_id=repo_id,
                revision=quote(branch, safe=""),
                endpoint=api.endpoint,
            )
        except (HfHubHTTPError, ValueError):  # only the count is at stake; the commit says more
            return None
        missing |= {a["oid"] for a in actions if a.get("actions")}
        missing |= {e["oid"] for e in errors}
    return missing
