"""Provenance (issue 17): each shard and its manifest record say what computed it; the card
summarizes the environments per config; `zoo verify` warns where a config mixes them."""

import json
import platform

import numpy as np
import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from typer.testing import CliRunner

import zoo
from zoo.cli import app
from zoo.store.manifest import Manifest, ShardRecord
from zoo.store.provenance import Provenance, current_provenance, differing_fields

from .conftest import tiny_recipe


def test_provenance_round_trips_and_old_or_newer_records_read():
    here = current_provenance()
    assert Provenance.from_dict(here.to_dict()) == here
    assert here.python == platform.python_version() and here.torch == torch.__version__
    assert here.numpy == np.__version__ and here.threads == torch.get_num_threads()
    assert here.device.startswith("cpu: ") and here.zoo_version == zoo.__version__
    newer = Provenance.from_dict({**here.to_dict(), "a_later_field": 1})
    older = Provenance.from_dict({"torch": "2.4.0"})
    assert newer == here and older.torch == "2.4.0" and older.threads == 0
    record = {
        "path": "shards/train/b.parquet",
        "stage": "train",
        "batch_id": "b",
        "run_ids": ["r"],
        "checkpoint_ids": ["r-e0000"],
        "rows": 1,
        "bytes": 10,
        "sha256": "0" * 64,
        "zoo_version": "0.1.0",
        "schema_version": 2,
        "created": "2025-01-01T00:00:00Z",
    }
    assert ShardRecord.from_dict(record).provenance is None  # a record from before issue 17
    with_it = ShardRecord.from_dict({**record, "provenance": here.to_dict()})
    assert with_it.provenance == here and ShardRecord.from_dict(with_it.to_dict()) == with_it
    assert ShardRecord.from_dict(record).to_dict() == record  # old records keep their bytes
    assert differing_fields([here, Provenance.from_dict({**here.to_dict(), "threads": 9})]) == [
        "threads"
    ]


def test_shards_records_and_the_card_carry_the_provenance(tmp_path):
    folder = zoo.run(tiny_recipe(tmp_path / "out"))
    here = current_provenance("cpu")
    records = Manifest(tmp_path / "out").records("train")
    assert records and all(r.provenance == here for r in records)
    for rec in records:
        path = tmp_path / "out" / rec.path
        if rec.ext == "safetensors":
            with safe_open(path, framework="pt") as f:
                stored = json.loads(f.metadata()["provenance"])
        else:
            stored = json.loads(pq.read_schema(path).metadata[b"zoo"])["provenance"]
        assert stored == here.to_dict()
    landscape_free = Manifest(tmp_path / "out").records("build")
    assert all(r.provenance is None for r in landscape_free)  # the dataset's own files
    card = (folder / "README.md").read_text()
    section = card.split("## Environments")[1]
    assert f"| `mlp_d1_w8` | 2 | {here.describe()} |" in section
    assert "Each config was trained in one environment." in section
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "out")])
    assert result.exit_code == 0 and "mixes" not in result.output


def test_verify_and_the_card_say_when_a_config_mixes_environments(tmp_path):
    out = tmp_path / "out"
    zoo.run(tiny_recipe(out))
    torch.use_deterministic_algorithms(True)  # the grown runs: other determinism settings
    try:
        folder = zoo.run(tiny_recipe(out, seeds=3))
    finally:
        torch.use_deterministic_algorithms(False)
    result = CliRunner().invoke(app, ["verify", str(out)])
    assert result.exit_code == 0, result.output  # a warning, not a failure
    text = " ".join(result.output.split())
    assert "config mlp_d1_w8 mixes 2 environments (they differ in: deterministic)" in text
    assert "2 train batch(es)" in text and "1 train batch(es)" in text
    card = (folder / "README.md").read_text()
    assert "**`mlp_d1_w8` mix(es) environments**" in card
