"""Read a published zoo back: ``load`` (from the Hub or a local folder, with its layout; only
the rows and columns asked for with ``where=`` and ``columns=``) and ``iter_weights`` (a split's
weights as fast ``(B, P)`` batches).

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

from zoo.errors import HubError, LoadError
from zoo.hub.client import REPO_TYPE, check_repo_id, hf_api, hub_errors, probe
from zoo.hub.formatting import as_zoo_dataset
from zoo.hub.query import ZooFiles, read_filtered
from zoo.layout import Layout
from zoo.naming import LAYOUT_FILE, METADATA_CONFIG
from zoo.nn.architectures import to_module
from zoo.store.dataset import dataset_folder
from zoo.weightspace.functional import to_layers


class LoadedZoo(NamedTuple):
    """A zoo split (or all splits) in torch format and the layout of its config.

    Unpacks as ``ds, layout = zoo.load(...)``; ``to_module(row)`` rebuilds a row as a working
    ``torch.nn.Module``.
    """

    dataset: Any  # ZooDataset (a datasets.Dataset) | DatasetDict | IterableDataset(Dict)
    layout: Layout | None  # None for the metadata config (no weights)

    def to_module(self, row):
        """``row`` (a dict with ``weights``, or a flat vector) -> ``nn.Module`` in eval mode."""
        return to_module(row, self.layout)


def iter_weights(dataset, batch_size: int = 256, layout: Layout | None = None) -> Iterator:
    """The ``weights`` of one split as ``(B, P)`` float32 tensors, in row order, fast; with
    ``layout``, each batch in the per-layer form of weight-space libraries: ``(weights,
    biases)``, per layer ``(B, out, in[, kh, kw])`` and ``(B, out)`` (:func:`zoo.to_layers`).

    A ``datasets.Dataset`` is read straight from its memory-mapped Arrow table, one copy per
    batch: 0.7-0.8 of a raw ``.npy`` memmap's throughput, where ``with_format("torch")`` reaches
    0.1-0.2 (it stacks row views, then copies again into torch; benchmarks/load_throughput.py). A
    streamed or index-mapped (shuffled, selected) dataset goes through its Arrow batches.

    Example:
        >>> ds, layout = zoo.load("out/quickstart", split="train")  # doctest: +SKIP
        >>> for w in zoo.iter_weights(ds):  # (256, P) float32  # doctest: +SKIP
        ...     ...
        >>> for weights, biases in zoo.iter_weights(ds, 64, layout):  # doctest: +SKIP
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
        batch = torch.from_numpy(flat)  # (B, P)
        yield batch if layout is None else to_layers(batch, layout)


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
    where=None,
    columns: list[str] | None = None,
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
        where: only the rows that satisfy it: a string such as
            ``"model.width == 64 and epoch >= 10"`` (see :mod:`zoo.hub.query`) or a
            ``pyarrow.compute`` expression. Only the files and row groups that may hold such
            rows are read (from the Hub by range requests, nothing downloaded whole).
        columns: only these columns (``["weights", "test_acc"]``); the weights of a zoo are
            most of its bytes, so a projection without them reads a small fraction.
        streaming: read the Parquet files as they are iterated (``IterableDataset``); not with
            ``where`` or ``columns``.
        revision: branch, tag or commit of a Hub repo.
        token: for private repos; default ``HF_TOKEN`` or the ``hf auth login`` store.
        cache_dir: ``datasets`` cache folder (default: its own).
    Returns:
        ``LoadedZoo(dataset, layout)``: a :class:`~zoo.hub.formatting.ZooDataset` (a
        ``datasets.Dataset`` whose torch format reads ``weights`` as ``(N, P)`` float32 tensors
        at memory speed, also through a ``DataLoader``), or a ``DatasetDict`` of them.
    Example:
        >>> ds, layout = zoo.load("out/quickstart", split="train")  # doctest: +SKIP
        >>> net = zoo.to_module(ds[0], layout)  # doctest: +SKIP
        >>> late, _ = zoo.load("alice/zoo", where="epoch >= 10", columns=["weights", "test_acc"])
        ...  # doctest: +SKIP
    """
    local = Path(source).exists()
    if local:
        path = str(dataset_folder(source))
        layouts = json.loads((Path(path) / LAYOUT_FILE).read_text())
    else:
        path = str(source)
        check_repo_id(path)
        layouts = _remote_layouts(path, revision, token)
    config = config or next(iter(layouts))
    if config not in (*layouts, METADATA_CONFIG):
        raise HubError(
            f"{source} has no config {config!r}; its configs: {sorted(layouts)} and "
            f"{METADATA_CONFIG!r} (every column but the weights of every row)"
        )
    layout = Layout.from_dict(layouts[config]) if config in layouts else None
    if where is not None or columns is not None:
        if streaming:
            raise LoadError(
                "where= and columns= read only the row groups and columns they need already; "
                "leave out streaming=True (or filter the stream yourself)"
            )
        files = ZooFiles.local(path) if local else ZooFiles.hub(path, revision, token)
        with hub_errors(path, "load", RESUME, token=token, retried=False):
            tables, _ = read_filtered(files, config, [split] if split else None, where, columns)
        ds = _from_tables(tables, split)
    else:
        kwargs = {} if local else {"revision": revision, "token": token}
        if cache_dir is not None:
            kwargs["cache_dir"] = str(cache_dir)
        with hub_errors(path, "load", RESUME, token=token, retried=False):
            ds = datasets_load(path, config, split=split, streaming=streaming, **kwargs)
    return LoadedZoo(as_zoo_dataset(ds.with_format("torch")), layout)


def datasets_load(path: str, config: str, **kwargs):
    """``datasets.load_dataset`` (imported here: ``import zoo`` stays light)."""
    import datasets

    return datasets.load_dataset(path, config, **kwargs)


def _from_tables(tables: dict, split: str | None):
    """In-memory ``datasets`` from a filtered read: one ``Dataset`` (``split`` given) or a
    ``DatasetDict``; the features are the files' own (``huggingface`` schema metadata)."""
    import datasets
    from datasets.table import InMemoryTable

    def one(name, table):
        meta = json.loads((table.schema.metadata or {}).get(b"huggingface", b"{}"))
        stored = meta.get("info", {}).get("features")
        full = datasets.Features.from_dict(stored) if stored else None
        if full is not None and all(c in full for c in table.column_names):
            features = datasets.Features({c: full[c] for c in table.column_names})
        else:
            features = datasets.Features.from_arrow_schema(table.schema.remove_metadata())
        plain = InMemoryTable(table.replace_schema_metadata(None))
        info = datasets.DatasetInfo(features=features)
        return datasets.Dataset(plain, info=info, split=datasets.Split(name))

    if split is not None:
        return one(split, tables[split])
    return datasets.DatasetDict({name: one(name, t) for name, t in tables.items()})


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
