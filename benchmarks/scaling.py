"""Scaling of zoo's Dask execution: worker throughput, scheduler overhead, planning a big zoo.

Three measurements, in one run, on the embedded ``LocalCluster``:

1. **Throughput**, 1 vs 2 worker processes (one thread each): the same 16 population batches
   of 8 models (digits MLP 64-32-32-10, SGD, 6 epochs) trained through
   :func:`zoo.dist.run.run_stage` into a fresh output folder, best of 3 rounds. Workers are warmed
   first (modules imported, task loaded), so the wall time is that of training, writing shards
   and recording receipts. Parallel efficiency = models/s with 2 workers / (2 x models/s with
   1). In-process (``--workers 0``) for reference.
2. **Scheduler overhead per task**: no-op tasks, through plain ``client.submit`` and through
   ``run_stage`` (keys, receipts, manifest, progress), divided by the number of tasks.
3. **Planning and submitting a 50,000-run recipe** of tiny MLPs (500 learning rates x 100
   seeds): ``expand_recipe`` + ``plan_batches`` (with the memory model), then every batch
   submitted to a 2-worker cluster as a no-op task (its spec, 64 resolved run configs, goes
   through the scheduler; training 50,000 models is not the point). Client memory: Python
   allocation peak (tracemalloc) and resident-set growth of this process.

Run:      python benchmarks/scaling.py            # about 1-2 minutes on 2 cores
Quick:    python benchmarks/scaling.py --quick    # fewer batches and tasks
Expect:   three markdown tables and PASS/MISS lines for the issue's targets (efficiency >= 0.8,
          plan + submit of 50,000 runs < 10 s and < 1 GB); never a non-zero exit on a miss.
Check ``uptime`` first: other work on the machine skews every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import tempfile
import threading
import time
import tracemalloc

import psutil
import torch

from zoo.dist.options import ExecOptions
from zoo.dist.run import dask_client, run_stage
from zoo.recipe import expand_recipe, recipe_from_dict
from zoo.stages.plan import PopulationBatch, plan, plan_batches
from zoo.stages.train import train_task


def recipe(out: str | None, **sections):
    data = {
        "schema_version": 1,
        "name": "scaling",
        "task": {"name": "digits"},
        "model": {"arch": "mlp", "width": 32, "depth": 2, "activation": "relu"},
        "train": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 32, "epochs": 6},
        "checkpoints": {"epochs": [0, 6]},
        "execution": {"population_size": 8},
        "output": {"dir": out},
    }
    data.update(sections)
    return recipe_from_dict(data)


def noop_task(batch: dict, out_dir: str, options: dict) -> list[dict]:
    """A task that does nothing and returns no receipts (measures the machinery only)."""
    return []


def warm(client) -> None:
    """Import the training code and load the task on every worker before timing."""

    def _load():
        from zoo.tasks import load_task

        torch.set_num_threads(1)
        load_task(recipe(None).resolved["task"])

    client.run(_load)


def throughput(n_batches: int, repeat: int) -> list[tuple[str, float, float]]:
    """``(setting, models/s, seconds)`` for in-process, 1 and 2 workers: best of ``repeat``
    rounds, the settings taken in turn within each round so a burst of other load on the
    machine hits them alike. Both clusters stay up (and warm) for all rounds."""
    seeds = n_batches * 8 // 4
    batches = plan(recipe(None, seeds=seeds, grid={"train.lr": [0.02, 0.05, 0.1, 0.2]})).batches
    models = sum(len(b.runs) for b in batches)
    best = {0: float("inf"), 1: float("inf"), 2: float("inf")}
    with contextlib.ExitStack() as stack:
        clients = {w: stack.enter_context(dask_client(ExecOptions(workers=w))) for w in (1, 2)}
        for client in clients.values():
            warm(client)
        with tempfile.TemporaryDirectory() as out:
            train_task(batches[0].to_dict(), out, ExecOptions(workers=0).to_dict())
        for _ in range(repeat):
            for workers in (0, 1, 2):
                options, client = ExecOptions(workers=workers), clients.get(workers)
                with tempfile.TemporaryDirectory() as out:
                    start = time.perf_counter()
                    summary = run_stage("train", batches, train_task, out, options, client=client)
                    best[workers] = min(best[workers], time.perf_counter() - start)
                assert len(summary.done) == len(batches), summary.failed
    labels = {0: "this process", 1: "1 worker process", 2: "2 worker processes"}
    return [(labels[w], models / best[w], best[w]) for w in (0, 1, 2)]


def overhead(n_tasks: int) -> list[tuple[str, float]]:
    """Milliseconds per no-op task: plain ``client.submit`` and zoo's ``run_stage``."""
    from dask.distributed import as_completed

    batches = [PopulationBatch(f"b{i:015d}", ()) for i in range(n_tasks)]
    with dask_client(ExecOptions(workers=2)) as client, tempfile.TemporaryDirectory() as out:
        client.submit(noop_task, {}, out, {}, key="warm").result()
        start = time.perf_counter()
        futures = [client.submit(noop_task, {}, out, {}, key=f"raw-{i}") for i in range(n_tasks)]
        for _ in as_completed(futures):
            pass
        raw = (time.perf_counter() - start) / n_tasks
        del futures
        start = time.perf_counter()
        run_stage("noop", batches, noop_task, out, ExecOptions(workers=2), client=client)
        zoo = (time.perf_counter() - start) / n_tasks
    return [("client.submit + as_completed", raw * 1e3), ("zoo run_stage", zoo * 1e3)]


