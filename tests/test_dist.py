"""Distributed runs on real processes: an external `dask scheduler` + 2 `dask worker` on
loopback, the embedded LocalCluster, a worker killed mid-task, a run stopped by SIGTERM and
resumed, a raising batch, SLURM job scripts, and fsspec outputs."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import datasets
import fsspec
import psutil
import pytest
import torch
from typer.testing import CliRunner

import zoo
from zoo.cli import app
from zoo.cli.progress import StageLog
from zoo.dist.clusters import jobqueue_cluster, with_cluster_config
from zoo.dist.options import ExecOptions
from zoo.dist.run import run_stage
from zoo.errors import DistError, RecipeError
from zoo.recipe import load_recipe
from zoo.stages.plan import MemoryModel, memory_model, plan, plan_batches
from zoo.stages.train import train_task
from zoo.store.manifest import Manifest
from zoo.store.shards import read_tensor_shard

from .conftest import tiny_recipe

ROOT = Path(__file__).resolve().parents[1]
BARRIER_ENV = "ZOO_TEST_BARRIER"
runner = CliRunner()


# --- helpers --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _stop(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _weights(out) -> dict[str, torch.Tensor]:
    """Every tensor of every recorded train shard, by name (``<checkpoint_id>/<param>``)."""
    tensors = {}
    for rec in Manifest(out).records("train"):
        if rec.ext == "safetensors":
            tensors.update(read_tensor_shard(out, rec.path)[0])
    return tensors


def _assert_each_checkpoint_once(out, n_checkpoints: int) -> None:
    records = Manifest(out).records("train")
    for ext in ("safetensors", "parquet"):
        ckpts = [c for r in records if r.ext == ext for c in r.checkpoint_ids]
        assert len(ckpts) == len(set(ckpts)) == n_checkpoints, ext
    assert all(p.kind == "orphan" for p in Manifest(out).verify())  # every record is intact


def barrier_train_task(batch: dict, out_dir: str, options: dict) -> list[dict]:
    """``train_task`` that first leaves ``<batch_id>.<pid>`` in the barrier folder and waits
    for a ``release`` file there, so a test can kill the worker process running it."""
    barrier = Path(os.environ[BARRIER_ENV])
    (barrier / f"{batch['batch_id']}.{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not (barrier / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return train_task(batch, out_dir, options)


def _kill_recipe(out, **execution):
    model = {"arch": "mlp", "width": 16, "depth": 1, "activation": "tanh"}
    return tiny_recipe(
        out, seeds=2, model=model, execution={"workers": 0, "population_size": 1, **execution}
    )


def _die_with_parent() -> None:
    """In the child: get SIGTERM when pytest dies, even by SIGKILL (Linux), so no scheduler or
    worker outlives a killed test run."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@pytest.fixture(scope="module")
def external_cluster(tmp_path_factory):
    """``python -m dask scheduler`` and two ``dask worker`` on 127.0.0.1; no nannies, so a
    killed worker stays dead, like a lost node."""
    barrier = tmp_path_factory.mktemp("barrier")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, BARRIER_ENV: str(barrier), "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    quiet = {
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "cwd": ROOT,
        "env": env,
        "preexec_fn": _die_with_parent,
    }
    dask = [sys.executable, "-m", "dask"]
    procs = [
        subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            **quiet,
        )
    ]
    try:
        for i in range(2):
            cmd = [
                *dask,
                "worker",
                address,
                "--nthreads",
                "1",
                "--host",
                "127.0.0.1",
                "--name",
                f"w{i}",
                "--no-dashboard",
                "--no-nanny",
            ]
            procs.append(subprocess.Popen(cmd, **quiet))
        from dask.distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address, barrier
    finally:
        _stop(reversed(procs))


# --- options, plans, memory model ---------------------------------------------------------------


def test_exec_options_round_trip_and_come_from_the_recipe(tmp_path):
    cluster = {"kind": "slurm", "queue": "gpu"}
    execution = {"workers": 3, "gpus_per_worker": 1, "cluster": cluster}
    recipe = tiny_recipe(tmp_path, execution=execution)
    options = ExecOptions.from_recipe(recipe.execution, device="cpu")
    assert ExecOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    assert (options.workers, options.gpus_per_worker, options.device) == (3, 1, "cpu")
    assert options.cluster == "slurm" and options.cluster_settings["queue"] == "gpu"
    assert options.cluster_settings["walltime"] == "01:00:00"  # the schema's default
    # an explicit scheduler wins over the recipe's cluster
    assert ExecOptions.from_recipe(recipe.execution, scheduler="tcp://h:1").cluster == "local"
    with pytest.raises(DistError, match="cluster 'k8s' is not one of"):
        ExecOptions(cluster="k8s")


