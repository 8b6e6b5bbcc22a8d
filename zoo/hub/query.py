"""Filtered, projected reads of a zoo: only the Parquet files and row groups a question needs.

``zoo.load(source, config, where=..., columns=...)`` comes here. ``where`` is a
``pyarrow.compute`` expression (``pc.field("epoch") >= 10``) or a string in a small, Python-like
syntax (:func:`parse_where`)::

    "model.width == 64 and phase == 'IV-B' and epoch > 10"
    "train.lr in [0.01, 0.05] and not status == 'diverged'"
    "hessian_top_eig is not None"

A dotted name is a recipe key (``train.lr`` is the column ``train__lr``); a bare name is a
column. How the read stays small:

1. Files: only the config's files of the asked splits (``data/<config>/<split>-*.parquet``).
2. Row groups: each file's footer is read first; a row group whose column statistics (min/max,
   null counts: the build writes them for every column but the float lists) show that no row
   can match is skipped. The build writes rows ordered by split, epoch, step, grid
   coordinates and seed, and starts a new row group where the epoch changes (once a group
   holds ``MIN_ROW_GROUP_BYTES``), so filters on epoch and grid values skip most groups.
3. Columns: only the asked columns and the ones ``where`` names are read (Parquet stores each
   column of a row group apart: a projection without ``weights`` reads no weight).

Locally the files are read from disk; from the Hub through ``huggingface_hub``'s
``HfFileSystem``, by HTTP range requests (nothing is downloaded whole). :class:`ReadStats`
says what was read: ``benchmarks/load_throughput.py`` reports it against the whole zoo.
"""

from __future__ import annotations

import ast
import difflib
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from pyarrow.fs import FSSpecHandler, PyFileSystem

from zoo.errors import LoadError
from zoo.naming import DATA_DIR

WHERE_HELP = (
    "Write `where` as a pyarrow expression (pc.field('epoch') >= 10) or a string such as "
    '"model.width == 64 and epoch >= 10": comparisons (== != < <= > >=), `in [...]`, '
    "`not in [...]`, `is None`, `is not None`, joined with and / or / not and parentheses; "
    "names are columns, dotted names recipe keys (train.lr is the column train__lr); values "
    "are numbers, quoted strings, True, False"
)

_COMPARE: dict[type, Callable] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}
_MIRROR = {ast.Lt: ast.Gt, ast.LtE: ast.GtE, ast.Gt: ast.Lt, ast.GtE: ast.LtE}


# --- where ----------------------------------------------------------------------------------------


def parse_where(text: str) -> tuple[pc.Expression, set[str]]:
    """A ``where`` string -> a pyarrow expression and the columns it names.

    Example:
        >>> expr, names = parse_where("train.lr == 0.05 and epoch >= 10")
        >>> sorted(names)
        ['epoch', 'train__lr']
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise LoadError(f"where={text!r} does not parse ({err.msg}). {WHERE_HELP}") from err
    names: set[str] = set()
    return _expression(tree.body, text, names), names


def _expression(node: ast.AST, text: str, names: set[str]) -> pc.Expression:
    if isinstance(node, ast.BoolOp):
        parts = [_expression(v, text, names) for v in node.values]
        out = parts[0]
        for part in parts[1:]:
            out = (out & part) if isinstance(node.op, ast.And) else (out | part)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_expression(node.operand, text, names)
    if isinstance(node, ast.Compare):
        left, out = node.left, None
        for op, right in zip(node.ops, node.comparators, strict=True):  # a < b < c: a<b & b<c
            part = _comparison(left, op, right, text, names)
            out, left = part if out is None else out & part, right
        return out
    raise LoadError(f"where={text!r}: cannot read {_source(node, text)!r}. {WHERE_HELP}")


def _comparison(left, op, right, text: str, names: set[str]) -> pc.Expression:
    if isinstance(op, ast.Is | ast.IsNot):
        if not (_is_constant(right) and right.value is None):
            raise LoadError(f"where={text!r}: `is` compares with None only. {WHERE_HELP}")
        null = _field(left, text, names).is_null()
        return null if isinstance(op, ast.Is) else ~null
    if isinstance(op, ast.In | ast.NotIn):
        values = _values(right, text)
        member = _field(left, text, names).isin(values)
        return member if isinstance(op, ast.In) else ~member
    if type(op) not in _COMPARE:
        raise LoadError(f"where={text!r}: unknown comparison. {WHERE_HELP}")
    if _is_constant(left) and not _is_constant(right):  # 10 <= epoch reads epoch >= 10
        left, right, op = right, left, _MIRROR.get(type(op), type(op))()
    return _COMPARE[type(op)](_field(left, text, names), _value(right, text))


def _is_constant(node) -> bool:
    return isinstance(node, ast.Constant) or (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
    )


def _field(node, text: str, names: set[str]) -> pc.Expression:
    """A column: a name, or a dotted recipe key (``train.lr`` -> ``train__lr``)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise LoadError(
            f"where={text!r}: {_source(node, text)!r} is not a column name. {WHERE_HELP}"
        )
    name = "__".join([node.id, *parts])
    names.add(name)
    return pc.field(name)


