"""zoo.load with where= and columns= (issue 17): the `where` syntax against Python's own
reading of it, filtered rows against load-everything-then-filter, the bytes a tenth of a
multi-file zoo costs (locally and from the fake Hub, by range requests), and the fast torch
format against datasets' own (values, dtypes, a shuffled DataLoader)."""

import copy
import re
import shutil
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from huggingface_hub import HfApi
from torch.utils.data import DataLoader

import zoo
from zoo.errors import LoadError
from zoo.hub.formatting import ZooDataset
from zoo.hub.query import ZooFiles, parse_where, read_filtered
from zoo.stages.build import parquet

from .conftest import tiny_recipe
from .test_hub import REPO, hub  # noqa: F401  (the fake Hub fixture)
from .zoofiles import CONFIG, synthetic_zoo

ROWS = [
    {"epoch": e, "train__lr": lr, "phase": p, "seed": s, "hessian_top_eig": h}
    for e, lr, p, s, h in [
        (0, 0.01, "I", 0, None),
        (5, 0.05, "IV-B", 1, 2.0),
        (10, 0.05, "IV-B", 2, 3.0),
        (10, 0.2, "II", 3, None),
        (20, 0.01, "IV-A", 4, 1.5),
    ]
]

WHERES = {
    "epoch >= 10": lambda r: r["epoch"] >= 10,
    "10 <= epoch": lambda r: r["epoch"] >= 10,
    "train.lr == 0.05 and epoch > 5": lambda r: r["train__lr"] == 0.05 and r["epoch"] > 5,
    "phase in ['IV-A', 'IV-B'] or seed == 0": lambda r: (
        r["phase"] in ("IV-A", "IV-B") or r["seed"] == 0
    ),
    "not (phase == 'II') and epoch != 0": lambda r: r["phase"] != "II" and r["epoch"] != 0,
    "0 < epoch < 20": lambda r: 0 < r["epoch"] < 20,
    "hessian_top_eig is None": lambda r: r["hessian_top_eig"] is None,
    "hessian_top_eig is not None and train__lr not in [0.01]": lambda r: (
        r["hessian_top_eig"] is not None and r["train__lr"] != 0.01
    ),
    "epoch > -1": lambda r: True,
}


@pytest.mark.parametrize("text", list(WHERES))
def test_where_strings_select_the_rows_python_selects(text):
    table = pa.Table.from_pylist(ROWS)
    expr, _ = parse_where(text)
    got = table.filter(expr).to_pylist()
    assert got == [r for r in ROWS if WHERES[text](r)]


def test_the_query_modules_examples_run():
    import doctest

    from zoo.hub import query

    result = doctest.testmod(query)
    assert result.attempted and not result.failed


