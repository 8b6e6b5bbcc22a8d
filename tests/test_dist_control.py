"""The operator's view and control of a cluster run (issue 13, item 8), on real processes: a
SLURM run without `sbatch` fails at once; the job script prints without submitting; failing job
submissions are reported, not printed as tracebacks; a scheduler without workers says so;
Ctrl-C stops the batches running on an existing cluster's workers; a lost worker and the
batch Dask reruns reach the JSON log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import zoo
from zoo.cli import app
from zoo.cli.progress import JsonLog, StageLog
from zoo.dist.control import ClusterEvent, _running_keys, duration
from zoo.dist.options import ExecOptions
from zoo.dist.run import run_stage
from zoo.errors import DistError
from zoo.stages.plan import plan
from zoo.stages.train import train_task
from zoo.store.manifest import Manifest

from . import test_dist
from .conftest import tiny_recipe
from .test_dist import ROOT, _kill_recipe, _stop, _wait, barrier_train_task

external_cluster = test_dist.external_cluster  # its own scheduler + 2 workers (a fixture)
runner = CliRunner()
SLURM_YAML = 'kind: slurm\nqueue: gpu\ncores: 4\nmemory: 16GB\nwalltime: "02:00:00"\n'


def _recipe_file(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(tiny_recipe(tmp_path / "out", **sections).to_yaml())
    return path


def _events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _driver(args: list[str], path: str | None = None) -> subprocess.Popen:
    """``python -m zoo ARGS`` in a process of its own (PATH: ``path`` first)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    if path:
        env["PATH"] = f"{path}{os.pathsep}{env['PATH']}"
    return subprocess.Popen(
        [sys.executable, "-m", "zoo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )


def test_cluster_event_round_trips_and_durations_read_well():
    event = ClusterEvent("no_workers", "no Dask worker has connected for 30 s", {"waited_s": 30.0})
    assert ClusterEvent.from_dict(json.loads(json.dumps(event.to_dict()))) == event
    assert [duration(s) for s in (5, 150, 3900)] == ["5 s", "2 min 30 s", "1 h 05 min"]


# --- SLURM/PBS: fail at once, show the job script ---------------------------------------------


def test_a_cluster_without_its_submit_command_fails_at_once(tmp_path, monkeypatch):
    recipe = _recipe_file(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    for kind, command in (("slurm", "sbatch"), ("pbs", "qsub")):
        start = time.monotonic()
        result = runner.invoke(app, ["run", str(recipe), "--cluster", kind])
        assert time.monotonic() - start < 10, "it must not wait for workers that never come"
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert (
            f"--cluster {kind} submits its worker jobs with `{command}`, which is not on PATH"
            in text
        )
        assert "--workers N (this machine) or --scheduler ADDRESS" in text
    assert not (tmp_path / "out").exists()  # nothing planned, written or trained
    with pytest.raises(DistError, match="`sbatch`, which is not on PATH"):  # the Python API too
        zoo.train(tiny_recipe(tmp_path / "api"), ExecOptions(cluster="slurm"))
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # not installed
    result = runner.invoke(app, ["train", str(recipe), "--cluster", "slurm"])
    assert result.exit_code == 2 and "needs dask-jobqueue; install it with" in result.output


def test_print_job_script_shows_the_script_and_submits_nothing(tmp_path, monkeypatch):
    recipe = _recipe_file(tmp_path)
    config = tmp_path / "slurm.yaml"
    config.write_text(SLURM_YAML)
    monkeypatch.setenv("PATH", f"{tmp_path / 'empty-bin'}{os.pathsep}/usr/bin:/bin")  # no sbatch
    args = ["run", str(recipe), "--cluster-config", str(config), "--print-job-script"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    script = result.stdout
    assert script.startswith("#!/usr/bin/env bash")
    for line in ("#SBATCH -J zoo-worker", "#SBATCH -p gpu", "#SBATCH -t 02:00:00"):
        assert line in script, line
    assert "dask_worker tcp://" in script and "not submitted" not in script  # the note: stderr
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr
    assert not (tmp_path / "out").exists()
    result = runner.invoke(app, ["train", str(recipe), "--print-job-script"])
    assert result.exit_code == 2 and "add --cluster slurm" in result.output


def test_failing_job_submissions_are_reported_not_printed_as_tracebacks(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(
        "#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n"
    )
    sbatch.chmod(0o755)
    recipe, config, log = _recipe_file(tmp_path), tmp_path / "slurm.yaml", tmp_path / "log.jsonl"
    config.write_text(SLURM_YAML)
    args = [
        "train",
        str(recipe),
        "--cluster-config",
        str(config),
        "--quiet",
        "--json-log",
        str(log),
        "--set",
        "execution.no_workers_warning_s=1",
    ]
    proc = _driver(args, path=str(bin_dir))
    try:
        waiting = lambda: [e for e in _events(log) if e["event"] == "no_workers"]  # noqa: E731
        _wait(lambda: len(waiting()) >= 2 or proc.poll() is not None, 90, "two warnings")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    finally:
        _stop([proc])
    stderr = proc.stderr.read().decode()
    first, second = waiting()[:2]
    assert first["waited_s"] >= 1 and second["waited_s"] >= first["waited_s"] + 1
    expected = "`sbatch` exited with code 1: sbatch: error: invalid partition specified: gpu"
    assert first["job_error"] == expected
    assert "no Dask worker has connected for 1 s" in first["message"]
    assert "squeue -n zoo-worker" in first["message"]
    assert expected in stderr and "Traceback" not in stderr  # --quiet still warns, once each
    assert _events(log)[-1]["event"] == "interrupted"


# --- a scheduler without workers --------------------------------------------------------------


def test_a_scheduler_without_workers_says_so_until_one_comes(tmp_path):
    from dask.distributed import LocalCluster

    recipe = tiny_recipe(tmp_path / "out")
    batches = plan(recipe).batches
    path = tmp_path / "log.jsonl"
    with LocalCluster(
        n_workers=0,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
        scheduler_kwargs={"dashboard": False},
    ) as cluster:
        options = ExecOptions(scheduler=cluster.scheduler_address, no_workers_warning_s=0.5)
        log = StageLog("train", batches, [JsonLog(path)])
        out: list = []
        thread = threading.Thread(
            target=lambda: out.append(
                run_stage(
                    "train",
                    batches,
                    train_task,
                    recipe.out_dir,
                    options,
                    log,
                    on_start=log.start,
                    on_event=log.cluster,
                )
            )
        )
        thread.start()
        waiting = lambda: [e for e in _events(path) if e["event"] == "no_workers"]  # noqa: E731
        _wait(lambda: len(waiting()) >= 2, 60, "two no-workers warnings")
        cluster.scale(1)
        thread.join(timeout=120)
    assert out and len(out[0].done) == len(batches) and not out[0].failed
    events = _events(path)
    kinds = [e["event"] for e in events]
    first, second = waiting()[:2]
    assert second["waited_s"] > first["waited_s"] >= 0.5
    assert f"`dask worker {cluster.scheduler_address} --nthreads 1`" in first["message"]
    came = events[kinds.index("workers")]
    assert came["workers"] == 1 and came["waited_s"] >= second["waited_s"]
    assert kinds.index("workers") < kinds.index("done")


# --- an existing cluster: Ctrl-C stops its running batches; a lost worker is reported ---------


def _running(address: str) -> dict[str, list[str]]:
    from dask.distributed import Client

    with Client(address, timeout="20s") as client:
        return client.run(_running_keys)


def test_ctrl_c_stops_the_batches_running_on_an_existing_cluster(tmp_path, external_cluster):
    address, _ = external_cluster
    long = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 32, "epochs": 20000}
    recipe = _recipe_file(tmp_path, train=long, checkpoints={"epochs": [0, 20000]})
    log = tmp_path / "log.jsonl"
    proc = _driver(
        ["train", str(recipe), "--scheduler", address, "--quiet", "--json-log", str(log)]
    )
    try:
        busy = lambda: [k for ks in _running(address).values() for k in ks]  # noqa: E731
        _wait(lambda: len(busy()) == 2 or proc.poll() is not None, 90, "both batches to run")
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(1.5)  # a few epochs in: the tasks have asked whether to stop at least once
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=60) == 130
        took = time.monotonic() - start
    finally:
        _stop([proc])
    assert busy() == [], "a batch still runs on a worker after the driver left"
    assert took < 20  # they stopped at their next epoch, not after 20,000 epochs
    stderr = " ".join(proc.stderr.read().decode().split())
    assert "interrupted after 0 new train batches, stopped 2 running on the workers" in stderr
    events = {e["event"]: e for e in _events(log)}
    assert events["stopping"]["running"] == 2 and events["stopped"]["stopped"] == 2
    assert Manifest(tmp_path / "out").records() == []  # nothing half-recorded
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == [
        tmp_path / "out" / "recipe.yaml"
    ]


def test_a_lost_worker_and_the_batch_dask_reruns_reach_the_log(tmp_path, external_cluster):
    address, barrier = external_cluster
    recipe = _kill_recipe(tmp_path / "killed")
    batches = plan(recipe).batches
    events: list[ClusterEvent] = []
    out: list = []
    options = ExecOptions(scheduler=address)
    thread = threading.Thread(
        target=lambda: out.append(
            run_stage(
                "train",
                batches,
                barrier_train_task,
                recipe.out_dir,
                options,
                on_event=events.append,
            )
        )
    )
    thread.start()
    started = lambda: sorted(p for p in barrier.iterdir() if p.name != "release")  # noqa: E731
    _wait(lambda: len(started()) == 2, 60, "both workers to start a batch")
    victim = started()[0]
    os.kill(int(victim.suffix[1:]), signal.SIGKILL)  # kill -9 the worker running that batch
    (barrier / "release").touch()
    thread.join(timeout=90)
    assert out and len(out[0].done) == 4 and not out[0].failed
    lost = [e for e in events if e.kind == "worker_lost"]
    reruns = [e for e in events if e.kind == "batch_rerun"]
    # the dead worker held the batch it ran and, queued behind it, maybe one more: Dask
    # counts both as attempts (worker_losses) and runs both elsewhere
    assert len(lost) == 1 and victim.stem in lost[0].fields["batch_ids"]
    assert "was lost (died or disconnected)" in lost[0].message
    assert [e.fields["batch_id"] for e in reruns] == lost[0].fields["batch_ids"]
    assert all(e.fields["worker"] == lost[0].fields["worker"] for e in reruns)
    assert all(e.fields["worker_losses"] == 1 for e in reruns)
    rerun = next(e for e in reruns if e.fields["batch_id"] == victim.stem)
    victim_batch = next(b for b in batches if b.batch_id == victim.stem)
    assert rerun.fields["run_ids"] == [r.run_id for r in victim_batch.runs]
    assert json.loads(json.dumps([e.to_dict() for e in events]))  # JSON-ready, as the log needs


# --- the stop check inside the stage tasks ------------------------------------------------------


def test_train_and_landscape_tasks_stop_at_the_check_and_write_nothing(tmp_path):
    from zoo.errors import BatchStopped
    from zoo.stages.landscape.annotate import landscape_task, plan_landscape_batches

    landscape = {"metrics": ["weights"], "at": [1, 2]}
    recipe = tiny_recipe(tmp_path / "out", landscape=landscape)
    calls = []

    def stop_at_second_call():
        calls.append(len(calls))
        if len(calls) == 2:
            raise BatchStopped("stopped by the driver")

    batch = plan(recipe).batches[0]
    options = {"device": "cpu", "chunk_size": None, "eval_batch_size": 1024}
    with pytest.raises(BatchStopped):
        train_task(
            batch.to_dict(), str(tmp_path / "out"), {**options, "check_stop": stop_at_second_call}
        )
    assert len(calls) == 2  # after epoch 1, after epoch 2: then it stopped before writing
    assert not (tmp_path / "out" / "shards").exists()
    zoo.train(recipe, ExecOptions(workers=0))  # the whole zoo, to annotate
    shards = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file())
    calls.clear()
    (lb, *_) = plan_landscape_batches(recipe)
    with pytest.raises(BatchStopped):
        landscape_task(lb.to_dict(), str(tmp_path / "out"), {"check_stop": stop_at_second_call})
    assert len(calls) == 2  # before epoch 1's checkpoints, before epoch 2's
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == shards
