"""Push, load, pull against an in-process fake Hub (tests/fakehub.py): the real `zoo push` and
the real `datasets.load_dataset("user/name")` run through huggingface_hub's client factory."""

import hashlib
import re
import shutil
from pathlib import Path

import datasets
import huggingface_hub
import pytest
import torch
from huggingface_hub import HfFileSystem, constants
from huggingface_hub.utils._http import default_client_factory
from typer.testing import CliRunner

import zoo
from zoo.cli import app
from zoo.errors import HubError
from zoo.hub import client as zoo_hub
from zoo.hub import push as hubfiles

from .conftest import tiny_recipe
from .fakehub import FakeHub

TOKEN = "hf_zooTestWriteToken0123456789abcdef"
READ_TOKEN = "hf_zooTestReadToken0123456789abcdef"
REPO = "alice/tiny-zoo"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The fake Hub, installed as huggingface_hub's HTTP client; caches under tmp_path."""
    fake = FakeHub({TOKEN: ("alice", "write"), READ_TOKEN: ("alice", "read")})
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    for name, value in {
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }.items():
        monkeypatch.setattr(constants, name, value)
    for name in ("HF_DATASETS_CACHE", "DOWNLOADED_DATASETS_PATH", "EXTRACTED_DATASETS_PATH"):
        monkeypatch.setattr(datasets.config, name, home / "datasets" / name.lower())
    monkeypatch.setattr(zoo_hub, "RETRY_WAIT_S", 0.0)
    HfFileSystem.clear_instance_cache()
    huggingface_hub.set_client_factory(fake.client)
    yield fake
    huggingface_hub.set_client_factory(default_client_factory)
    HfFileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny zoo built once; tests copy it before changing it."""
    out = tmp_path_factory.mktemp("zoo") / "out"
    zoo.run(tiny_recipe(out))
    return out


def _copy(built: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(built, out)
    return out


def _rows(loaded) -> dict[str, dict]:
    """checkpoint_id -> row of every split of a DatasetDict/IterableDatasetDict (or one split)."""
    parts = loaded.values() if hasattr(loaded, "values") else [loaded]
    return {row["checkpoint_id"]: row for part in parts for row in part}


def _same_row(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)


def _equal(x, y) -> bool:
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        return torch.equal(torch.as_tensor(x), torch.as_tensor(y))
    return x == y or (x != x and y != y)  # NaN == NaN


def _local_rows(folder: Path, config: str) -> dict[str, dict]:
    return _rows(datasets.load_dataset(str(folder), config))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_push_then_load_back_every_row_also_streaming(hub, built, tmp_path):
    out = _copy(built, tmp_path)
    result = zoo.push(out, REPO)
    folder = out / "dataset"
    local = {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }
    remote = hub.files(REPO)
    assert set(remote) == set(local) | {".gitattributes"}
    assert all(remote[p] == local[p] for p in local if p != "README.md")
    assert f'zoo.load("{REPO}"' in remote["README.md"].decode()  # the card names the repo
    assert result.tag == "v0.1.0-1" and hub.repos[REPO].tags["v0.1.0-1"] == result.commits[-1]
    expected = _local_rows(folder, "mlp_d1_w8")
    for streaming in (False, True):
        got = _rows(datasets.load_dataset(REPO, "mlp_d1_w8", streaming=streaming))
        assert got.keys() == expected.keys() and len(got) == 12
        assert all(_same_row(got[k], expected[k]) for k in expected)
    ds, layout = zoo.load(REPO, split="train")
    assert layout == zoo.load_layout(folder)
    assert isinstance(ds[0]["weights"], torch.Tensor) and ds["weights"][:].shape[1] == 610
    net = zoo.to_module(ds[0], layout)
    assert sum(p.numel() for p in net.parameters()) == 610
    streamed = zoo.load(REPO, "mlp_d1_w8", split="train", streaming=True)
    row = next(iter(streamed.dataset))
    assert torch.equal(row["weights"], torch.as_tensor(expected[row["checkpoint_id"]]["weights"]))
    assert hub.unhandled == []


def test_the_pushed_cards_how_to_load_code_runs(hub, built, tmp_path):
    zoo.push(_copy(built, tmp_path), REPO)
    card = hub.files(REPO)["README.md"].decode()
    (code,) = re.findall(r"## How to load.*?```python\n(.*?)```", card, flags=re.S)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["weights"].shape == (len(namespace["ds"]), 610)
    assert isinstance(namespace["net"], torch.nn.Module)
    assert namespace["row"]["checkpoint_id"] in set(namespace["ds"]["checkpoint_id"])


def test_the_readmes_publish_snippet_runs(hub, built, tmp_path):
    zoo.push(_copy(built, tmp_path), REPO)
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Publish on the Hugging Face Hub")[1].split("\n## ")[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    code = code.replace("alice/quickstart-zoo", REPO).replace("mlp_d2_w32", "mlp_d1_w8")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["weights"].shape == (9, 610)
    assert next(iter(namespace["stream"]))["weights"].shape == (610,)


def _grow(out: Path, **sections) -> dict[str, bytes]:
    """Rebuild ``out`` with a grown recipe; return the dataset files' bytes before."""
    folder = out / "dataset"
    before = {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }
    zoo.run(tiny_recipe(out, **sections))
    return before