def test_batches_follow_the_memory_budget_and_never_the_workers(tmp_path):
    recipe = tiny_recipe(tmp_path, seeds=5, execution={"population_size": 8})
    runs = zoo.expand_recipe(recipe)  # 10 runs, one population kind
    mem = memory_model(runs[0])
    assert MemoryModel.from_dict(mem.to_dict()) == mem
    assert mem.bytes(4) - mem.bytes(3) == mem.per_model > 4 * 610 * 3  # params, grads, ckpts
    assert [len(b.runs) for b in plan_batches(runs, 8)] == [8, 2]
    budget = mem.bytes(3) + mem.per_model // 2  # room for 3 models, not 4
    assert mem.max_models(budget) == 3
    assert [len(b.runs) for b in plan_batches(runs, 8, max_bytes=budget)] == [3, 3, 3, 1]
    assert mem.max_models(1) == 1  # a model that does not fit still runs, alone
    assert all(v <= mem.bytes(8) for v in plan(recipe).memory_bytes().values())
    # the recipe's batch_memory_mb cuts populations of wide MLPs; the workers play no part
    wide = {"arch": "mlp", "width": 512, "depth": 2, "activation": "tanh"}
    execution = {"population_size": 8, "batch_memory_mb": 64}
    p = plan(tiny_recipe(tmp_path, seeds=5, model=wide, execution=execution))
    fits = memory_model(p.runs[0]).max_models(64 * 2**20)
    assert 1 < fits < 8 and {len(b.runs) for b in p.batches[:-1]} == {fits}
    same = plan(tiny_recipe(tmp_path, seeds=5, model=wide, execution={**execution, "workers": 7}))
    assert [b.batch_id for b in same.batches] == [b.batch_id for b in p.batches]
    assert all(v <= 64 * 2**20 for v in p.memory_bytes().values())
    assert p.estimated_seconds() > 0 and sum(p.flops().values()) > 10 * 610 * 256
    # the time estimate says how far to trust it: calibrated on MLPs and CNNs, not on SIRENs
    assert p.estimate_accuracy() == "rough: within 3x on the shipped recipes"
    fields = plan(load_recipe(ROOT / "pipelines" / "digits_siren_views.yaml"))
    assert fields.estimate_accuracy().startswith("a lower bound for siren:")


def test_cluster_config_file_overrides_and_names_bad_keys(tmp_path):
    recipe = tiny_recipe(tmp_path)
    good = tmp_path / "slurm.yaml"
    good.write_text("kind: slurm\nqueue: long\nadaptive: {maximum: 4}\n")
    execution = with_cluster_config(recipe.execution, good)
    assert execution["cluster"]["queue"] == "long" and execution["cluster"]["kind"] == "slurm"
    assert execution["cluster"]["adaptive"] == {"minimum": 0, "maximum": 4}
    bad = tmp_path / "bad.yaml"
    bad.write_text("queue: long\ncores: zero\nwalltimes: 1\n")
    with pytest.raises(RecipeError) as info:
        with_cluster_config(recipe.execution, bad)
    assert "cluster.cores: 'zero' is not of type 'integer'" in str(info.value)
    assert "'walltimes' was unexpected" in str(info.value)


def test_slurm_job_script_is_built_from_the_recipe_without_submitting(tmp_path):
    cluster_cfg = {
        "kind": "slurm",
        "queue": "gpu",
        "account": "zoo-lab",
        "cores": 4,
        "memory": "16GB",
        "walltime": "02:00:00",
        "job_extra": ["--constraint=a100"],
        "prologue": ["module load cuda"],
        "adaptive": {"maximum": 8},
    }
    execution = {"gpus_per_worker": 1, "threads_per_worker": 2, "cluster": cluster_cfg}
    options = ExecOptions.from_recipe(tiny_recipe(tmp_path, execution=execution).execution)
    cluster = jobqueue_cluster(options)
    try:
        script = cluster.job_script()
        assert cluster.workers == {}  # nothing was submitted
    finally:
        cluster.close()
    expected = [
        "#SBATCH -p gpu",
        "#SBATCH -A zoo-lab",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH -t 02:00:00",
        "#SBATCH --constraint=a100",
        "#SBATCH --gres=gpu:2",
        "module load cuda",
        "export OMP_NUM_THREADS=2",
    ]
    for line in expected:
        assert line in script, line
    assert "#SBATCH --mem=" in script
    command = script.strip().splitlines()[-1]
    assert "--nworkers 2" in command and "--resources GPU=1" in command
    assert command.rindex("--nthreads 1") > command.index("--nthreads")  # the last one wins
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr


# --- an external cluster: dask scheduler + 2 dask workers ---------------------------------------


def test_worker_killed_mid_task_is_rerun_and_recorded_once(tmp_path, external_cluster):
    address, barrier = external_cluster
    recipe = _kill_recipe(tmp_path / "killed")
    batches = plan(recipe).batches  # 4 runs -> 4 batches
    options = ExecOptions(scheduler=address)
    out: list = []
    thread = threading.Thread(
        target=lambda: out.append(
            run_stage("train", batches, barrier_train_task, recipe.out_dir, options)
        )
    )
    thread.start()
    started = lambda: sorted(p for p in barrier.iterdir() if p.name != "release")  # noqa: E731
    _wait(lambda: len(started()) == 2, 60, "both workers to start a batch")
    victim = started()[0]
    os.kill(int(victim.suffix[1:]), signal.SIGKILL)  # kill -9 the worker running that batch
    (barrier / "release").touch()
    thread.join(timeout=90)
    summary = out[0]
    assert not summary.failed and len(summary.done) == 4
    runs_of_victim = [p for p in barrier.iterdir() if p.stem == victim.stem]
    assert len(runs_of_victim) == 2, "the killed batch was run again, in the other worker"
    _assert_each_checkpoint_once(recipe.out_dir, 4 * 3)
    # the cluster now has 1 worker: its run (through a file:// URL) equals the 2-worker run
    one = run_stage("train", batches, train_task, (tmp_path / "one").as_uri(), options)
    assert len(one.done) == 4 and (tmp_path / "one" / "manifest.jsonl").exists()
    a, b = _weights(recipe.out_dir), _weights(tmp_path / "one")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _malloc_tuned() -> bool:
    import zoo.dist.run

    return zoo.dist.run._malloc_tuned


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_workers_keep_freed_memory_and_the_driver_is_left_alone(tmp_path, external_cluster):
    """Dask's workers start with MALLOC_TRIM_THRESHOLD_=65536, which made every population
    step's tensors fresh mmaps (1.5-1.6x slower training); a worker raises glibc's thresholds
    when it runs its first task, the driver's own process (workers: 0) keeps its malloc."""
    from dask.distributed import Client

    address, _ = external_cluster
    recipe = _kill_recipe(tmp_path / "zoo")
    batches = plan(recipe).batches
    local = run_stage("train", batches, train_task, tmp_path / "local", ExecOptions(workers=0))
    assert len(local.done) == 4 and _malloc_tuned() is False
    remote = run_stage("train", batches, train_task, recipe.out_dir, ExecOptions(scheduler=address))
    assert len(remote.done) == 4
    with Client(address, timeout="30s") as client:
        assert any(client.run(_malloc_tuned).values())


def test_cli_on_an_external_scheduler_reports_a_raising_batch(tmp_path, external_cluster):
    address, _ = external_cluster
    # cnn_s cannot run on 8x8 digits: that batch raises, the MLP batch is saved
    recipe = tiny_recipe(
        tmp_path / "out",
        grid={"model.arch": ["mlp", "cnn_s"]},
        seeds=2,
        execution={"population_size": 4},
    )
    path = tmp_path / "r.yaml"
    path.write_text(recipe.to_yaml())
    log = tmp_path / "log.jsonl"
    args = ["train", str(path), "--scheduler", address, "--quiet", "--json-log", str(log)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    failed = next(b for b in plan(recipe).batches if b.runs[0].model["arch"] == "cnn_s")
    text = " ".join(result.output.split())
    assert f"1 of 2 train batches failed: {failed.batch_id} (runs " in text
    assert all(r.run_id in text for r in failed.runs)
    assert "cnn_s needs inputs of at least 28x28" in text
    assert f"run `zoo train {path}` again: only the failed batches run" in text
    assert len(Manifest(tmp_path / "out").done_batch_ids("train")) == 1
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in events].count("failed") == 1 and events[-1]["event"] == "end"
    bad = next(e for e in events if e["event"] == "failed")
    assert bad["batch_id"] == failed.batch_id and bad["run_ids"] == [r.run_id for r in failed.runs]