def _value(node, text: str):
    if _is_constant(node):
        value = ast.literal_eval(node)
        if isinstance(value, bool | int | float | str):
            return value
    raise LoadError(f"where={text!r}: {_source(node, text)!r} is not a value. {WHERE_HELP}")


def _values(node, text: str) -> list:
    if not isinstance(node, ast.List | ast.Tuple | ast.Set):
        raise LoadError(f"where={text!r}: `in` takes a list, e.g. [16, 32]. {WHERE_HELP}")
    return [_value(v, text) for v in node.elts]


def _source(node, text: str) -> str:
    return ast.get_source_segment(text.strip(), node) or ast.dump(node)


def where_expression(where, schema: pa.Schema, source: str) -> pc.Expression | None:
    """``where`` (a string, a pyarrow expression or ``None``) as an expression over ``schema``,
    every column it names checked, with the nearest column names where one is unknown."""
    if where is None:
        return None
    if isinstance(where, pc.Expression):
        return where
    if not isinstance(where, str):
        raise LoadError(f"where must be a string or a pyarrow expression, not {type(where)}")
    expr, names = parse_where(where)
    check_columns(names, schema, source, what="where")
    return expr


def check_columns(names, schema: pa.Schema, source: str, what: str = "columns") -> None:
    """Refuse column names ``schema`` lacks, naming the closest ones."""
    unknown = [n for n in names if n not in schema.names]
    if unknown:
        hints = {n: difflib.get_close_matches(n, schema.names, n=3) for n in unknown}
        said = "; ".join(f"{n!r} (did you mean {h}?)" if h else repr(n) for n, h in hints.items())
        raise LoadError(
            f"{source}: {what} names unknown column(s) {said}. The config's columns: "
            f"{', '.join(schema.names)}"
        )


# --- reading --------------------------------------------------------------------------------------


@dataclass
class ReadStats:
    """What a filtered read touched, against the whole of the config's files.

    Attributes:
        files: the config's files of the asked splits; bytes_total: their size.
        row_groups: their row groups; row_groups_read: those the statistics could not rule out.
        bytes_read: bytes read from the files (footers included), ``requests``: reads issued
            (HTTP range requests on the Hub).
    """

    files: int = 0
    row_groups: int = 0
    row_groups_read: int = 0
    bytes_total: int = 0
    bytes_read: int = 0
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def fraction(self) -> float:
        """Bytes read / bytes of the files."""
        return self.bytes_read / max(1, self.bytes_total)

    def count(self, n: int) -> None:
        with self._lock:  # pyarrow reads column chunks from several threads
            self.bytes_read += n
            self.requests += 1