def _uploaded(hub: FakeHub, since: int) -> tuple[set[str], set[str]]:
    """Paths committed and sha256 of LFS objects uploaded since request ``since``."""
    paths = {p for c in hub.commits[since:] for p in c["added"]}
    return paths, set(hub.lfs_puts)


def test_pushing_a_grown_zoo_uploads_only_the_changed_files(hub, built, tmp_path):
    out = _copy(built, tmp_path)
    zoo.push(out, REPO)
    n_commits, hub.lfs_puts[:] = len(hub.commits), []
    # a new grid value adds runs in a new config; the old config's runs are unchanged
    before = _grow(out, grid={"train.lr": [0.05, 0.1], "model.width": [8, 12]})
    result = zoo.push(out, REPO)
    folder = out / "dataset"
    after = {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }
    changed = {p for p in after if before.get(p) != after[p]}
    assert any(p.startswith("data/mlp_d1_w12/") for p in changed)
    assert not any(p.startswith("data/mlp_d1_w8/") for p in changed)
    paths, lfs = _uploaded(hub, n_commits)
    assert paths == changed == set(result.plan.upload)
    assert lfs == {_sha(after[p]) for p in changed if p.endswith(".parquet")}
    assert result.tag == "v0.1.0-2"
    rows = _rows(datasets.load_dataset(REPO, "mlp_d1_w12"))
    assert rows.keys() == _local_rows(folder, "mlp_d1_w12").keys()
    # nothing changed: no commit, no tag
    again = zoo.push(out, REPO)
    assert again.commits == () and again.tag is None and len(again.plan.unchanged) == len(after)


def test_more_seeds_upload_changed_shards_and_delete_stale_ones(hub, built, tmp_path):
    out = _copy(built, tmp_path)
    zoo.push(out, REPO)
    api = zoo_hub.hf_api()
    stale = "data/mlp_d1_w8/train-00000-of-00002.parquet"  # e.g. left by an older build
    api.upload_file(
        path_or_fileobj=b"PAR1 stale", path_in_repo=stale, repo_id=REPO, repo_type="dataset"
    )
    n_commits = len(hub.commits)
    before = _grow(out, seeds=3)
    result = zoo.push(out, REPO)
    folder = out / "dataset"
    changed = {p for p in result.plan.upload}
    assert changed == {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and before.get(p.relative_to(folder).as_posix()) != p.read_bytes()
    }
    assert result.plan.delete == (stale,) and stale not in hub.files(REPO)
    assert _uploaded(hub, n_commits)[0] == changed
    got = _rows(datasets.load_dataset(REPO, "mlp_d1_w8"))
    assert got.keys() == _local_rows(folder, "mlp_d1_w8").keys() and len(got) == 18