# --- the whole run stopped and resumed ----------------------------------------------------------


def test_sigterm_stops_workers_and_resume_equals_an_uninterrupted_run(tmp_path):
    kw = dict(
        seeds=6,
        train={"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "batch_size": 16, "epochs": 2},
    )
    recipe = tiny_recipe(tmp_path / "a", execution={"workers": 1, "population_size": 1}, **kw)
    path = tmp_path / "r.yaml"
    path.write_text(recipe.to_yaml())  # 12 runs -> 12 batches, on a 1-worker LocalCluster
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo", "train", str(path), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    manifest = Manifest(tmp_path / "a")
    _wait(lambda: len(manifest.records()) >= 2 or proc.poll() is not None, 120, "a first batch")
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert "interrupted" in proc.stderr.read().decode()
    _, alive = psutil.wait_procs(children, timeout=20)
    assert children and not alive, "the cluster's processes outlived the interrupted run"
    before = manifest.done_batch_ids("train")
    assert 0 < len(before) < 12, "the signal should land mid-run"
    summary = zoo.train(recipe, ExecOptions(workers=0))  # resume, in this process
    assert summary.stored_runs == len(before) and len(summary.done) == 12 - len(before)
    assert not set(summary.done) & before  # nothing stored is trained again
    _assert_each_checkpoint_once(tmp_path / "a", 12 * 3)
    other = tiny_recipe(tmp_path / "b", execution={"workers": 0, "population_size": 1}, **kw)
    zoo.train(other, ExecOptions(workers=0))
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- fsspec outputs, progress -------------------------------------------------------------------


def test_memory_url_output_round_trip(tmp_path):
    root = f"zoo-test-{uuid.uuid4().hex[:8]}"
    recipe = tiny_recipe(None, output={"dir": f"memory://{root}"})
    fs = fsspec.filesystem("memory")
    try:
        zoo.run(recipe)  # train, then build into memory://<root>/dataset
        assert not Path("memory:").exists(), "a URL must not become a local folder"
        assert Manifest(f"memory://{root}").verify() == []
        assert zoo.train(recipe, ExecOptions(workers=0)).stored_runs == 4  # resumes from the URL
        fs.get(f"/{root}/dataset", str(tmp_path / "fetched"), recursive=True)
        local = zoo.run(tiny_recipe(tmp_path / "local"))
        got, want = (
            datasets.load_dataset(str(f), split="train") for f in (tmp_path / "fetched", local)
        )
        assert got["checkpoint_id"] == want["checkpoint_id"] and got["weights"] == want["weights"]
        with pytest.raises(DistError, match="memory:// store lives in one process"):
            zoo.train(recipe, ExecOptions(workers=2))
    finally:
        fs.rm(f"/{root}", recursive=True)


def test_stage_log_counts_models_rates_and_failures(tmp_path):
    batches = plan(tiny_recipe(tmp_path, seeds=3)).batches  # 6 runs in 3 batches of 2
    events = []
    log = StageLog("train", batches, [events.append])

    def failing(batch, out_dir, options):
        if batch["batch_id"] == batches[1].batch_id:
            raise ValueError("boom")
        return train_task(batch, out_dir, options)

    summary = run_stage(
        "train", batches, failing, tmp_path, ExecOptions(workers=0), log, on_start=log.start
    )
    log.end(summary)
    assert [e["event"] for e in events] == ["start", "done", "failed", "done", "end"]
    assert events[-1]["models_done"] == 4 and events[-1]["batches_failed"] == 1
    assert events[2]["error"] == "ValueError: boom"
    assert events[2]["run_ids"] == [r.run_id for r in batches[1].runs]
    assert events[-1]["models_per_s"] > 0 and events[-2]["eta_s"] is not None
    assert summary.failed_runs == {batches[1].batch_id: [r.run_id for r in batches[1].runs]}
