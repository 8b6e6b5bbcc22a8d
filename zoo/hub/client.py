"""The Hub client of ``zoo``: the one ``HfApi`` factory, the token, retries, and the errors that
say what to do.

Every Hub call of ``zoo`` goes through :func:`hf_api`; ``HfApi`` and ``datasets`` share
``huggingface_hub``'s HTTP client (``huggingface_hub.set_client_factory``), which is where the
tests serve an in-process fake Hub. The token comes from ``HF_TOKEN`` or the ``hf auth login``
store; it is handed to ``HfApi`` and never printed, logged or written anywhere.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import huggingface_hub
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

from zoo import __version__
from zoo.errors import HubError

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
