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


def _matrix(column: pa.ChunkedArray, owned: bool) -> torch.Tensor | None:
    """A fixed-length float list column as one ``(N, n)`` tensor: a view of the Arrow buffer
    where ``owned`` (rows just gathered by a ``take``: nobody else holds them), else copied
    once out of it; ``None`` where a row is null (the plain torch format handles those)."""
    if column.null_count:
        return None
    n = column.type.list_size
    values = column.combine_chunks().flatten() if column.num_chunks != 1 else None
    values = values if values is not None else column.chunk(0).flatten()
    dtype = torch.from_numpy(np.empty(0, values.type.to_pandas_dtype())).dtype
    if owned and column.num_chunks == 1 and len(values):
        size = dtype.itemsize
        flat = torch.frombuffer(
            values.buffers()[1], dtype=dtype, count=len(values), offset=values.offset * size
        )
    else:
        flat = torch.from_numpy(np.array(values.to_numpy(zero_copy_only=False)))  # one copy
    return flat.reshape(len(column), n)


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

    def fast_columns(self, pa_table: pa.Table, owned: bool = False) -> dict[str, torch.Tensor]:
        """The columns this formatter reads itself (float lists, numbers), as tensors."""
        fast = {}
        for name, column in zip(pa_table.column_names, pa_table.columns, strict=True):
            tensor = _matrix(column, owned) if is_float_matrix(column.type) else _vector(column)
            if tensor is not None:
                fast[name] = self._convert(tensor)
        return fast

    def format_batch(self, pa_table: pa.Table, owned: bool = False) -> dict:
        fast = self.fast_columns(pa_table, owned)
        rest = pa_table.drop_columns(list(fast))
        out = super().format_batch(rest) if rest.num_columns else {}
        return {name: fast[name] if name in fast else out[name] for name in pa_table.column_names}

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
            return formatter.format_batch(self._take(key, columns), owned=True)
        table = query_table(self._data, key, indices=self._indices)
        return format_table(
            table, key, formatter=formatter, format_columns=columns, output_all_columns=every
        )

    def _take(self, keys, columns: list[str] | None) -> pa.Table:
        """The rows at ``keys`` (and ``columns``) gathered by one Arrow ``take``: one copy
        (``datasets`` slices each row apart, then every column holds as many chunks as rows)."""
        n = len(self)
        rows = np.asarray(keys, dtype=np.int64)
        if rows.min() < -n or rows.max() >= n:
            raise IndexError(
                f"Invalid key: {rows.min()} or {rows.max()} is out of bounds for size {n}"
            )
        rows = rows % n  # negative indices count back
        if self._indices is not None:
            rows = self._indices.column(0).take(pa.array(rows)).to_numpy()
        table = self._data.table
        if columns is not None:  # in the table's order, as datasets' own formatting keeps it
            keep = set(columns)
            table = table.select([c for c in table.column_names if c in keep])
        return table.take(pa.array(rows))

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