def test_large_pushes_are_split_into_commits_card_last(hub, built, tmp_path, monkeypatch):
    monkeypatch.setattr(hubfiles, "COMMIT_FILES", 1)
    result = zoo.push(_copy(built, tmp_path), REPO)
    commits = [c for c in hub.commits if c["repo"] == REPO]
    assert len(commits) == len(result.commits) >= 3
    assert all(len(c["added"]) <= 3 for c in commits)  # one data file, or the 3 metadata files
    assert set(commits[-1]["added"]) == {"README.md", "layout.json", "recipe.yaml"}
    assert "(part 1/" in commits[0]["message"]


def test_missing_refused_and_read_only_tokens_give_clear_errors(hub, built, tmp_path, monkeypatch):
    out = _copy(built, tmp_path)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match=r"no Hugging Face token found: .* `hf auth login`"):
        zoo.push(out, REPO)
    monkeypatch.setenv("HF_TOKEN", "hf_revokedToken")
    with pytest.raises(HubError, match=r"the Hub refused the token \(401\) to push to alice"):
        zoo.push(out, REPO)
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    with pytest.raises(HubError, match=r"may not push to alice/tiny-zoo \(403\): use a token wi"):
        zoo.push(out, REPO)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(HubError, match=r"may not push to bob/zoo \(403\).*namespace 'bob'"):
        zoo.push(out, "bob/zoo")
    assert hub.repos == {}


def test_a_repo_with_another_layout_is_refused(hub, built, tmp_path):
    out = _copy(built, tmp_path)
    api = zoo_hub.hf_api()
    api.create_repo("alice/other", repo_type="dataset")
    api.upload_file(
        path_or_fileobj=b"a,b\n1,2\n",
        path_in_repo="data.csv",
        repo_id="alice/other",
        repo_type="dataset",
    )
    with pytest.raises(
        HubError,
        match=r"alice/other holds 1 file\(s\) \(data.csv, …\) but no "
        r"layout.json: it is not a zoo dataset",
    ):
        zoo.push(out, "alice/other")
    zoo.push(out, REPO)
    other = tmp_path / "other"
    zoo.run(tiny_recipe(other, model={"arch": "mlp", "width": 5, "depth": 1, "activation": "tanh"}))
    with pytest.raises(
        HubError,
        match=r"holds another zoo: its layout.json has configs "
        r"\['mlp_d1_w8'\], this zoo builds \['mlp_d1_w5'\]",
    ):
        zoo.push(other, REPO)


def test_network_failures_are_retried_then_say_how_to_resume(hub, built, tmp_path):
    out = _copy(built, tmp_path)
    hub.fail("commit", 2, status=503)
    result = zoo.push(out, REPO)
    assert len(result.commits) == 1 and len(hub.commits) == 1
    card = hub.files(REPO)["README.md"]
    _grow(out, seeds=3)
    hub.fail("commit", zoo_hub.RETRIES, status=None)  # the network is down for every attempt
    with pytest.raises(HubError) as info:
        zoo.push(out, REPO)
    assert f"network failure while trying to push to {REPO}, after 5 attempts" in str(info.value)
    assert f"run the same `zoo push {out} --repo-id {REPO}` again" in str(info.value)
    assert hub.files(REPO)["README.md"] == card  # the Hub still shows the old, whole version
    resumed = zoo.push(out, REPO)  # the network is back
    assert hub.files(REPO)["layout.json"] == (out / "dataset" / "layout.json").read_bytes()
    assert resumed.tag == "v0.1.0-2"


