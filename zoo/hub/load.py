"""Read a published zoo back: ``load`` (from the Hub or a local folder, with its layout) and
``iter_weights`` (a split's weights as fast ``(B, P)`` batches).

Hub reads go through :mod:`zoo.hub.client`'s ``HfApi`` factory and error messages; they are
not retried here (the client retries its own downloads) and start with one quick request
(:func:`zoo.hub.client.probe`), so an unreachable Hub, a private or missing repo and a refused
token are reported in seconds. The rows are read by ``datasets``, whose HTTP client is
``huggingface_hub``'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from huggingface_hub.errors import RemoteEntryNotFoundError

from zoo.errors import HubError
from zoo.hub.client import REPO_TYPE, check_repo_id, hf_api, hub_errors, probe
from zoo.layout import Layout
from zoo.naming import LAYOUT_FILE
from zoo.nn.architectures import to_module
from zoo.store.dataset import dataset_folder


class LoadedZoo(NamedTuple):
    """A zoo split (or all splits) in torch format and the layout of its config.

    Unpacks as ``ds, layout = zoo.load(...)``; ``to_module(row)`` rebuilds a row as a working
    ``torch.nn.Module``.
    """

    dataset: Any  # datasets.Dataset | DatasetDict | IterableDataset | IterableDatasetDict
    layout: Layout

    def to_module(self, row):
        """``row`` (a dict with ``weights``, or a flat vector) -> ``nn.Module`` in eval mode."""
        return to_module(row, self.layout)


def iter_weights(dataset, batch_size: int = 256) -> Iterator:
    """The ``weights`` of one split as ``(B, P)`` float32 tensors, in row order, fast.

    A ``datasets.Dataset`` is read straight from its memory-mapped Arrow table, one copy per
    batch: 0.7-0.8 of a raw ``.npy`` memmap's throughput, where ``with_format("torch")`` reaches
    0.1-0.2 (it stacks row views, then copies again into torch; benchmarks/load_throughput.py). A
    streamed or index-mapped (shuffled, selected) dataset goes through its Arrow batches.

    Example:
        >>> ds, layout = zoo.load("out/quickstart", split="train")  # doctest: +SKIP
        >>> for w in zoo.iter_weights(ds):  # (256, P) float32  # doctest: +SKIP
        ...     ...
    """
    import numpy as np
    import torch

    if getattr(dataset, "_indices", True) is None:  # a Dataset without an indices mapping
        columns = [dataset.data.column("weights")]
    else:
        columns = (b["weights"] for b in dataset.with_format("arrow").iter(batch_size=batch_size))
    views = (  # (rows, P) numpy views of the Arrow buffers: no copy yet
        chunk.flatten().to_numpy(zero_copy_only=False).reshape(len(chunk), -1)
        for column in columns
        for chunk in column.chunks
        if len(chunk)
    )
    for pieces in _row_blocks(views, batch_size):
        flat = np.concatenate(pieces) if len(pieces) > 1 else np.array(pieces[0])  # one copy
        yield torch.from_numpy(flat)  # (B, P)


def _row_blocks(views: Iterator, size: int) -> Iterator[list]:
    """Consecutive row ranges of ``views`` in lists of pieces of ``size`` rows (the last fewer)."""
    pieces, count = [], 0
    for view in views:
        start = 0
        while start < len(view):
            take = min(size - count, len(view) - start)
            pieces.append(view[start : start + take])
            count, start = count + take, start + take
            if count == size:
                yield pieces
                pieces, count = [], 0
    if pieces:
        yield pieces


def load(
    source: str | Path,
    config: str | None = None,
    split: str | None = None,
    *,
    streaming: bool = False,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | Path | None = None,
) -> LoadedZoo:
    """Load a zoo from the Hub (``user/name``) or a local folder, in torch format, with its layout.

    Args:
        source: a Hub dataset repo id, a built dataset folder, or a zoo's output folder.
        config: the config (architecture); default: the first (the card's default config).
        split: ``train``, ``validation``, ``test``…; ``None``: all splits (a ``DatasetDict``).
        streaming: read the Parquet files as they are iterated (``IterableDataset``).
        revision: branch, tag or commit of a Hub repo.
        token: for private repos; default ``HF_TOKEN`` or the ``hf auth login`` store.
        cache_dir: ``datasets`` cache folder (default: its own).
    Returns:
        ``LoadedZoo(dataset, layout)``; ``dataset["weights"]`` gives ``(N, P)`` float32 tensors.
    Example:
        >>> ds, layout = zoo.load("out/quickstart", split="train")  # doctest: +SKIP
        >>> net = zoo.to_module(ds[0], layout)  # doctest: +SKIP
    """
    import datasets

    local = Path(source).exists()
    if local:
        path = str(dataset_folder(source))
        layouts = json.loads((Path(path) / LAYOUT_FILE).read_text())
    else:
        path = str(source)
        check_repo_id(path)
        layouts = _remote_layouts(path, revision, token)
    config = config or next(iter(layouts))
    if config not in layouts:
        raise HubError(f"{source} has no config {config!r}; its configs: {sorted(layouts)}")
    kwargs = {} if local else {"revision": revision, "token": token}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    with hub_errors(path, "load", RESUME, token=token, retried=False):
        ds = datasets.load_dataset(path, config, split=split, streaming=streaming, **kwargs)
    return LoadedZoo(ds.with_format("torch"), Layout.from_dict(layouts[config]))


RESUME = (
    "Check the connection (or the proxy: HTTPS_PROXY) and try again; a zoo pulled with "
    "`zoo pull` loads from its folder without the network."
)


def _remote_layouts(repo_id: str, revision: str | None, token: str | None) -> dict:
    api = hf_api(token)
    with hub_errors(repo_id, "load", RESUME, token=token, retried=False):
        probe(api, repo_id, revision)
        try:
            path = api.hf_hub_download(repo_id, LAYOUT_FILE, repo_type=REPO_TYPE, revision=revision)
        except RemoteEntryNotFoundError as err:  # the Hub answered: no such file
            raise HubError(f"{repo_id} has no layout.json: it is not a zoo dataset") from err
    return json.loads(Path(path).read_text())


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
    with hub_errors(repo_id, "pull", resume, token=token, retried=False):
        probe(api, repo_id, revision)
        folder = api.snapshot_download(
            repo_id, repo_type=REPO_TYPE, revision=revision, local_dir=target
        )
    if not (Path(folder) / LAYOUT_FILE).is_file():
        raise HubError(f"{repo_id} has no layout.json: it is not a zoo dataset")
    return Path(folder)
