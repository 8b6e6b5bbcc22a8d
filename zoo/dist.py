"""Running population batches: an embedded Dask ``LocalCluster``, an existing scheduler, or
this process.

Tasks write their shards and return small receipts (``ShardRecord`` dicts); only the driver
appends receipts to the manifest, so a task killed mid-way leaves no trace in it and is simply
run again. Keys come from batch ids, so resubmitting a batch never duplicates it.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .store import Manifest, ShardRecord
from .training import PopulationBatch, train_population, write_train_shards


@dataclass(frozen=True)
class ExecOptions:
    """How batches run; none of it changes run ids or results (beyond float rounding)."""

    workers: int = 2
    threads_per_worker: int = 1
    device: str = "auto"
    chunk_size: int | None = None
    eval_batch_size: int = 1024
    scheduler: str | None = None  # address of an existing Dask scheduler

    @classmethod
    def from_recipe(cls, execution: dict, **overrides) -> ExecOptions:
        keys = ("workers", "threads_per_worker", "device", "chunk_size", "eval_batch_size")
        values = {k: execution[k] for k in keys if k in execution}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def train_task(batch: dict, out_dir: str, options: dict) -> list[dict]:
    """One Dask task: train a population batch, write its shards, return their receipts.

    A top-level function of plain data, so it runs the same in this process or on any worker.
    """
    torch.set_num_threads(options["threads_per_worker"])
    pop = PopulationBatch.from_dict(batch)
    result = train_population(
        pop,
        device=resolve_device(options["device"]),
        chunk_size=options["chunk_size"],
        eval_batch_size=options["eval_batch_size"],
    )
    return [r.to_dict() for r in write_train_shards(out_dir, pop, result)]


@dataclass
class RunSummary:
    """What a stage did: batches run, skipped (already done) and failed."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # batch_id -> error text


@contextlib.contextmanager
def dask_client(options: ExecOptions) -> Iterator:
    """A client on ``options.scheduler``, or on a fresh LocalCluster of worker processes."""
    from dask.distributed import Client, LocalCluster

    if options.scheduler:
        with Client(options.scheduler) as client:
            yield client
        return
    # one thread per process: two threads in one process spin-wait when the CPU is shared
    env = {"OMP_NUM_THREADS": str(options.threads_per_worker)}
    with LocalCluster(
        n_workers=options.workers, threads_per_worker=1, processes=True,
        dashboard_address=None, host="127.0.0.1", env=env,
    ) as cluster, Client(cluster) as client:  # fmt: skip
        yield client


Progress = Callable[[str, PopulationBatch, str | None], None]
TaskFn = Callable[[dict, str, dict], list[dict]]


def run_train(
    batches: list[PopulationBatch], out_dir: str | Path, options: ExecOptions,
    progress: Progress | None = None,
) -> RunSummary:  # fmt: skip
    """Train every batch not yet in the manifest (see :func:`run_stage`)."""
    return run_stage("train", batches, train_task, out_dir, options, progress)


def run_stage(
    stage: str, batches: list[PopulationBatch], task_fn: TaskFn, out_dir: str | Path,
    options: ExecOptions, progress: Progress | None = None,
) -> RunSummary:  # fmt: skip
    """Run ``task_fn`` on every batch whose ``stage`` shards the manifest does not hold yet;
    append the receipts as batches finish.

    Args:
        stage: the manifest stage the task writes (``train``, ``landscape``, …).
        batches: the plan (``plan_batches``).
        task_fn: a top-level function ``(batch_dict, out_dir, options_dict) -> [receipt dicts]``.
        out_dir: the zoo's output folder.
        options: where and how to run.
        progress: called as ``progress(event, batch, error)`` with event ``done``/``failed``.
    Returns:
        a :class:`RunSummary`; failures are collected, never raised, so other batches go on.
    """
    out_dir = str(out_dir)
    manifest = Manifest(out_dir)
    done = manifest.done_batch_ids(stage)
    summary = RunSummary(skipped=[b.batch_id for b in batches if b.batch_id in done])
    todo = [b for b in batches if b.batch_id not in done]
    opts = options.to_dict()
    if not todo:
        return summary

    def finish(batch: PopulationBatch, records: list[dict] | None, error: str | None) -> None:
        if error is None:
            manifest.append(ShardRecord.from_dict(r) for r in records)
            summary.done.append(batch.batch_id)
        else:
            summary.failed[batch.batch_id] = error
        if progress:
            progress("done" if error is None else "failed", batch, error)

    if options.workers == 0 and not options.scheduler:
        for batch in todo:
            try:
                finish(batch, task_fn(batch.to_dict(), out_dir, opts), None)
            except Exception as err:  # a batch that raises must not stop the others
                finish(batch, None, _error_text(err))
        return summary
    _run_on_dask(stage, task_fn, todo, out_dir, opts, options, finish)
    return summary


def _run_on_dask(stage, task_fn, todo, out_dir, opts, options: ExecOptions, finish) -> None:
    from dask.distributed import as_completed

    with dask_client(options) as client:
        futures = {
            client.submit(
                task_fn, b.to_dict(), out_dir, opts, key=f"{stage}-{b.batch_id}", retries=1,
            ): b
            for b in todo
        }  # fmt: skip
        for future in as_completed(futures):
            batch = futures[future]
            try:
                finish(batch, future.result(), None)
            except Exception as err:
                finish(batch, None, _error_text(err))


def _error_text(err: BaseException) -> str:
    lines = traceback.format_exception_only(type(err), err)
    return "".join(lines).strip()


def default_workers() -> int:
    """Worker processes for the embedded cluster: one per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))