def test_pull_then_load_offline_and_the_token_leaks_nowhere(hub, built, tmp_path):
    out = _copy(built, tmp_path)
    zoo.push(out, REPO, private=True)
    assert hub.repos[REPO].private
    pulled = zoo.pull(REPO, tmp_path / "pulled")
    ds, layout = zoo.load(REPO, split="train")
    huggingface_hub.set_client_factory(lambda: pytest.fail("no request may leave when offline"))
    offline = zoo.load(pulled, "mlp_d1_w8")
    expected = _local_rows(out / "dataset", "mlp_d1_w8")
    got = _rows(offline.dataset.with_format(None))  # python values: nulls stay None
    assert got.keys() == expected.keys() and all(_same_row(got[k], expected[k]) for k in got)
    assert offline.layout == layout
    secret = TOKEN.encode()
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert leaks == []
    for request in hub.requests:
        assert TOKEN not in request.url and secret not in request.body
        assert all(TOKEN not in v for v in request.headers.values())
    writes = [r for r in hub.requests if r.method in ("POST", "PUT") and "fake-lfs" not in r.url]
    assert writes and all(r.authorization == f"Bearer {TOKEN}" for r in writes)


def test_private_repos_need_a_token_to_load(hub, built, tmp_path, monkeypatch):
    zoo.push(_copy(built, tmp_path), REPO, private=True)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(
        HubError,
        match=r"alice/tiny-zoo is private or does not exist: the Hub answered 401 to a request "
        r"without a token\. Check the repo id; a private repo needs a token that can read it",
    ):
        zoo.load(REPO, split="train")


