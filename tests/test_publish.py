"""Publish while training (issue 17), against the in-process fake Hub: `zoo run --push` pushes
snapshots as train batches finish, each one commit that `datasets.load_dataset` reads and whose
card says how many of the planned runs it holds; a killed run leaves the last snapshot, a
failed push does not stop training, and the next run goes on pushing."""

import re

import datasets
import pytest
import yaml
from typer.testing import CliRunner

import zoo
from zoo.cli import app
from zoo.dist import pipeline
from zoo.dist.publish import Publisher, PushSettings
from zoo.recipe import recipe_from_dict
from zoo.stages import train as train_stage

from .conftest import tiny_recipe
from .test_hub import REPO, hub  # noqa: F401  (the fake Hub fixture)

PUSH = {"repo_id": REPO, "every_s": 0}  # a snapshot after every train batch


def _recipe(out, **push):
    """6 runs in 3 population batches of 2, pushed to the fake Hub."""
    return tiny_recipe(out, seeds=3, output={"push": {**PUSH, **push}})


def _snapshots(fake) -> list[dict]:
    """The commits of the repo, oldest first: their oid and message."""
    return [c for c in fake.commits if c["repo"] == REPO]


def _held(fake, oid: str) -> tuple[int, int, int]:
    """(runs the card says it holds, runs planned, runs that load_dataset reads) at ``oid``."""
    card = fake.files(REPO, oid)["README.md"].decode()
    said = re.search(r"it holds (\d+) of the (\d+) runs", card)
    loaded = datasets.load_dataset(REPO, "mlp_d1_w8", revision=oid)
    runs = {r for split in loaded.values() for r in split["run_id"]}
    holds, planned = (int(said[1]), int(said[2])) if said else (len(runs), len(runs))
    return holds, planned, len(runs)


def test_run_pushes_a_loadable_snapshot_after_each_batch_then_the_zoo(hub, tmp_path):  # noqa: F811
    events = []
    folder = pipeline.run(_recipe(tmp_path / "out"), on_push=events.append)
    commits = _snapshots(hub)
    assert [e.runs for e in events] == [2, 4, 6, 6] and [e.final for e in events][-1]
    assert all(e.planned == 6 for e in events)
    assert len(commits) == 3  # the final push found nothing new to send: no commit
    for commit, runs in zip(commits, (2, 4, 6), strict=True):
        assert "README.md" in commit["added"]  # the card and its new data: one commit
        assert any(p.startswith("data/") for p in commit["added"])
        assert _held(hub, commit["oid"]) == ((runs, 6, runs) if runs < 6 else (6, 6, 6))
    assert list(hub.repos[REPO].tags) == ["v0.1.0-1"]  # the zoo is tagged, not the snapshots
    assert hub.repos[REPO].tags["v0.1.0-1"] == commits[-1]["oid"]
    published = yaml.safe_load(hub.files(REPO)["recipe.yaml"])
    assert "push" not in published.get("output", {})  # where it went is not part of the zoo
    assert (folder / "README.md").read_text().count("A snapshot of a zoo in training") == 0


def test_a_killed_run_leaves_a_loadable_repo_and_the_next_run_goes_on(hub, tmp_path, monkeypatch):  # noqa: F811
    trained = []
    real = train_stage.train_population

    def killed_at_the_third_batch(*args, **kwargs):
        if len(trained) == 2:
            raise KeyboardInterrupt("kill")
        trained.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_stage, "train_population", killed_at_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(_recipe(tmp_path / "out"))
    head = _snapshots(hub)[-1]["oid"]
    assert _held(hub, head) == (4, 6, 4)  # the last snapshot: 4 of the 6 runs, loadable
    assert hub.repos[REPO].tags == {}
    monkeypatch.setattr(train_stage, "train_population", real)
    pipeline.run(_recipe(tmp_path / "out"))
    assert len(trained) == 2  # the next run trained only the third batch
    assert _held(hub, _snapshots(hub)[-1]["oid"]) == (6, 6, 6)
    ds, _ = zoo.load(REPO, split="train", columns=["run_id"])
    assert len(set(ds["run_id"][:])) == len(ds) // 3  # every run, 3 checkpoints each


def test_a_failed_push_does_not_stop_training(hub, tmp_path, monkeypatch):  # noqa: F811
    from zoo.hub import client

    monkeypatch.setattr(client, "RETRIES", 1)
    events = []
    hub.fail("commit", 1)  # the first snapshot's commit: the Hub answers 503
    pipeline.run(_recipe(tmp_path / "out"), on_push=events.append)
    assert events[0].error and "503" in events[0].error
    assert [e.runs for e in events[1:]] == [4, 6, 6]  # later pushes send what the first lacked
    assert _held(hub, _snapshots(hub)[-1]["oid"]) == (6, 6, 6)


def test_snapshots_are_pushed_by_time_and_by_batches(tmp_path, monkeypatch):
    recipe = tiny_recipe(tmp_path / "out", output={"push": {"repo_id": REPO, "every_s": 60}})
    settings = PushSettings.from_recipe(recipe)
    assert settings == PushSettings(REPO, 60, 0, False, None)
    assert PushSettings.from_dict(settings.to_dict()) == settings
    assert PushSettings.from_recipe(tiny_recipe(tmp_path / "out")) is None
    now = [0.0]
    monkeypatch.setenv("HF_TOKEN", "hf_anything")
    pushed = []
    publisher = Publisher(recipe, settings, clock=lambda: now[0])
    monkeypatch.setattr(publisher, "push", lambda final=False: pushed.append(now[0]))
    publisher.batch_done()  # 0 s: not yet
    now[0] = 61.0
    assert publisher.due()
    publisher.batch_done()
    assert pushed == [61.0]
    by_batches = Publisher(recipe, PushSettings(REPO, 10**9, 2), clock=lambda: now[0])
    monkeypatch.setattr(by_batches, "push", lambda final=False: pushed.append("batches"))
    by_batches.batch_done()
    assert not by_batches.due()
    by_batches.pending = 2
    assert by_batches.due()


def test_cli_run_push_sets_the_repo_and_a_missing_token_stops_before_training(
    hub,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    path = tmp_path / "recipe.yaml"
    data = tiny_recipe(tmp_path / "out").data
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["run", str(path), "--push", REPO, "--quiet"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"pushed zoo: 4 of 4 runs to https://huggingface.co/datasets/{REPO}" in text
    assert _held(hub, _snapshots(hub)[-1]["oid"]) == (4, 4, 4)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**data, "output": {"dir": str(tmp_path / "o2")}}))
    result = CliRunner().invoke(app, ["run", str(other), "--push", REPO])
    assert result.exit_code != 0 and "no Hugging Face token found" in result.output
    assert not (tmp_path / "o2" / "manifest.jsonl").exists()  # nothing was trained
    bad = recipe_from_dict
    with pytest.raises(zoo.ZooError, match="output.push.repo_id"):
        bad({**data, "output": {"push": {"repo_id": "no-slash"}}})
