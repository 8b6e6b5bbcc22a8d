"""The torch format, fast: a ``datasets.Dataset`` whose fixed-length float lists (``weights``)
become ``(B, P)`` tensors in one copy, in ``ds[i]``, ``ds[a:b]``, ``ds["weights"][:]``,
``ds.iter(...)`` and a ``torch.utils.data.DataLoader`` over it (issue 17).

``datasets``' own torch format turns each row of a list column into its own array, then stacks
them (0.11-0.19 of a raw memmap's read speed, ``benchmarks/load_throughput.py``); a
``DataLoader`` then cuts the batch into rows and stacks them again. :class:`ZooDataset` is a
``datasets.Dataset`` (every method works as documented there) that, in the torch format, reads
those columns straight from their Arrow buffers (:class:`WeightsFormatter`), and whose
``__getitems__`` (what a ``DataLoader`` calls with a batch of indices) gathers the batch in one
Arrow take. The values equal the plain torch format's (tested on every config of every
shipped recipe): floats as float32, integers as int64, text as ``str``.

``zoo.load`` returns it. Methods that make a new dataset (``select``, ``shuffle``, ``filter``,
``map``, ``sort``, column selections, ``train_test_split``) keep it.
"""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.formatting import format_table, query_table
from datasets.formatting.torch_formatter import TorchFormatter


def is_float_matrix(kind: pa.DataType) -> bool:
    """A fixed-length list of floats: a column that is a ``(N, n)`` matrix (``weights``)."""
    return pa.types.is_fixed_size_list(kind) and pa.types.is_floating(kind.value_type)


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) and kind != pa.uint64() or pa.types.is_floating(kind)


def chunk_views(column: pa.ChunkedArray) -> list[np.ndarray]:
    """A fixed-length float list column's chunks as ``(rows, n)`` numpy views of the Arrow
    buffers (no copy: read-only where the table is memory-mapped)."""
    n = column.type.list_size
    return [c.flatten().to_numpy(zero_copy_only=False).reshape(len(c), n) for c in column.chunks]


def _matrix(column: pa.ChunkedArray) -> torch.Tensor | None:
    """A fixed-length float list column as one ``(N, n)`` tensor, copied once out of the
    Arrow buffers; ``None`` where a row is null (the plain torch format handles those)."""
    if column.null_count:
        return None
    views = [v for v in chunk_views(column) if len(v)]
    if len(views) != 1:
        n, dtype = column.type.list_size, column.type.value_type.to_pandas_dtype()
        return torch.from_numpy(np.concatenate(views) if views else np.empty((0, n), dtype))
    return torch.from_numpy(np.array(views[0]))


