"""A zoo written to S3 (issue 13: every store access goes through fsspec): a real S3-compatible
server (moto's) on loopback, a full `zoo run` into s3://, resume, verify, a damaged shard found,
and a card whose sizes are the objects' sizes."""

import fsspec
import pytest
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

import zoo
from zoo.cli import app
from zoo.dist.options import ExecOptions
from zoo.store.manifest import Manifest

from .conftest import tiny_recipe


@pytest.fixture
def s3(monkeypatch):
    """An S3 endpoint on 127.0.0.1 with a bucket; fsspec's s3 filesystem points at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": f"http://{host}:{port}"})
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("zoo-bucket")
    yield fs
    server.stop()


def test_a_zoo_on_s3_runs_resumes_and_verifies(s3, tmp_path):
    recipe = tiny_recipe(None, output={"dir": "s3://zoo-bucket/tiny"})
    folder = zoo.run(recipe, ExecOptions(workers=0))
    assert not (tmp_path / "s3:").exists()
    files = s3.find("zoo-bucket/tiny/dataset/data")
    assert files and all(f.endswith(".parquet") for f in files)
    card = s3.cat_file("zoo-bucket/tiny/dataset/README.md").decode()
    size = sum(s3.size(f) for f in files if "/metadata/" not in f)  # the weight configs
    assert f"{size / 2**20:.2f} MB of Parquet" in card and "0.00 MB of Parquet" not in card
    assert Manifest("s3://zoo-bucket/tiny").verify() == []
    assert zoo.train(recipe, ExecOptions(workers=0)).stored_runs == 4  # resumes from S3
    # the dataset loads from a copy, and a damaged shard is found by `zoo verify`
    s3.get("zoo-bucket/tiny/dataset", str(tmp_path / "copy"), recursive=True)
    ds, layout = zoo.load(tmp_path / "copy", split="train")
    assert ds["weights"][:].shape == (9, layout.num_params)
    shard = next(r for r in Manifest("s3://zoo-bucket/tiny").records("train"))
    data = bytearray(s3.cat_file(f"zoo-bucket/tiny/{shard.path}"))
    data[-10] ^= 0xFF
    s3.pipe_file(f"zoo-bucket/tiny/{shard.path}", bytes(data))
    result = CliRunner().invoke(app, ["verify", "s3://zoo-bucket/tiny"])
    assert result.exit_code == 1 and "corrupt" in result.output and shard.path in result.output
    assert str(folder).startswith("s3:")
