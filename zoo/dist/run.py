"""Running the batches of a stage: in this process, on an embedded Dask ``LocalCluster``, on an
existing scheduler, or on SLURM/PBS batch jobs through dask-jobqueue.

Tasks write their shards and return small receipts (``ShardRecord`` dicts); only the driver
appends receipts to the manifest, so a task killed mid-way leaves no trace in it and is simply
run again (Dask reruns the batches of a dead worker elsewhere). Keys come from batch ids, so a
batch is never run twice at once and its shards are recorded once. Weights never travel
through the scheduler, only batch specs and receipts. While the batches run, the driver watches
the cluster and stops the running batches when it is interrupted (:mod:`zoo.dist.control`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.dist.clusters import JOB_ERRORS, capture_job_errors, has_bokeh, make_cluster, waiting_hint
from zoo.dist.control import ClusterWatch, OnEvent, in_dask_worker, stop_batches, stop_check
from zoo.dist.options import ExecOptions, worker_device
from zoo.errors import DistError
from zoo.store.fs import is_remote, store_location
from zoo.store.manifest import SHARD_EXTS, Manifest, ShardRecord

if TYPE_CHECKING:
    from zoo.stages.plan import PopulationBatch


@dataclass
class RunSummary:
    """What a stage did: batches run, skipped (already done) and failed, and how many runs the
    store held already (planning left them out)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # batch_id -> error text
    failed_runs: dict[str, list[str]] = field(default_factory=dict)  # batch_id -> run ids
    stored_runs: int = 0


@dataclass(frozen=True)
class StageStart:
    """What ``on_start`` hears once a stage's workers are reachable."""

    stage: str
    batches: int  # in the plan
    skipped: int  # already in the manifest
    skipped_runs: int  # runs of those batches, and runs the store held before planning
    dashboard: str | None  # the Dask dashboard's address, when one is served


# --- Dask clients ---------------------------------------------------------------------------------


@contextlib.contextmanager
def dask_client(options: ExecOptions) -> Iterator:
    """A client on ``options.scheduler``, or on the cluster that
    :func:`zoo.dist.clusters.make_cluster` starts."""
    from dask.distributed import Client

    if not options.scheduler:
        with (
            capture_job_errors(options),
            _closing(make_cluster(options)) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(options.scheduler, timeout="20s")
    except OSError as err:
        raise DistError(
            f"cannot reach the Dask scheduler at {options.scheduler} ({err}); start one with "
            f"`dask scheduler` and workers with `dask worker {options.scheduler}`, or leave "
            "--scheduler out to run on a local cluster"
        ) from err
    with client:
        _check_gpu_workers(client, options)
        yield client


@contextlib.contextmanager
def _closing(cluster) -> Iterator:
    """The cluster, closed on the way out. distributed asserts, as it closes a jobqueue cluster,
    that every job it made has started; a job whose submission failed (sbatch refused it)
    never did: that assertion is not an error of the run, whose own outcome (an interrupt, an
    error) must reach the caller instead."""
    try:
        yield cluster
    finally:
        try:
            cluster.close()
        except AssertionError:
            if type(cluster).__name__ == "LocalCluster":
                raise


def _check_gpu_workers(client, options: ExecOptions) -> None:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    if (
        options.gpus_per_worker
        and workers
        and not any(w.get("resources", {}).get("GPU") for w in workers)
    ):
        raise DistError(
            f"execution.gpus_per_worker is {options.gpus_per_worker} but no worker of "
            f"{options.scheduler} declares GPUs, so no batch could start; start the workers "
            f"with `dask worker {options.scheduler} --nthreads 1 --resources GPU=1`, or set "
            "execution.gpus_per_worker=0"
        )


def dashboard_link(client) -> str | None:
    """The Dask dashboard's address, or ``None`` where none is served (bokeh missing, or a
    scheduler started without one: it lists no ``dashboard`` service)."""
    if not has_bokeh():
        return None
    try:
        return client.dashboard_link
    except KeyError:
        return None


# --- running a stage ----------------------------------------------------------------------------

Progress = Callable[[str, "PopulationBatch", str | None], None]
TaskFn = Callable[[dict, str, dict], list[dict]]


def execute(task_fn: TaskFn, batch: dict, out_dir: str, options: dict) -> list[dict]:
    """Run one stage task where it lands (this process or a worker): with the worker's torch
    threads and its own device (``auto`` resolved here, a GPU per worker on multi-GPU nodes).

    The task gets ``options["check_stop"]``: a callable it calls between epochs (or checkpoint
    epochs) that raises :class:`zoo.errors.BatchStopped` once the driver stops the stage
    (``options["stop_event"]``, set by :func:`run_stage` on Dask; a no-op in this process)."""
    import torch

    torch.set_num_threads(options["threads_per_worker"])
    if in_dask_worker():
        keep_freed_memory()
    device = worker_device(options["device"])
    check = stop_check(options.get("stop_event"))
    return task_fn(batch, out_dir, {**options, "device": device, "check_stop": check})


# glibc's malloc, set in each Dask worker process: blocks up to this size come from the heap and
# freed memory up to it stays there. Dask starts its workers with MALLOC_TRIM_THRESHOLD_=65536
# (its nanny's pre-spawn-environ), which fixes glibc's thresholds low: every activation and
# gradient of a population step is then a fresh mmap whose pages fault in again, step after
# step. Measured with `zoo train --workers 2` on 2 cores: 250 SIRENs (28x28, 200 steps) 43.9 ->
# 27.3 s, peak worker RSS 493 -> 547 MB; fashion_cnn_small_width_batch for 2 epochs 53.4 ->
# 35.1 s, 581 -> 738 MB (256 MiB: 32.8 s, 947 MB; 64 MiB: 39.1 s, 763 MB).
MALLOC_KEEP_BYTES = 128 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_malloc_tuned = False


def keep_freed_memory(limit: int = MALLOC_KEEP_BYTES) -> bool:
    """Raise glibc's trim and mmap thresholds to ``limit`` in this process (once); False where
    the C library has no ``mallopt`` (macOS, Windows) or refuses the values."""
    global _malloc_tuned
    if _malloc_tuned:
        return True
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_TRIM_THRESHOLD, limit) == 1 and mallopt(_M_MMAP_THRESHOLD, limit) == 1
    _malloc_tuned = ok
    return ok