def test_cli_push_to_a_branch_with_a_tag_then_pull(hub, built, tmp_path):
    out = _copy(built, tmp_path)
    runner = CliRunner()
    args = [
        "push",
        str(out),
        "--repo-id",
        REPO,
        "--revision",
        "dev",
        "--message",
        "first zoo",
        "--tag",
        "v-first",
    ]
    result = runner.invoke(app, [*args[:-2], "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would upload" in result.output and "+ layout.json" in result.output
    assert REPO not in hub.repos  # a dry run creates nothing
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "tagged v-first" in result.output and TOKEN not in result.output
    repo = hub.repos[REPO]
    assert repo.tags["v-first"] == repo.branches["dev"] != repo.branches["main"]
    assert hub.commits[-1]["message"] == "first zoo"
    result = runner.invoke(
        app, ["pull", REPO, "--local-dir", str(tmp_path / "p"), "--revision", "v-first"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p" / "layout.json").read_bytes() == (
        out / "dataset" / "layout.json"
    ).read_bytes()
    result = runner.invoke(app, ["push", str(tmp_path / "nothing"), "--repo-id", REPO])
    assert result.exit_code == 2 and "is not a built zoo" in result.output


def test_plan_push_compares_sha256_of_lfs_files_and_blob_ids_of_others():
    a = hubfiles.file_state("data/x.parquet", b"abc")
    regular = hubfiles.file_state("README.md", b"hello")
    remote = {
        "data/x.parquet": hubfiles.FileState("data/x.parquet", 3, a.sha256, "pointer-oid"),
        "README.md": hubfiles.FileState("README.md", 5, None, regular.git_oid),
        "data/old.parquet": hubfiles.FileState("data/old.parquet", 1, "0" * 64, "x"),
        "notes.txt": hubfiles.FileState("notes.txt", 1, None, "y"),
    }
    local = {
        "data/x.parquet": a,
        "README.md": regular,
        "layout.json": hubfiles.file_state("layout.json", b"{}"),
    }
    plan = hubfiles.plan_push(local, remote)
    assert plan == hubfiles.PushPlan(
        ("layout.json",), ("data/old.parquet",), ("README.md", "data/x.parquet")
    )
    # git's blob id of b"hello", as `git hash-object` prints it
    assert regular.git_oid == "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0"


def test_parquet_files_are_viewer_friendly(tmp_path, monkeypatch):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zoo.stages.build import parquet

    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 10_000)
    monkeypatch.setattr(parquet, "FILE_BYTES", 30_000)
    flat = np.random.default_rng(0).standard_normal((40, 610)).astype(np.float32)
    weights = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), 610)
    table = pa.table({"checkpoint_id": [f"c{i}" for i in range(40)], "weights": weights})
    paths = parquet.write_parquet_files(tmp_path, "cfg", "train", table)  # part "p"
    row_bytes = table.nbytes // 40
    assert len(paths) == -(-40 // (30_000 // row_bytes))  # files of at most FILE_BYTES
    assert paths[0] == "data/cfg/train-p-00000.parquet"
    for path in paths:
        meta = pq.ParquetFile(tmp_path / path).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            assert group.num_rows * row_bytes <= 10_000
            column = group.column(1)
            assert column.path_in_schema == "weights.list.element"
            assert column.compression == "ZSTD" and "RLE_DICTIONARY" not in column.encodings
            assert not column.is_stats_set and group.column(0).is_stats_set
    back = pa.concat_tables(pq.read_table(tmp_path / p) for p in paths)
    assert back.equals(table)
    # each file takes the smaller encoding of its weights: BYTE_STREAM_SPLIT for independent
    # floats, PLAIN where consecutive checkpoints keep half their weights exactly (scattered)
    monkeypatch.setattr(parquet, "FILE_BYTES", 10**9)
    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 10**9)
    rng = np.random.default_rng(1)
    kept = flat.copy()
    for i in range(1, 40):
        if i % 5:  # 8 runs x 5 checkpoints; half the weights change between checkpoints
            kept[i] = np.where(rng.random(610) < 0.5, kept[i - 1], flat[i])
    repeated = pa.table(
        {"weights": pa.FixedSizeListArray.from_arrays(pa.array(kept.reshape(-1)), 610)}
    )
    for t, expected in ((table, "BYTE_STREAM_SPLIT"), (repeated, "PLAIN")):
        sizes = {
            e: (tmp_path / e / parquet.write_parquet_files(tmp_path / e, "c", "s", t, e)[0])
            .stat()
            .st_size
            for e in parquet.WEIGHTS_ENCODINGS
        }
        assert min(sizes, key=sizes.get) == expected
        (path,) = parquet.write_parquet_files(tmp_path / "auto", "c", "s", t)
        column = (
            pq.ParquetFile(tmp_path / "auto" / path)
            .metadata.row_group(0)
            .column(t.column_names.index("weights"))
        )
        assert ("BYTE_STREAM_SPLIT" in column.encodings) == (expected == "BYTE_STREAM_SPLIT")
        assert (tmp_path / "auto" / path).stat().st_size == sizes[expected]


def test_iter_weights_equals_the_torch_formatted_column(built):
    ds, layout = zoo.load(built, split="train")
    expected = ds["weights"][:]  # (N, P) through datasets' torch formatting
    batches = list(zoo.iter_weights(ds, batch_size=4))
    assert [b.shape for b in batches] == [(4, 610), (4, 610), (1, 610)]
    assert torch.equal(torch.cat(batches), expected) and batches[0].dtype == torch.float32
    twice = datasets.concatenate_datasets([ds, ds])  # 2 chunks: a batch spans both
    chunks = ds.data.column("weights").num_chunks  # one per file: one per train batch here
    assert twice.data.column("weights").num_chunks == 2 * chunks
    got = list(zoo.iter_weights(twice, batch_size=4))
    assert [len(b) for b in got] == [4, 4, 4, 4, 2]
    assert torch.equal(torch.cat(got), torch.cat([expected, expected]))
    shuffled = ds.shuffle(seed=0)  # an indices mapping: read through Arrow batches
    assert torch.equal(torch.cat(list(zoo.iter_weights(shuffled, 4))), shuffled["weights"][:])
    stream, _ = zoo.load(built, split="train", streaming=True)
    assert torch.equal(torch.cat(list(zoo.iter_weights(stream, 4))), expected)
