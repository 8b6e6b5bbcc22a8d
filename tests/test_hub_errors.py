"""Hub reads that fail fast and say why, and pushes that report what they sent (issue 13,
item 9), against the in-process fake Hub of tests/fakehub.py."""

from __future__ import annotations

import time

import datasets
import httpx2
import huggingface_hub
import pytest
from huggingface_hub import HfApi, constants
from typer.testing import CliRunner

import zoo
from zoo.cli import app
from zoo.errors import HubError
from zoo.hub import client as zoo_hub

from . import test_hub
from .test_hub import REPO, TOKEN, _copy, _grow

hub, built = test_hub.hub, test_hub.built  # the fake Hub and a tiny built zoo (fixtures)

BOB_TOKEN = "hf_zooTestBobToken0123456789abcdefgh"
runner = CliRunner()


def _unreachable(calls: list):
    """A client factory whose every request fails as a machine without a network does."""

    def refuse(request: httpx2.Request) -> httpx2.Response:
        if "agent-harnesses" not in request.url.path:  # best-effort telemetry
            calls.append(str(request.url))
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    return lambda: httpx2.Client(transport=httpx2.MockTransport(refuse))


def test_an_unreachable_hub_answers_in_seconds_with_the_network_error(hub, built, tmp_path):
    calls: list[str] = []
    huggingface_hub.set_client_factory(_unreachable(calls))
    for read in (
        lambda: zoo.load(REPO, split="train"),
        lambda: zoo.pull(REPO, tmp_path / "pulled"),
    ):
        calls.clear()
        start = time.monotonic()
        with pytest.raises(HubError) as info:
            read()
        assert time.monotonic() - start < 5, "a read must not retry for minutes"
        text = str(info.value)
        assert f"cannot reach the Hub ({constants.ENDPOINT}) to " in text
        assert "ConnectError: [Errno 111] Connection refused" in text
        assert "layout.json" not in text and "attempts" not in text
        assert len(calls) == 1, calls  # one request, no retries around the client's
    result = runner.invoke(app, ["pull", REPO, "--local-dir", str(tmp_path / "p")])
    assert result.exit_code == 2 and "cannot reach the Hub" in result.output


def test_offline_mode_reads_the_cache_or_says_it_lacks_the_repo(hub, built, tmp_path, monkeypatch):
    zoo.push(_copy(built, tmp_path), REPO)
    online, layout = zoo.load(REPO, split="train")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    huggingface_hub.set_client_factory(_unreachable([]))
    cached, cached_layout = zoo.load(REPO, split="train")  # the cache answers, no request
    assert cached_layout == layout and cached["checkpoint_id"] == online["checkpoint_id"]
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set and the local cache does not hold"):
        zoo.load("alice/never-loaded", split="train")


def test_a_401_without_a_token_means_private_or_missing_not_a_bad_token(
    hub,
    built,
    tmp_path,
    monkeypatch,
):
    hub.tokens[BOB_TOKEN] = ("bob", "write")
    HfApi(token=BOB_TOKEN).create_repo("bob/secret", repo_type="dataset", private=True)
    monkeypatch.delenv("HF_TOKEN")
    for repo in ("bob/secret", "bob/nothing"):
        with pytest.raises(HubError) as info:
            zoo.load(repo)
        assert str(info.value).startswith(
            f"{repo} is private or does not exist: the Hub answered 401 to a request without "
            "a token. Check the repo id; a private repo needs a token that can read it"
        )
    monkeypatch.setenv("HF_TOKEN", "hf_revokedToken")
    with pytest.raises(HubError, match=r"the Hub refused the token \(401\) to load bob/secret"):
        zoo.load("bob/secret")
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # alice's: valid, but not bob's
    with pytest.raises(HubError, match=r"no dataset repo bob/secret on the Hub, or it is private "):
        zoo.load("bob/secret")


def test_a_dry_run_of_a_public_repo_needs_no_token(hub, built, tmp_path, monkeypatch):
    out = _copy(built, tmp_path)
    zoo.push(out, REPO)
    _grow(out, seeds=3)
    monkeypatch.delenv("HF_TOKEN")
    seen = len(hub.requests)
    result = runner.invoke(app, ["push", str(out), "--repo-id", REPO, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would upload" in result.output and "unchanged" in result.output
    assert "+ data/mlp_d1_w8/train-" in result.output  # the new runs' file
    assert all(r.authorization is None for r in hub.requests[seen:])
    assert all(r.method == "GET" for r in hub.requests[seen:])  # nothing written
    result = runner.invoke(app, ["push", str(out), "--repo-id", "alice/new-zoo", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "alice/new-zoo does not exist or is private: a push creates it" in result.output
    result = runner.invoke(app, ["push", str(out), "--repo-id", REPO])  # a real push needs one
    assert result.exit_code == 2 and "no Hugging Face token found" in result.output


def test_a_push_to_a_branch_names_the_revision_in_its_load_hint(hub, built, tmp_path):
    out = _copy(built, tmp_path)
    result = runner.invoke(app, ["push", str(out), "--repo-id", REPO, "--revision", "dev"])
    assert result.exit_code == 0, result.output
    hint = f"zoo.load('{REPO}', revision='dev')"
    assert hint in result.output
    ds, _ = eval(hint, {"zoo": zoo})  # the hint works as printed
    assert len(ds["train"]) > 0
    result = runner.invoke(app, ["push", str(out), "--repo-id", REPO])
    assert f"zoo.load('{REPO}')" in result.output


def _sent_by_the_fake(fake, since_commit: int, lfs_before: int) -> set[str]:
    """Paths whose bytes reached the fake Hub: plain files in commits, LFS objects uploaded."""
    puts = set(fake.lfs_puts[lfs_before:])
    files = fake.repos[REPO].commits[fake.repos[REPO].branches["main"]]
    added = {p for c in fake.commits[since_commit:] for p in c["added"]}
    return {p for p in added if not files[p].lfs or files[p].sha256 in puts}


def test_uploaded_counts_only_what_was_sent(hub, built, tmp_path):
    out = _copy(built, tmp_path)
    first = zoo.push(out, REPO)
    assert set(first.sent) == set(first.plan.upload) == _sent_by_the_fake(hub, 0, 0)
    assert first.sent_bytes == first.upload_bytes
    _grow(out, seeds=3)
    hub.fail("commit", zoo_hub.RETRIES, status=None)  # LFS objects go up, the commit fails
    with pytest.raises(HubError, match="network failure while trying to push"):
        zoo.push(out, REPO)
    commits, puts = len(hub.commits), len(hub.lfs_puts)
    result = runner.invoke(app, ["push", str(out), "--repo-id", REPO])
    assert result.exit_code == 0, result.output
    sent = _sent_by_the_fake(hub, commits, puts)
    assert hub.lfs_puts[puts:] == []  # the Hub held every Parquet file's content already
    assert sent and not any(p.endswith(".parquet") for p in sent)
    changed = {p for c in hub.commits[commits:] for p in c["added"]}
    size = sum((out / "dataset" / p).stat().st_size for p in sent) / 2**20
    held = len(changed) - len(sent)
    assert held > 0
    text = " ".join(result.output.split())
    assert f"uploaded {len(sent)} file(s) ({size:.1f} MiB)" in text
    assert f"{held} changed file(s) the Hub already held were not sent again" in text