class PeakRSS:
    """Samples this process's resident set every 5 ms in a thread: its peak growth, without
    slowing the measured code the way tracemalloc does."""

    def __init__(self):
        self.proc, self.stop = psutil.Process(), threading.Event()
        self.base = self.peak = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def big_plan(n_lrs: int, seeds: int) -> dict:
    """Time and client memory to plan and submit ``n_lrs x seeds`` tiny runs."""
    lrs = [round(0.001 + i * 0.001, 6) for i in range(n_lrs)]
    tiny = {"arch": "mlp", "width": 8, "depth": 1, "activation": "relu"}
    grid = {"train.lr": lrs}
    rec = recipe(None, model=tiny, grid=grid, seeds=seeds, execution={"population_size": 64})
    ex = rec.execution
    with dask_client(ExecOptions(workers=2)) as client, tempfile.TemporaryDirectory() as out:
        client.submit(noop_task, {}, out, {}, key="warm").result()
        gc.collect()
        with PeakRSS() as rss:
            start = time.perf_counter()
            runs = expand_recipe(rec)
            t_expand = time.perf_counter() - start
            batches = plan_batches(runs, ex["population_size"], ex["batch_memory_mb"] << 20)
            t_plan = time.perf_counter() - start
            options = ExecOptions(workers=2)
            summary = run_stage("noop", batches, noop_task, out, options, client=client)
            t_all = time.perf_counter() - start
    assert len(summary.done) == len(batches)
    tracemalloc.start()  # again, for the Python allocation peak of planning alone
    plan_batches(expand_recipe(rec), ex["population_size"], ex["batch_memory_mb"] << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "runs": len(runs),
        "batches": len(batches),
        "expand_s": t_expand,
        "plan_s": t_plan,
        "submit_s": t_all - t_plan,
        "total_s": t_all,
        "peak_mb": peak / 2**20,
        "rss_mb": rss.growth_mb,
    }


def report(args) -> None:
    torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} logical CPUs; torch.set_num_threads(1) here and in each worker"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    rows = throughput(8 if args.quick else 16, 2 if args.quick else 3)
    base = rows[1][1]
    print("| setting | models/s | seconds | vs 1 worker |\n|---|---|---|---|")
    for label, rate, seconds in rows:
        print(f"| {label} | {rate:.1f} | {seconds:.2f} | {rate / base:.2f}x |")
    efficiency = rows[2][1] / (2 * base)
    print(f"\nparallel efficiency, 2 workers: {efficiency:.2f}\n")
    print("| no-op tasks | ms per task |\n|---|---|")
    for label, ms in overhead(500 if args.quick else 2000):
        print(f"| {label} | {ms:.2f} |")
    big = big_plan(500, 20 if args.quick else 100)
    print(
        "\n| runs | batches | expand s | + plan s | + submit no-op s | total s | "
        "plan: Python peak (tracemalloc) MiB | plan + submit: client RSS peak growth MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {big['runs']:,} | {big['batches']} | {big['expand_s']:.2f} | "
        f"{big['plan_s'] - big['expand_s']:.2f} | {big['submit_s']:.2f} | {big['total_s']:.2f} "
        f"| {big['peak_mb']:.0f} | {big['rss_mb']:.0f} |\n"
    )
    checks = [
        ("parallel efficiency >= 0.8", efficiency >= 0.8, f"{efficiency:.2f}"),
        ("plan + submit < 10 s", big["total_s"] < 10, f"{big['total_s']:.2f} s"),
        (
            "client memory < 1 GB",
            max(big["peak_mb"], big["rss_mb"]) < 1024,
            f"{max(big['peak_mb'], big['rss_mb']):.0f} MiB",
        ),
    ]
    for name, ok, value in checks:
        print(f"target: {name}: measured {value} {'PASS' if ok else 'MISS'}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches and tasks")
    report(parser.parse_args())
