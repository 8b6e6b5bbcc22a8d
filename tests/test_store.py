"""Tests of zoo.store and the layers under it: atomic files (zoo.store.fs), shards, the manifest."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from zoo import SCHEMA_VERSION, __version__
from zoo.errors import StoreError
from zoo.store import fs as fsio
from zoo.store.fs import atomic_write_bytes, sha256_file
from zoo.store.manifest import Manifest, Problem, ShardRecord
from zoo.store.provenance import current_provenance, provenance_json, read_provenance
from zoo.store.shards import (
    read_table_shard,
    read_tensor_shard,
    write_table_shard,
    write_tensor_shard,
)


def _record(path: str = "shards/train/b1.safetensors", **kw) -> ShardRecord:
    fields = dict(
        path=path,
        stage="train",
        batch_id="b1",
        run_ids=("r1", "r2"),
        checkpoint_ids=("r1-e0001", "r2-e0001"),
        rows=2,
        bytes=123,
        sha256="ab" * 32,
        zoo_version="0.1.0",
        schema_version=1,
        created="2024-01-01T00:00:00Z",
    )
    fields.update(kw)
    return ShardRecord(**fields)


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "r1-e0001/w": torch.randn(4, 3, generator=g),
        "r1-e0001/b": torch.randn(4, generator=g).double(),
        "r2-e0001/w": torch.randn(3, 4, generator=g).t(),  # non-contiguous on purpose
        "r2-e0001/i": torch.arange(5, dtype=torch.int64),
    }


def _table() -> pa.Table:
    t = pa.table({"checkpoint_id": ["r1-e0001", "r2-e0001"], "loss": [0.5, 0.25]})
    return t.replace_schema_metadata({b"huggingface": b'{"info": {"features": {}}}'})


def _store(tmp_path: Path, batches=("b1", "b2")) -> tuple[Manifest, list[ShardRecord]]:
    """A store with one tensor and one table shard per batch, all recorded."""
    recs = []
    for i, b in enumerate(batches):
        runs, ckpts = [f"{b}r1", f"{b}r2"], [f"{b}r1-e0001", f"{b}r2-e0001"]
        recs.append(write_tensor_shard(tmp_path, "train", b, _tensors(i), {}, runs, ckpts))
        recs.append(write_table_shard(tmp_path, "train", b, _table(), runs, ckpts))
    m = Manifest(tmp_path)
    m.append(recs)
    return m, recs


# --------------------------------------------------------------------------- values


def test_shard_record_round_trip_and_ext():
    r = _record()
    assert ShardRecord.from_dict(r.to_dict()) == r
    assert ShardRecord.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert r.ext == "safetensors"
    assert _record("shards/train/b1.parquet").ext == "parquet"


def test_problem_round_trip():
    p = Problem("shards/train/b1.parquet", "corrupt", "expected sha256 ab… got cd…")
    assert Problem.from_dict(p.to_dict()) == p


# --------------------------------------------------------------------------- tensor shards


def test_tensor_shard_round_trip(tmp_path):
    tensors = _tensors()
    rec = write_tensor_shard(
        tmp_path, "train", "b7", tensors, {"task": "mnist"}, ["r1", "r2", "r1"], ["c1", "c2"]
    )
    assert rec.path == "shards/train/b7.safetensors"
    full = tmp_path / "shards" / "train" / "b7.safetensors"
    assert full.is_file()
    assert rec.sha256 == hashlib.sha256(full.read_bytes()).hexdigest() == sha256_file(full)
    assert rec.bytes == full.stat().st_size
    assert rec.run_ids == ("r1", "r2")
    assert rec.checkpoint_ids == ("c1", "c2") and rec.rows == 2
    assert (rec.stage, rec.batch_id, rec.zoo_version) == ("train", "b7", __version__)
    assert rec.schema_version == SCHEMA_VERSION and rec.created.endswith("Z")

    back, meta = read_tensor_shard(tmp_path, rec.path)
    assert set(back) == set(tensors)
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype
        assert torch.equal(back[name], t), name
    assert meta == {
        "task": "mnist",
        "zoo_version": __version__,
        "schema_version": str(SCHEMA_VERSION),
        "provenance": provenance_json(current_provenance()),  # issue 17: what computed it
    }
    assert rec.provenance == current_provenance() == read_provenance(meta)


def test_tensor_shard_shared_storage_is_saved(tmp_path):
    flat = torch.arange(10, dtype=torch.float32)
    tensors = {"a": flat[:6].view(2, 3), "b": flat[6:], "c": flat}
    rec = write_tensor_shard(tmp_path, "train", "b1", tensors, {}, ["r"], ["r-e0001"])
    back, _ = read_tensor_shard(tmp_path, rec.path)
    assert all(torch.equal(back[k], v) for k, v in tensors.items())


def test_tensor_shard_non_str_metadata_raises(tmp_path):
    with pytest.raises(StoreError, match="'epochs'"):
        write_tensor_shard(tmp_path, "train", "b1", _tensors(), {"epochs": 5}, ["r"], ["c"])
    assert not (tmp_path / "shards").exists()


def test_bad_batch_id_raises(tmp_path):
    with pytest.raises(StoreError, match="batch id"):
        write_tensor_shard(tmp_path, "train", "../x", _tensors(), {}, ["r"], ["c"])


def test_read_tensor_shard_missing_or_corrupt(tmp_path):
    with pytest.raises(StoreError, match="zoo verify"):
        read_tensor_shard(tmp_path, "shards/train/nope.safetensors")
    bad = tmp_path / "shards" / "train" / "bad.safetensors"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(StoreError, match="bad.safetensors") as e:
        read_tensor_shard(tmp_path, "shards/train/bad.safetensors")
    assert "zoo verify" in str(e.value)


# --------------------------------------------------------------------------- table shards


def test_table_shard_round_trip(tmp_path):
    table = _table()
    rec = write_table_shard(
        tmp_path, "landscape", "b3", table, ["r1", "r2"], ["c1", "c2"], {"probe": "hessian"}
    )
    assert rec.path == "shards/landscape/b3.parquet" and rec.ext == "parquet"
    assert rec.rows == 2
    full = tmp_path / rec.path
    assert rec.sha256 == hashlib.sha256(full.read_bytes()).hexdigest()

    back = read_table_shard(tmp_path, rec.path)
    assert back.equals(table)  # equals() compares data, not schema metadata
    meta = back.schema.metadata
    assert meta[b"huggingface"] == table.schema.metadata[b"huggingface"]
    assert json.loads(meta[b"zoo"]) == {
        "zoo_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "probe": "hessian",
        "provenance": current_provenance().to_dict(),
    }
    assert rec.provenance == current_provenance()
    pf = pq.ParquetFile(full)
    codecs = {
        pf.metadata.row_group(i).column(j).compression
        for i in range(pf.metadata.num_row_groups)
        for j in range(pf.metadata.num_columns)
    }
    assert codecs == {"ZSTD"}


def test_table_shard_non_json_metadata_raises(tmp_path):
    with pytest.raises(StoreError, match="'when'"):
        write_table_shard(tmp_path, "train", "b1", _table(), ["r"], ["c"], {"when": object()})


def test_read_table_shard_missing_or_corrupt(tmp_path):
    with pytest.raises(StoreError, match="nope.parquet"):
        read_table_shard(tmp_path, "shards/train/nope.parquet")
    rec = write_table_shard(tmp_path, "train", "b1", _table(), ["r"], ["c"])
    full = tmp_path / rec.path
    full.write_bytes(full.read_bytes()[: rec.bytes // 2])
    with pytest.raises(StoreError, match="zoo verify"):
        read_table_shard(tmp_path, rec.path)


# --------------------------------------------------------------------------- atomic write


def test_atomic_write_creates_parents_and_replaces(tmp_path):
    target = tmp_path / "a" / "b" / "f.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["f.bin"]


def _failing_replace(src, dst):
    raise OSError(28, "No space left on device")


def test_atomic_write_failure_leaves_no_partial(tmp_path, monkeypatch):
    target = tmp_path / "shards" / "train" / "b1.safetensors"
    monkeypatch.setattr(fsio.os, "replace", _failing_replace)
    with pytest.raises(StoreError, match="b1.safetensors"):
        atomic_write_bytes(target, b"x" * 1000)
    assert not target.exists()
    assert os.listdir(target.parent) == []  # the temp file was cleaned up


def test_atomic_write_failure_keeps_old_content(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    monkeypatch.setattr(fsio.os, "replace", _failing_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


# --------------------------------------------------------------------------- manifest


def test_manifest_empty(tmp_path):
    m = Manifest(tmp_path)
    assert m.records() == [] and m.done_run_ids("train") == set() and m.verify() == []
    m.append([])
    assert not m.path.exists()


def test_manifest_append_records_round_trip(tmp_path):
    m = Manifest(tmp_path)
    a = _record("shards/train/b1.safetensors")
    b = _record("shards/landscape/b1.parquet", stage="landscape")
    m.append([a])
    m.append([b])
    assert m.path == tmp_path / "manifest.jsonl"
    assert len(m.path.read_text().splitlines()) == 2
    assert Manifest(tmp_path).records() == [a, b]
    assert m.records("landscape") == [b]
    assert m.records("nope") == []


def test_manifest_dedupe_last_wins_first_order(tmp_path):
    m = Manifest(tmp_path)
    a1 = _record("shards/train/b1.safetensors", sha256="11" * 32)
    b = _record("shards/train/b2.safetensors", batch_id="b2")
    a2 = _record("shards/train/b1.safetensors", sha256="22" * 32)
    m.append([a1, b, a2])
    assert m.records() == [a2, b]


def test_manifest_torn_last_line_ignored_and_repaired(tmp_path):
    m = Manifest(tmp_path)
    a, b, c = (_record(f"shards/train/b{i}.safetensors", batch_id=f"b{i}") for i in range(3))
    m.append([a])
    line = json.dumps(b.to_dict())
    with open(m.path, "a") as f:
        f.write(line[: len(line) // 2])  # a kill in the middle of an append
    assert m.records() == [a]
    # The next append cuts the torn tail, so it does not become a corrupt middle line.
    m.append([c])
    assert m.records() == [a, c]


def test_manifest_corrupt_middle_line_raises_with_line_number(tmp_path):
    m = Manifest(tmp_path)
    m.append([_record("shards/train/b1.safetensors")])
    with open(m.path, "a") as f:
        f.write("{garbage\n")
    m.append([_record("shards/train/b2.safetensors")])
    with pytest.raises(StoreError, match="line 2") as e:
        m.records()
    assert "manifest.jsonl" in str(e.value)


def test_manifest_middle_line_missing_keys_raises(tmp_path):
    m = Manifest(tmp_path)
    m.path.write_text('{"path": "x"}\n' + json.dumps(_record().to_dict()) + "\n")
    with pytest.raises(StoreError, match="line 1"):
        m.records()


def test_done_ids_require_every_ext(tmp_path):
    m = Manifest(tmp_path)
    full = dict(run_ids=("r1", "r2"), batch_id="b1")
    half = dict(run_ids=("r3",), batch_id="b2")
    m.append(
        [
            _record("shards/train/b1.safetensors", **full),
            _record("shards/train/b1.parquet", **full),
            _record("shards/train/b2.safetensors", **half),  # its parquet was never recorded
            _record("shards/eval/b9.parquet", stage="eval", run_ids=("r9",), batch_id="b9"),
        ]
    )
    assert m.done_run_ids("train") == {"r1", "r2"}
    assert m.done_batch_ids("train") == {"b1"}
    assert m.done_run_ids("train", exts=("safetensors",)) == {"r1", "r2", "r3"}
    assert m.done_batch_ids("train", exts=("safetensors",)) == {"b1", "b2"}
    assert m.done_run_ids("eval") == set()
    assert m.done_run_ids("eval", exts=("parquet",)) == {"r9"}


def test_killed_write_is_not_done(tmp_path):
    m, _ = _store(tmp_path, batches=("b1",))
    # A killed task: both shards written, the driver never appended their records.
    runs, ckpts = ["k1", "k2"], ["k1-e0001", "k2-e0001"]
    write_tensor_shard(tmp_path, "train", "bk", _tensors(), {}, runs, ckpts)
    write_table_shard(tmp_path, "train", "bk", _table(), runs, ckpts)
    assert m.done_run_ids("train") == {"b1r1", "b1r2"}
    assert "bk" not in m.done_batch_ids("train")
    orphans = {p.path for p in m.verify() if p.kind == "orphan"}
    assert orphans == {"shards/train/bk.safetensors", "shards/train/bk.parquet"}


# --------------------------------------------------------------------------- verify


def test_verify_clean_store(tmp_path):
    m, recs = _store(tmp_path)
    assert len(m.records()) == 4
    assert m.verify() == []


def test_verify_finds_every_problem(tmp_path):
    m, recs = _store(tmp_path)
    b1_st, b1_pq, b2_st, b2_pq = (r.path for r in recs)

    full = tmp_path / b1_st
    full.write_bytes(full.read_bytes()[:-10])  # truncated

    data = bytearray((tmp_path / b2_st).read_bytes())
    data[-1] ^= 0xFF  # same size, one byte flipped
    (tmp_path / b2_st).write_bytes(bytes(data))

    (tmp_path / b1_pq).unlink()  # missing

    orphan = tmp_path / "shards" / "train" / "b3.parquet"
    orphan.write_bytes(b"left by a killed run")

    problems = {p.path: p for p in m.verify()}
    assert {p: problems[p].kind for p in problems} == {
        b1_st: "truncated",
        b2_st: "corrupt",
        b1_pq: "missing",
        "shards/train/b3.parquet": "orphan",
    }
    assert "zoo run" in problems[b2_st].detail and "sha256" in problems[b2_st].detail
    assert str(recs[0].bytes) in problems[b1_st].detail


def test_verify_grown_file_is_size_problem(tmp_path):
    m, recs = _store(tmp_path, batches=("b1",))
    with open(tmp_path / recs[1].path, "ab") as f:
        f.write(b"extra")
    assert [(p.path, p.kind) for p in m.verify()] == [(recs[1].path, "size")]


def test_sha256_file_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(fsio, "HASH_CHUNK", 7)
    f = tmp_path / "x.bin"
    payload = os.urandom(100)
    f.write_bytes(payload)
    assert sha256_file(f) == hashlib.sha256(payload).hexdigest()