def gather_rows(views: list[np.ndarray], starts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of the matrix cut into ``views`` (chunk k starts at row ``starts[k]``),
    stacked in one copy. (Arrow's ``take`` concatenates every chunk of a fixed-size list
    column first: a copy of the whole column per batch.)"""
    which = np.searchsorted(starts, rows, side="right") - 1
    return np.stack([views[k][r - starts[k]] for k, r in zip(which, rows, strict=True)])


def _vector(column: pa.ChunkedArray) -> torch.Tensor | None:
    """A numeric or boolean column without nulls as one tensor (``None``: any other)."""
    kind = column.type
    if column.null_count or not (_is_number(kind) or pa.types.is_boolean(kind)):
        return None
    return torch.from_numpy(np.array(column.to_numpy()))


class WeightsFormatter(TorchFormatter):
    """``datasets``' ``TorchFormatter``, with float list columns as ``(B, n)`` tensors made in
    at most one copy, and numeric columns in one step (the same dtypes as the plain torch
    format: float32 for floats, int64 for integers, unless ``dtype=`` was given)."""

    def _convert(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dtype.is_floating_point:
            default = torch.float32
        else:
            default = torch.int64 if tensor.dtype != torch.bool else torch.bool
        return tensor.to(**{"dtype": default, **self.torch_tensor_kwargs})

    def fast_columns(self, pa_table: pa.Table) -> dict[str, torch.Tensor]:
        """The columns this formatter reads itself (float lists, numbers), as tensors."""
        fast = {}
        for name, column in zip(pa_table.column_names, pa_table.columns, strict=True):
            tensor = _matrix(column) if is_float_matrix(column.type) else _vector(column)
            if tensor is not None:
                fast[name] = self._convert(tensor)
        return fast

    def format_batch(self, pa_table: pa.Table, ready: dict | None = None) -> dict:
        """A batch; ``ready``: more columns, gathered already (name -> tensor), placed last."""
        fast = self.fast_columns(pa_table)
        rest = pa_table.drop_columns(list(fast))
        out = super().format_batch(rest) if rest.num_columns else {}
        out.update(fast)
        out.update({name: self._convert(t) for name, t in (ready or {}).items()})
        return {name: out[name] for name in [*pa_table.column_names, *(ready or {})]}

    def format_row(self, pa_table: pa.Table) -> dict:
        fast = self.fast_columns(pa_table)
        rest = pa_table.drop_columns(list(fast))
        out = super().format_row(rest) if rest.num_columns else {}
        return {
            name: fast[name][0] if name in fast else out[name] for name in pa_table.column_names
        }

    def format_column(self, pa_table: pa.Table):
        fast = self.fast_columns(pa_table)
        return fast[pa_table.column_names[0]] if fast else super().format_column(pa_table)


class ZooDataset(datasets.Dataset):
    """A ``datasets.Dataset`` whose torch format reads weight columns at memory speed.

    Example:
        >>> ds, layout = zoo.load("out/quickstart", split="train")  # doctest: +SKIP
        >>> loader = DataLoader(ds, batch_size=256, shuffle=True)  # doctest: +SKIP
    """

    def _getitem(self, key, **kwargs):
        format_type = kwargs.get("format_type", self._format_type)
        if format_type != "torch" or isinstance(key, bool):
            return super()._getitem(key, **kwargs)
        format_kwargs = kwargs.get("format_kwargs", self._format_kwargs) or {}
        formatter = WeightsFormatter(features=self._info.features, **format_kwargs)
        columns = kwargs.get("format_columns", self._format_columns)
        every = kwargs.get("output_all_columns", self._output_all_columns)
        if isinstance(key, list | np.ndarray) and len(key) and not every:
            return self._gather(key, formatter, columns)
        table = query_table(self._data, key, indices=self._indices)
        return format_table(
            table, key, formatter=formatter, format_columns=columns, output_all_columns=every
        )

    def _gather(self, keys, formatter: WeightsFormatter, columns: list[str] | None) -> dict:
        """The rows at ``keys`` (a list of indices), formatted as a batch: float list columns
        gathered from their chunks in one copy, the others by one Arrow ``take`` (``datasets``
        slices each row apart, after which every column holds as many chunks as rows)."""
        n = len(self)
        rows = np.asarray(keys, dtype=np.int64)
        if rows.min() < -n or rows.max() >= n:
            raise IndexError(f"Invalid key: {keys} is out of bounds for size {n}")
        rows = rows % n  # negative indices count back
        if self._indices is not None:
            rows = self._indices.column(0).take(pa.array(rows)).to_numpy().astype(np.int64)
        table = self._data.table
        keep = set(columns or table.column_names)
        names = [c for c in table.column_names if c in keep]
        ready = {}
        for name in names:
            column = table.column(name)
            if is_float_matrix(column.type) and not column.null_count:
                views, starts = self._views(name, column)
                ready[name] = torch.from_numpy(gather_rows(views, starts, rows))
        rest = table.select([c for c in names if c not in ready]).take(pa.array(rows))
        batch = formatter.format_batch(rest, ready)
        return {name: batch[name] for name in names}

    def _views(self, name: str, column: pa.ChunkedArray) -> tuple[list, np.ndarray]:
        """``chunk_views`` of a column and each chunk's first row, made once per table."""
        cache = self.__dict__.setdefault("_zoo_views", {})
        held = cache.get(name)
        if held is None or held[0] is not self._data:  # the table it was made from, kept alive
            lengths = [len(c) for c in column.chunks]
            held = cache[name] = (self._data, chunk_views(column), np.cumsum([0, *lengths[:-1]]))
        return held[1], held[2]

    def __getstate__(self) -> dict:
        """The dataset's state without the chunk views (``pickle`` for ``DataLoader`` workers,
        ``deepcopy`` in ``with_format``: the views would copy the whole column)."""
        state = dict(self.__dict__)
        state.pop("_zoo_views", None)
        return state

    def __getitems__(self, keys: list) -> list:
        """The rows at ``keys`` (a ``DataLoader``'s batch of indices), gathered and formatted
        together, as row dicts whose tensors are views of the batch's."""
        batch = self._getitem(keys)
        if not isinstance(batch, dict):
            return super().__getitems__(keys)
        columns = [_per_row(v) for v in batch.values()]
        return [dict(zip(batch, row, strict=True)) for row in zip(*columns, strict=True)]

    def iter(self, batch_size: int, drop_last_batch: bool = False):
        """Batches of ``batch_size`` rows, formatted (``datasets.Dataset.iter``)."""
        if self._format_type != "torch":
            yield from super().iter(batch_size, drop_last_batch=drop_last_batch)
            return
        stop = len(self) - (len(self) % batch_size if drop_last_batch else 0)
        for start in range(0, stop, batch_size):
            yield self._getitem(slice(start, min(start + batch_size, stop)))

    # methods that make a new dataset: the new one reads fast too
    def select(self, *args, **kwargs) -> ZooDataset:
        return as_zoo_dataset(super().select(*args, **kwargs))

    def shuffle(self, *args, **kwargs) -> ZooDataset:
        return as_zoo_dataset(super().shuffle(*args, **kwargs))

    def filter(self, *args, **kwargs) -> ZooDataset:
        return as_zoo_dataset(super().filter(*args, **kwargs))

    def map(self, *args, **kwargs) -> ZooDataset:
        return as_zoo_dataset(super().map(*args, **kwargs))

    def sort(self, *args, **kwargs) -> ZooDataset:
        return as_zoo_dataset(super().sort(*args, **kwargs))

    def select_columns(self, *args, **kwargs) -> ZooDataset:
        return as_zoo_dataset(super().select_columns(*args, **kwargs))

    def remove_columns(self, *args, **kwargs) -> ZooDataset:
        return as_zoo_dataset(super().remove_columns(*args, **kwargs))

    def flatten_indices(self, *args, **kwargs) -> ZooDataset:
        return as_zoo_dataset(super().flatten_indices(*args, **kwargs))

    def train_test_split(self, *args, **kwargs) -> datasets.DatasetDict:
        parts = super().train_test_split(*args, **kwargs)
        return datasets.DatasetDict({k: as_zoo_dataset(v) for k, v in parts.items()})


_SCALARS = (torch.float32, torch.float64, torch.int64, torch.int32, torch.bool)


def _per_row(value) -> list:
    """A formatted batch column cut into rows for the ``DataLoader``'s collate: tensor views for
    rows that are tensors, numpy scalars for numbers (collated to the same dtype, 10x cheaper
    to make than 0-d tensors), the values themselves for text."""
    if not torch.is_tensor(value):
        return list(value)
    if value.dim() == 1 and value.device.type == "cpu" and value.dtype in _SCALARS:
        return list(value.numpy())
    return list(value.unbind())


def as_zoo_dataset(ds):
    """``ds`` (a ``Dataset``, or a ``DatasetDict`` of them) as :class:`ZooDataset`, with its
    format, indices mapping and fingerprint; streamed datasets are returned as they are."""
    if isinstance(ds, datasets.DatasetDict):
        return datasets.DatasetDict({k: as_zoo_dataset(v) for k, v in ds.items()})
    if not isinstance(ds, datasets.Dataset) or isinstance(ds, ZooDataset):
        return ds
    out = ZooDataset(
        ds._data,
        info=ds.info.copy(),
        split=ds.split,
        indices_table=ds._indices,
        fingerprint=ds._fingerprint,
    )
    out.set_format(**ds.format)
    return out