def test_where_strings_that_cannot_be_read_say_how_to_write_them():
    for text, said in [
        ("epoch >=", "does not parse"),
        ("len(epoch) > 2", "is not a column name"),
        ("epoch + 1", "cannot read"),
        ("epoch == train__lr", "is not a value"),
        ("epoch in 3", "takes a list"),
        ("epoch is 3", "compares with None only"),
    ]:
        with pytest.raises(LoadError, match=said) as err:
            parse_where(text)
        assert "train.lr is the column train__lr" in str(err.value)
    _, names = parse_where("model.width == 64 and train.lr > 0")
    assert names == {"model__width", "train__lr"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny trained zoo whose files have one row group per checkpoint epoch."""
    out = tmp_path_factory.mktemp("tiny") / "out"
    previous, parquet.MIN_ROW_GROUP_BYTES = parquet.MIN_ROW_GROUP_BYTES, 1
    try:
        zoo.run(tiny_recipe(out, seeds=3))
    finally:
        parquet.MIN_ROW_GROUP_BYTES = previous
    return out / "dataset"


def _ids(ds) -> list[str]:
    return sorted(ds["checkpoint_id"][:])


def test_filtered_load_equals_load_then_filter(tiny):
    where = "epoch == 2 and train.lr == 0.05"
    full, layout = zoo.load(tiny)
    got, got_layout = zoo.load(tiny, where=where, columns=["checkpoint_id", "weights", "epoch"])
    assert got_layout == layout and set(got) == set(full)
    for split in full:
        expected = full[split].filter(lambda r: r["epoch"] == 2 and r["train__lr"] == 0.05)
        assert len(expected) and _ids(got[split]) == _ids(expected)
        assert got[split].column_names == ["checkpoint_id", "weights", "epoch"]
        order = {c: i for i, c in enumerate(expected["checkpoint_id"][:])}
        rows = sorted(range(len(got[split])), key=lambda i: order[got[split][i]["checkpoint_id"]])
        assert torch.equal(got[split]["weights"][:][rows], expected["weights"][:])
    one, _ = zoo.load(tiny, split="train", where=pc.field("epoch") == 2, columns=["test_acc"])
    assert isinstance(one, ZooDataset) and one.split == "train" and one.column_names == ["test_acc"]
    assert one["test_acc"][:].dtype == torch.float32  # the torch format, as without where=


def test_a_filtered_read_skips_row_groups_by_their_statistics(tiny):
    files = ZooFiles.local(tiny)
    _, everything = read_filtered(files, "mlp_d1_w8", ["train"])
    tables, stats = read_filtered(files, "mlp_d1_w8", ["train"], "epoch == 0", ["test_acc"])
    assert stats.row_groups == everything.row_groups == 3 * stats.row_groups_read  # 3 epochs
    # (these files are smaller than the 64 KiB footer read: bytes are measured on bigger ones)
    assert tables["train"].num_rows * 3 == sum(
        pq.ParquetFile(p).metadata.num_rows for p in (tiny / "data/mlp_d1_w8").glob("train-*")
    )


def test_load_errors_name_what_the_zoo_has(tiny):
    with pytest.raises(LoadError, match=r"'train_lr' \(did you mean \['train__lr'"):
        zoo.load(tiny, where="train_lr > 0.01")
    with pytest.raises(LoadError, match=r"columns names unknown column\(s\) 'weight'"):
        zoo.load(tiny, columns=["weight"])
    with pytest.raises(LoadError, match="no split \\['test'\\]"):
        zoo.load(tiny, split="test", where="epoch == 1")
    with pytest.raises(LoadError, match="leave out streaming=True"):
        zoo.load(tiny, where="epoch == 1", streaming=True)


def _tenth(folder_or_files):
    """The synthetic zoo's last epoch (a tenth of its rows), with every column."""
    return read_filtered(folder_or_files, CONFIG, None, "epoch == 9")


def test_a_tenth_of_a_multi_file_zoo_reads_under_a_fifth_of_its_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(parquet, "MIN_ROW_GROUP_BYTES", 2**17)
    folder = synthetic_zoo(tmp_path / "zoo")
    files = sorted((folder / "data" / CONFIG).glob("*.parquet"))
    assert len(files) == 4 and all(pq.ParquetFile(f).metadata.num_row_groups == 10 for f in files)
    whole = pa.concat_tables(pq.read_table(f) for f in files)
    tables, stats = _tenth(ZooFiles.local(folder))
    expected = whole.filter(pc.field("epoch") == 9)
    assert tables["train"].equals(expected.replace_schema_metadata(tables["train"].schema.metadata))
    assert expected.num_rows * 10 == whole.num_rows
    assert stats.bytes_total == sum(f.stat().st_size for f in files)
    assert stats.row_groups_read == 4 and stats.fraction <= 0.2, stats


def test_a_tenth_of_a_hub_zoo_is_read_by_range_requests(hub, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(parquet, "MIN_ROW_GROUP_BYTES", 2**17)
    folder = synthetic_zoo(tmp_path / "zoo")
    HfApi().create_repo(REPO, repo_type="dataset")
    HfApi().upload_folder(folder_path=folder, repo_id=REPO, repo_type="dataset")
    total = sum(f.stat().st_size for f in (folder / "data").rglob("*.parquet"))
    hub.served.clear()
    ds, layout = zoo.load(REPO, CONFIG, split="train", where="epoch == 9", columns=["weights"])
    local, _ = _tenth(ZooFiles.local(folder))
    assert np.array_equal(ds["weights"][:].numpy(), _matrix(local["train"]))
    assert layout.num_params == 520
    parquet_bytes = sum(n for path, n in hub.served if path.endswith(".parquet"))
    assert 0 < parquet_bytes <= 0.2 * total  # the Hub sent ranges, never a whole file
    assert all(n < total / 4 for _, n in hub.served)
    assert hub.unhandled == []


def _matrix(table: pa.Table) -> np.ndarray:
    column = table["weights"].combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), -1)


