"""Publish a built zoo on the Hugging Face Hub and download it: ``push``, ``pull``, and the Hub
plumbing they share with :mod:`zoo.loader` (``load``): the ``HfApi`` factory, the token, retries
and the errors that say what to do.

Every Hub call of ``zoo`` goes through :func:`hf_api`, the one ``HfApi`` factory; ``HfApi`` and
``datasets`` share ``huggingface_hub``'s HTTP client (``huggingface_hub.set_client_factory``),
which is where the tests serve an in-process fake Hub.

``push`` (resumable, idempotent; the plan itself is :mod:`zoo.hubfiles`):

1. Find the dataset folder (``layout.json``, ``README.md``, ``data/``) and the token.
2. Create the dataset repo (and the branch) if needed.
3. List the remote tree; refuse a repo that holds another dataset or other layouts.
4. Diff: a local file is uploaded when the Hub does not hold the same bytes (sha256 for LFS
   files, git blob id for the others); remote files under ``data/``, ``images/`` or
   ``checkpoints/`` that the build no longer writes are deleted.
5. Commit in chunks (``hubfiles.COMMIT_FILES`` files, ``COMMIT_BYTES`` bytes): data first, the card,
   ``layout.json`` and ``recipe.yaml`` last, so the card never describes data that is not there
   yet. Transient failures are retried with backoff; after that, rerunning the same command
   uploads only what the Hub does not hold yet.
6. Tag the version (``v<zoo_version>-<n>`` or ``--tag``).

The token comes from ``HF_TOKEN`` or the ``hf auth login`` store; it is handed to ``HfApi`` and
never printed, logged or written anywhere.
"""

from __future__ import annotations

import importlib
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import (
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from . import __version__
from .errors import HubError
from .hubfiles import (
    FileState,
    Progress,
    PushPlan,
    commit_chunks,
    dataset_folder,
    local_files,
    plan_push,
)
from .layout import Layout

REPO_TYPE = "dataset"
RETRIES = 5  # attempts per Hub call on network failures, 429 and 5xx
RETRY_WAIT_S = 2.0  # first backoff; doubles each attempt
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


def hf_api(token: str | None = None) -> HfApi:
    """The one ``HfApi`` of ``zoo`` (the test seam). ``token=None``: the ``HF_TOKEN`` variable or
    the ``hf auth login`` store, as ``huggingface_hub`` resolves it."""
    return HfApi(token=token, library_name="zoo", library_version=__version__)


def resolve_token(token: str | None = None) -> str:
    """The token to write with: ``token``, else ``HF_TOKEN``, else the ``hf auth login`` store."""
    token = token or huggingface_hub.get_token()
    if not token:
        raise HubError(
            "no Hugging Face token found: create a write token at "
            "https://huggingface.co/settings/tokens, then `export HF_TOKEN=...` or run "
            "`hf auth login`"
        )
    return token


@dataclass(frozen=True)
class PushResult:
    """What ``push`` did."""

    repo_id: str
    revision: str
    url: str
    plan: PushPlan
    commits: tuple[str, ...]
    tag: str | None
    upload_bytes: int  # size of plan.upload (sent unless dry_run)


def check_repo_id(repo_id: str) -> None:
    """Refuse a repo id that is not ``user/name``."""
    if not REPO_ID.fullmatch(repo_id):
        raise HubError(f"repo id {repo_id!r} is not of the form user/name (e.g. alice/digits-zoo)")


# -- errors and retries ---------------------------------------------------------------------


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport errors of whichever HTTP client this huggingface_hub uses (httpx2 in 2.x)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):  # fmt: skip
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


NETWORK_ERRORS = _network_errors()


def _transient(err: BaseException | None) -> bool:
    """A network failure, a timeout, 429 or 5xx, possibly wrapped (LFS upload errors are)."""
    while err is not None:
        if isinstance(err, NETWORK_ERRORS):
            return True
        if isinstance(err, HfHubHTTPError) and err.response is not None:
            return err.response.status_code in RETRY_STATUS
        err = err.__cause__ or err.__context__
    return False