class _CountingFile(io.RawIOBase):
    """A read-only file that counts the bytes its reads return."""

    def __init__(self, raw, stats: ReadStats):
        super().__init__()
        self._raw, self._stats = raw, stats

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._stats.count(len(data))
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _CountingHandler(FSSpecHandler):
    """pyarrow's view of an fsspec filesystem, whose files count what they read; Hub files are
    opened without read-ahead (a read fetches exactly its range)."""

    def __init__(self, fs, stats: ReadStats):
        super().__init__(fs)
        self.stats = stats

    def open_input_file(self, path: str):
        from pyarrow import PythonFile

        options = {} if self.fs.protocol == "file" else {"cache_type": "none", "block_size": 2**20}
        raw = self.fs.open(path, mode="rb", **options)
        return PythonFile(_CountingFile(raw, self.stats), mode="r")


@dataclass(frozen=True)
class ZooFiles:
    """Where a zoo's files are: an fsspec filesystem and the dataset folder's path on it."""

    fs: object
    root: str

    @classmethod
    def local(cls, folder: str | Path) -> ZooFiles:
        from fsspec.implementations.local import LocalFileSystem

        return cls(LocalFileSystem(), Path(folder).resolve().as_posix())

    @classmethod
    def hub(cls, repo_id: str, revision: str | None, token: str | None) -> ZooFiles:
        from huggingface_hub import HfFileSystem

        at = f"@{quote(revision, safe='')}" if revision else ""
        return cls(HfFileSystem(token=token), f"datasets/{repo_id}{at}")

    def split_files(self, config: str) -> dict[str, list[str]]:
        """split -> the config's Parquet files (paths on ``fs``), sorted."""
        found = self.fs.glob(f"{self.root}/{DATA_DIR}/{config}/*.parquet")
        out: dict[str, list[str]] = {}
        for path in sorted(found):
            out.setdefault(path.rsplit("/", 1)[-1].split("-")[0], []).append(path)
        return out


def read_filtered(
    files: ZooFiles,
    config: str,
    splits: list[str] | None,
    where=None,
    columns: list[str] | None = None,
) -> tuple[dict[str, pa.Table], ReadStats]:
    """The rows of ``config`` that satisfy ``where``, with ``columns`` only, per split.

    Args:
        files: the zoo (:meth:`ZooFiles.local` or :meth:`ZooFiles.hub`).
        config: the config.
        splits: splits to read; ``None``: every split.
        where: a pyarrow expression or a string (:func:`parse_where`); ``None``: every row.
        columns: the columns to return, in this order; ``None``: every column.
    Returns:
        ``({split: table}, ReadStats)``; each table keeps the file schema's column types.
    Example:
        >>> tables, stats = read_filtered(ZooFiles.local("out/quickstart/dataset"), "mlp_d2_w32",
        ...     ["train"], "epoch == 20", ["weights", "test_acc"])  # doctest: +SKIP
    """
    by_split = files.split_files(config)
    source = f"{files.root}/{DATA_DIR}/{config}"
    if not by_split:
        raise LoadError(f"{source}: no Parquet files; is {config!r} a config of this zoo?")
    missing = [s for s in splits or [] if s not in by_split]
    if missing:
        raise LoadError(f"{source}: no split {missing}; its splits: {sorted(by_split)}")
    stats = ReadStats()
    pafs = PyFileSystem(_CountingHandler(files.fs, stats))
    fmt = pads.ParquetFileFormat()
    wanted = {s: by_split[s] for s in (splits or sorted(by_split))}
    stats.files = sum(len(p) for p in wanted.values())
    stats.bytes_total = sum(files.fs.size(p) for paths in wanted.values() for p in paths)
    tables = {}
    for split, paths in wanted.items():
        fragments = [fmt.make_fragment(p, filesystem=pafs) for p in paths]
        schema = fragments[0].physical_schema  # reads the first footer (the build's schema)
        expr = where_expression(where, schema, source)
        check_columns(columns or [], schema, source)
        groups = []
        for fragment in fragments:  # footers: which row groups may hold matching rows
            stats.row_groups += fragment.num_row_groups
            groups += fragment.split_by_row_group(filter=expr, schema=schema)
        stats.row_groups_read += len(groups)
        dataset = pads.FileSystemDataset(groups, schema, fmt, pafs)
        tables[split] = dataset.to_table(columns=columns, filter=expr)
    return tables, stats