def run_stage(
    stage: str,
    batches: list,
    task_fn: TaskFn,
    out_dir: str | Path,
    options: ExecOptions,
    progress: Progress | None = None,
    *,
    client=None,
    on_start: Callable[[StageStart], None] | None = None,
    done_exts: tuple = SHARD_EXTS,
    stored_runs: int = 0,
    on_event: OnEvent | None = None,
) -> RunSummary:
    """Run ``task_fn`` on every batch whose ``stage`` shards the manifest does not hold yet;
    append the receipts as batches finish.

    Args:
        stage: the manifest stage the task writes (``train``, ``landscape``, …).
        batches: the plan; each has ``batch_id``, ``runs`` and ``to_dict()``.
        task_fn: a top-level function ``(batch_dict, out_dir, options_dict) -> [receipt dicts]``.
        out_dir: the zoo's output folder: a path, or an fsspec URL the workers can reach.
        options: where and how to run.
        progress: called as ``progress(event, batch, error)`` with event ``done``/``failed``.
        client: a Dask client to reuse (e.g. one cluster for several stages).
        on_start: called once with a :class:`StageStart` when the workers are reachable.
        done_exts: the shard kinds a finished batch of this stage has in the manifest.
        stored_runs: runs the plan left out because the store holds them (for the report).
        on_event: called with a :class:`zoo.dist.control.ClusterEvent` for what the operator
            should see on Dask: no workers for a while, workers lost, batches rerun, stopping.
    Returns:
        a :class:`RunSummary`; failures are collected, never raised, so other batches go on.
        SIGTERM is turned into ``KeyboardInterrupt``: the running batches are stopped on their
        workers (also those of an existing scheduler), the queued ones cancelled and the
        cluster shut down; a rerun then does only what the manifest lacks.
    """
    out = _task_location(out_dir, options, client)
    manifest = Manifest(out)
    done = manifest.done_batch_ids(stage, done_exts)
    summary = RunSummary(
        skipped=[b.batch_id for b in batches if b.batch_id in done], stored_runs=stored_runs
    )
    todo = [b for b in batches if b.batch_id not in done]
    finish = _finisher(manifest, summary, progress)

    def started(c) -> None:
        if on_start:
            runs = stored_runs + sum(len(b.runs) for b in batches if b.batch_id in done)
            link = c and dashboard_link(c)
            on_start(StageStart(stage, len(batches), len(summary.skipped), runs, link))

    with _sigterm_as_interrupt():
        if not todo or (client is None and _in_process(options)):
            started(None)
            for batch in todo:
                try:
                    records = execute(task_fn, batch.to_dict(), out, options.to_dict())
                    finish(batch, records, None)
                except Exception as err:  # a batch that raises must not stop the others
                    finish(batch, None, _error_text(err))
            return summary
        with contextlib.nullcontext(client) if client else dask_client(options) as c:
            started(c)
            _run_on_dask(c, stage, task_fn, todo, out, options, finish, on_event)
    return summary