def test_the_fast_torch_format_equals_datasets_torch_format(tiny, tmp_path):
    fast, _ = zoo.load(tiny, split="train")
    plain = datasets.load_dataset(str(tiny), "mlp_d1_w8", split="train").with_format("torch")
    assert isinstance(fast, ZooDataset) and fast.format["type"] == "torch"
    for key in (0, -1, slice(1, 5), [3, 0, 3]):
        assert_same(fast[key], plain[key])
    assert torch.equal(fast["weights"][:], plain["weights"][:])
    assert torch.equal(fast["epoch"][:], plain["epoch"][:])
    for a, b in zip(fast.iter(batch_size=5), plain.iter(batch_size=5), strict=True):
        assert_same(a, b)
    shuffled = fast.shuffle(seed=1)  # an indices mapping; still the fast dataset
    assert isinstance(shuffled, ZooDataset)
    assert_same(shuffled[[0, 2]], plain.shuffle(seed=1)[[0, 2]])
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for a, b in zip(
        DataLoader(fast, batch_size=4, shuffle=True, generator=g1),
        DataLoader(plain, batch_size=4, shuffle=True, generator=g2),
        strict=True,
    ):
        assert_same(a, b)
    double = fast.with_format("torch", dtype=torch.float64)
    assert double[0:2]["weights"].dtype == torch.float64 == double[0:2]["test_acc"].dtype
    with pytest.raises(IndexError):
        fast[[0, len(fast)]]
    # the chunk views a gather keeps stay out of the state that deepcopy copies and that a
    # DataLoader sends to its workers (torch pickles the dataset for a spawned worker)
    assert "_zoo_views" in fast.__dict__ and "_zoo_views" not in fast.__getstate__()
    copied = copy.deepcopy(fast)
    assert isinstance(copied, ZooDataset) and "_zoo_views" not in copied.__dict__
    spawned = DataLoader(fast, batch_size=4, num_workers=1, multiprocessing_context="spawn")
    for a, b in zip(spawned, DataLoader(plain, batch_size=4), strict=True):
        assert_same(a, b)


def assert_same(a: dict, b: dict) -> None:
    """Two formatted rows or batches hold the same columns, values and dtypes."""
    assert list(a) == list(b)
    for name in a:
        x, y = a[name], b[name]
        if isinstance(y, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert (
                torch.equal(x.nan_to_num(-1), y.nan_to_num(-1))
                if y.is_floating_point()
                else (torch.equal(x, y))
            ), name
        else:
            assert x == y, name


def test_a_copied_zoo_folder_loads_filtered(tiny, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)
    ds, _ = zoo.load(copy, split="validation", where="epoch == 0", columns=["checkpoint_id"])
    assert all(c.endswith("-e0000") for c in ds["checkpoint_id"][:])


def test_the_readmes_read_snippet_runs(tiny):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Read a zoo")[1].split("\n## ")[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    code = code.replace('"alice/quickstart-zoo"', repr(str(tiny)))
    code = code.replace("mlp_d2_w32", "mlp_d1_w8").replace("epoch >= 10", "epoch >= 1")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["weights"].shape[1] == 610 and namespace["weights"].dtype == torch.float32
    assert namespace["acc"].dtype == torch.float32


def test_the_metadata_config_answers_a_question_then_loads_just_those_weights(tiny):
    rows, layout = zoo.load(
        tiny,
        "metadata",
        split="rows",
        where="epoch == 2 and train.lr == 0.05",
        columns=["config", "split", "checkpoint_id", "test_acc"],
    )
    assert layout is None and len(rows) and set(rows["config"][:]) == {"mlp_d1_w8"}
    best = max(range(len(rows)), key=lambda i: rows[i]["test_acc"].item())
    ckpt, split = rows[best]["checkpoint_id"], rows[best]["split"]
    ds, _ = zoo.load(tiny, "mlp_d1_w8", split, where=f"checkpoint_id == '{ckpt}'")
    assert ds["checkpoint_id"][:] == [ckpt] and ds["weights"][:].shape == (1, 610)