def retry(fn: Callable, *args, **kwargs) -> Any:
    """Call ``fn``; on a transient failure wait ``RETRY_WAIT_S * 2**attempt`` and try again, up
    to ``RETRIES`` attempts."""
    for attempt in range(RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if attempt == RETRIES - 1 or not _transient(err):
                raise
            time.sleep(RETRY_WAIT_S * 2**attempt)


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


@contextmanager
def hub_errors(repo_id: str, action: str, resume: str) -> Iterator[None]:
    """Turn ``huggingface_hub``/network errors into :class:`HubError` that say what to do."""
    try:
        yield
    except HubError:
        raise
    except OfflineModeIsEnabled as err:
        raise HubError(f"cannot {action} {repo_id}: HF_HUB_OFFLINE is set; unset it") from err
    except Exception as err:
        status = _status(err)
        if status == 401:
            message = (
                f"the Hub refused the token (401) to {action} {repo_id}: it is invalid or "
                "expired; create a token at https://huggingface.co/settings/tokens and set "
                "HF_TOKEN or run `hf auth login`"
            )
        elif status == 403:
            message = (
                f"the token may not {action} {repo_id} (403): use a token with write access to "
                f"the namespace {repo_id.split('/')[0]!r} (a fine-grained token needs 'write' "
                "on it), or push to your own namespace"
            )
        elif isinstance(err, RepositoryNotFoundError):
            message = (
                f"no dataset repo {repo_id} on the Hub, or it is private and the token has no "
                "access to it (set HF_TOKEN or run `hf auth login`)"
            )
        elif _transient(err):
            message = (
                f"network failure while trying to {action} {repo_id}, after {RETRIES} attempts "
                f"with backoff: {_describe(err)}. {resume}"
            )
        elif isinstance(err, HfHubHTTPError | ValueError):
            message = f"the Hub rejected the request to {action} {repo_id}: {_describe(err)}"
        else:
            raise
        raise HubError(message) from err


def _describe(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines) or type(err).__name__


# -- push -----------------------------------------------------------------------------------


def remote_files(api: HfApi, repo_id: str, revision: str) -> dict[str, FileState]:
    """The files of a repo at ``revision`` as the Hub identifies them (empty if none)."""
    entries = retry(
        lambda: list(
            api.list_repo_tree(repo_id, revision=revision, recursive=True, repo_type=REPO_TYPE)
        )  # fmt: skip
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
    if "layout.json" not in remote:
        other = sorted(set(remote) - {".gitattributes", "README.md"})
        if other:
            raise HubError(
                f"{repo_id} holds {len(other)} file(s) ({', '.join(other[:3])}, …) but no "
                "layout.json: it is not a zoo dataset, and pushing would mix two datasets. "
                "Push to a new --repo-id, or delete those files on the Hub first."
            )
        return
    state, source = local["layout.json"]
    if remote["layout.json"].same_as(state):
        return
    path = retry(api.hf_hub_download, repo_id, "layout.json", repo_type=REPO_TYPE,
                  revision=revision)  # fmt: skip
    theirs = json.loads(Path(path).read_text())
    ours = json.loads(Path(source).read_text())
    differ = [c for c in theirs if c in ours and
              Layout.from_dict(theirs[c]).sha256 != Layout.from_dict(ours[c]).sha256]  # fmt: skip
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
        info = api.create_commit(repo_id, operations, commit_message=message,
                                 revision=revision, repo_type=REPO_TYPE)  # fmt: skip
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
        token: a write token; default ``HF_TOKEN`` or the ``hf auth login`` store.
        dry_run: plan only: nothing is created, uploaded or deleted.
        progress: called as ``progress(stage, done, total)`` for ``hash`` and ``commit``.
    Returns:
        a :class:`PushResult` (the plan, commit ids, tag, bytes to upload).
    Example:
        >>> zoo.push("out/quickstart", "alice/quickstart-zoo")  # doctest: +SKIP
    """
    check_repo_id(repo_id)
    folder = dataset_folder(path)
    api = hf_api(resolve_token(token))
    branch = revision or "main"
    resume = (
        f"What was committed stays on the Hub; run the same `zoo push {path} --repo-id {repo_id}`"
        " again to upload the rest (files the Hub holds are skipped)."
    )
    with hub_errors(repo_id, "push to", resume):
        files = local_files(folder, repo_id, progress)
        remote = _prepare_repo(api, repo_id, branch, private, dry_run)
        check_remote_layout(api, repo_id, branch, remote, files)
        plan = plan_push({p: f[0] for p, f in files.items()}, remote)
        sizes = {p: f[0].size for p, f in files.items()}
        commits, new_tag = [], None
        if not dry_run:
            commits = _push_commits(api, repo_id, branch, plan, files, message, progress)
        if not dry_run and (commits or tag):
            new_tag = tag or _next_tag(api, repo_id)
            head = commits[-1] if commits else branch
            retry(api.create_tag, repo_id, tag=new_tag, revision=head,
                   tag_message=message or f"zoo {__version__}", repo_type=REPO_TYPE)  # fmt: skip
    url = f"{api.endpoint}/datasets/{repo_id}" + (f"/tree/{branch}" if revision else "")
    upload_bytes = sum(sizes[p] for p in plan.upload)
    return PushResult(repo_id, branch, url, plan, tuple(commits), new_tag, upload_bytes)


def _prepare_repo(api, repo_id, branch, private, dry_run) -> dict[str, FileState]:
    """Create the repo and the branch if needed; the branch's files (empty when new)."""
    if dry_run:
        try:
            return remote_files(api, repo_id, branch)
        except RevisionNotFoundError:  # a new branch starts from main
            return remote_files(api, repo_id, "main")
        except RepositoryNotFoundError:
            return {}
    retry(api.create_repo, repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
    if branch != "main":
        retry(api.create_branch, repo_id, branch=branch, repo_type=REPO_TYPE, exist_ok=True)
    return remote_files(api, repo_id, branch)


def _push_commits(api, repo_id, branch, plan, files, message, progress) -> list[str]:
    sizes = {p: f[0].size for p, f in files.items()}
    chunks = commit_chunks(plan, sizes)
    commits = []
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        deletes = plan.delete if last else ()
        text = message or (f"zoo {__version__}: upload {len(plan.upload)} file(s), delete "
                           f"{len(plan.delete)}")  # fmt: skip
        if len(chunks) > 1:
            text += f" (part {i + 1}/{len(chunks)})"
        commits.append(_commit(api, repo_id, branch, chunk, deletes, files, text))
        if progress:
            progress("commit", i + 1, len(chunks))
    return commits


# -- pull -----------------------------------------------------------------------------------


def pull(
    repo_id: str,
    local_dir: str | Path | None = None,
    *,
    revision: str | None = None,
    token: str | None = None,
) -> Path:
    """Download a zoo dataset repo for offline use (``snapshot_download``; resumable).

    Args:
        repo_id: ``user/name`` on the Hub.
        local_dir: where to put it; default ``./<name>``.
        revision: branch, tag or commit; default ``main``.
        token: for private repos; default ``HF_TOKEN`` or the ``hf auth login`` store.
    Returns:
        the folder; ``zoo.load(folder)`` and ``datasets.load_dataset(folder)`` read it offline.
    """
    check_repo_id(repo_id)
    target = Path(local_dir) if local_dir else Path(repo_id.split("/")[1])
    api = hf_api(token)
    resume = f"Run `zoo pull {repo_id}` again: files already downloaded are kept."
    with hub_errors(repo_id, "pull", resume):
        folder = retry(api.snapshot_download, repo_id, repo_type=REPO_TYPE, revision=revision,
                        local_dir=target)  # fmt: skip
    if not (Path(folder) / "layout.json").is_file():
        raise HubError(f"{repo_id} has no layout.json: it is not a zoo dataset")
    return Path(folder)
