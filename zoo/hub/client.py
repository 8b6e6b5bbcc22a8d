"""The Hub client of ``zoo``: the one ``HfApi`` factory, the token, retries, and the errors that
say what to do.

Every Hub call of ``zoo`` goes through :func:`hf_api`; ``HfApi`` and ``datasets`` share
``huggingface_hub``'s HTTP client (``huggingface_hub.set_client_factory``), which is where the
tests serve an in-process fake Hub. The token comes from ``HF_TOKEN`` or the ``hf auth login``
store; it is handed to ``HfApi`` and never printed, logged or written anywhere.

Writes (push) are retried here with backoff (:func:`retry`); reads (load, pull) are not: the
client retries its own downloads, and a read that cannot reach the Hub answers at once with the
network error (:func:`probe`), not after minutes of retries wrapped in retries (issue 13).
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import huggingface_hub
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)

from zoo import __version__
from zoo.errors import HubError

REPO_TYPE = "dataset"
RETRIES = 5  # attempts per Hub call on network failures, 429 and 5xx
RETRY_WAIT_S = 2.0  # first backoff; doubles each attempt
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
PROBE_TIMEOUT_S = 10.0  # one request that says whether the Hub answers, and to whom
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


def check_repo_id(repo_id: str) -> None:
    """Refuse a repo id that is not ``user/name``."""
    if not REPO_ID.fullmatch(repo_id):
        raise HubError(f"repo id {repo_id!r} is not of the form user/name (e.g. alice/digits-zoo)")


# -- errors and retries ---------------------------------------------------------------------


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport errors of whichever HTTP client this huggingface_hub uses (httpx2 in 2.x)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "ConnectionError"),
        ("requests", "Timeout"),
    ):
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


def _network_cause(err: BaseException | None) -> BaseException | None:
    """The transport error behind ``err`` (``huggingface_hub`` wraps it, e.g. in the
    ``LocalEntryNotFoundError`` of a download that could not reach the Hub), or ``None``."""
    while err is not None:
        if isinstance(err, NETWORK_ERRORS):
            return err
        err = err.__cause__ or err.__context__
    return None


def probe(api: HfApi, repo_id: str, revision: str | None = None) -> None:
    """Ask the Hub once, without retries, for the dataset repo: a Hub that cannot be reached,
    a repo that is private or missing, or a refused token show up here in seconds (wrap the call
    in :func:`hub_errors`). Skipped under ``HF_HUB_OFFLINE`` (the cache answers then)."""
    if constants.HF_HUB_OFFLINE:
        return
    api.dataset_info(repo_id, revision=revision, timeout=PROBE_TIMEOUT_S)


@contextmanager
def hub_errors(
    repo_id: str, action: str, resume: str, *, token: str | None = None, retried: bool = True
) -> Iterator[None]:
    """Turn ``huggingface_hub``/network errors into :class:`HubError` that say what to do.

    Args:
        repo_id, action, resume: for the message (``resume``: how to go on after a network
            failure).
        token: the token passed explicitly, if any (else ``HF_TOKEN`` or the login store): a
            401 without any token means a private or missing repo, not a bad token.
        retried: whether the calls were retried with :func:`retry` (writes) or not (reads).
    """
    try:
        yield
    except HubError:
        raise
    except Exception as err:
        has_token = bool(token or huggingface_hub.get_token())
        message = _message(err, repo_id, action, resume, has_token, retried)
        if message is None:
            raise
        raise HubError(message) from err


def _message(err, repo_id, action, resume, has_token: bool, retried: bool) -> str | None:
    """What :func:`hub_errors` says about ``err``; ``None``: not a Hub error, re-raise it."""
    status = _status(err)
    if isinstance(err, OfflineModeIsEnabled) or (
        isinstance(err, LocalEntryNotFoundError) and constants.HF_HUB_OFFLINE
    ):
        return (
            f"cannot {action} {repo_id}: HF_HUB_OFFLINE is set and the local cache does not "
            "hold it; unset HF_HUB_OFFLINE, or load a folder made with `zoo pull`"
        )
    if isinstance(err, RepositoryNotFoundError) or (status == 401 and not has_token):
        return _no_access(repo_id, status, has_token)
    if status == 401:
        return (
            f"the Hub refused the token (401) to {action} {repo_id}: it is invalid or "
            "expired; create a token at https://huggingface.co/settings/tokens and set "
            "HF_TOKEN or run `hf auth login`"
        )
    if status == 403:
        return (
            f"the token may not {action} {repo_id} (403): use a token with write access to "
            f"the namespace {repo_id.split('/')[0]!r} (a fine-grained token needs 'write' "
            "on it), or push to your own namespace"
        )
    if _transient(err) and not retried:
        return (
            f"cannot reach the Hub ({constants.ENDPOINT}) to {action} {repo_id}: "
            f"{_describe(_network_cause(err) or err, typed=True)}. {resume}"
        )
    if _transient(err):
        return (
            f"network failure while trying to {action} {repo_id}, after {RETRIES} attempts "
            f"with backoff: {_describe(err)}. {resume}"
        )
    if isinstance(err, HfHubHTTPError | ValueError | LocalEntryNotFoundError):
        return f"the Hub rejected the request to {action} {repo_id}: {_describe(err)}"
    return None


def _no_access(repo_id: str, status: int | None, has_token: bool) -> str:
    if not has_token:
        return (
            f"{repo_id} is private or does not exist: the Hub answered {status or 404} to a "
            "request without a token. Check the repo id; a private repo needs a token that can "
            "read it (set HF_TOKEN or run `hf auth login`)"
        )
    return (
        f"no dataset repo {repo_id} on the Hub, or it is private and the token has no "
        "access to it (check the repo id, or use a token of its owner: HF_TOKEN or "
        "`hf auth login`)"
    )


def _describe(err: BaseException, typed: bool = False) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = " ".join(lines)
    if typed:
        return f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text or type(err).__name__