def run_ids(batch) -> list[str]:
    """The run ids of a stage's batch (its ``runs`` hold run configs or run ids)."""
    return [getattr(r, "run_id", r) for r in batch.runs]


def _in_process(options: ExecOptions) -> bool:
    return options.workers == 0 and not options.scheduler and options.cluster == "local"


def _task_location(out_dir, options: ExecOptions, client) -> str:
    """What tasks get as ``out_dir``: an absolute path (workers may have another working
    directory) or a URL; ``memory://`` only where the tasks run in this process."""
    out = store_location(out_dir)
    if not is_remote(out):
        return os.path.abspath(out)
    if out.startswith("memory://") and (client is not None or not _in_process(options)):
        raise DistError(
            f"{out}: a memory:// store lives in one process, but the tasks would run in worker "
            "processes; use --workers 0, or a store every worker reaches (a shared folder, "
            "file://, s3://…)"
        )
    return out


def _finisher(manifest: Manifest, summary: RunSummary, progress: Progress | None):
    def finish(batch, records: list[dict] | None, error: str | None) -> None:
        if error is None:
            manifest.append(ShardRecord.from_dict(r) for r in records)
            summary.done.append(batch.batch_id)
        else:
            summary.failed[batch.batch_id] = error
            summary.failed_runs[batch.batch_id] = run_ids(batch)
        if progress:
            progress("done" if error is None else "failed", batch, error)

    return finish


def _run_on_dask(
    client, stage, task_fn, todo, out, options: ExecOptions, finish, on_event=None
) -> None:
    from dask.distributed import as_completed

    stop = f"zoo-stop-{stage}-{uuid.uuid4().hex}"  # the Event that stops this stage's batches
    opts = {**options.to_dict(), "stop_event": stop}
    resources = {"GPU": 1} if options.gpus_per_worker else None
    futures = {
        client.submit(
            execute,
            task_fn,
            b.to_dict(),
            out,
            opts,
            key=f"{stage}-{b.batch_id}",
            retries=options.retries,
            resources=resources,
        ): b
        for b in todo
    }
    errors = (lambda: JOB_ERRORS.last) if options.cluster != "local" else None
    watch = ClusterWatch(
        client,
        {str(f.key): b for f, b in futures.items()},
        on_event,
        options.no_workers_warning_s,
        waiting_hint(options),
        errors,
    )
    try:
        with watch:
            _gather(as_completed(futures), futures, finish, watch)
    except BaseException:  # interrupted: stop what is running, cancel what is queued
        stop_batches(client, stop, list(futures), on_event, wait=bool(options.scheduler))
        raise


def _gather(results, futures: dict, finish, watch: ClusterWatch) -> None:
    """Hand each finished batch to ``finish`` as it completes; poll the watch meanwhile."""
    while not results.is_empty():
        ready = results.next_batch(block=False)
        if not ready:
            watch.poll()
            time.sleep(0.05)
            continue
        for future in ready:
            batch = futures.pop(future)
            try:
                records, error = future.result(), None
            except Exception as err:  # the task's error, KilledWorker (3 deaths), cancelled
                records, error = None, _error_text(err)
            finish(batch, records, error)
            future.release()
        watch.poll()
    watch.poll(force=True)  # what happened to the last batches (a worker lost, a rerun)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (a batch system's cancel, ``kill``) like Ctrl-C so clusters shut down."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _error_text(err: BaseException) -> str:
    lines = traceback.format_exception_only(type(err), err)
    return "".join(lines).strip()
