"""Running the batches of a stage: in this process, on an embedded Dask ``LocalCluster``, on an
existing scheduler, or on SLURM/PBS batch jobs through dask-jobqueue.

Tasks write their shards and return small receipts (``ShardRecord`` dicts); only the driver
appends receipts to the manifest, so a task killed mid-way leaves no trace in it and is simply
run again (Dask reruns the batches of a dead worker elsewhere). Keys come from batch ids, so a
batch is never run twice at once and its shards are recorded once. Weights never travel
through the scheduler, only batch specs and receipts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from .errors import DistError
from .store import SHARD_EXTS, Manifest, ShardRecord, is_remote, store_location
from .training import PopulationBatch, train_population, write_train_shards

CLUSTERS = ("local", "slurm", "pbs")


@dataclass(frozen=True)
class ExecOptions:
    """How batches run; none of it changes run ids, batches or weights.

    ``cluster_settings`` is the recipe's ``execution.cluster`` section without ``kind``.
    """

    workers: int = 2
    threads_per_worker: int = 1
    device: str = "auto"
    chunk_size: int | None = None
    eval_batch_size: int = 1024
    scheduler: str | None = None  # address of an existing Dask scheduler
    cluster: str = "local"  # local | slurm | pbs
    cluster_settings: dict = field(default_factory=dict)
    gpus_per_worker: int = 0
    retries: int = 1
    dashboard: bool = False  # serve the Dask dashboard (needs bokeh)

    def __post_init__(self) -> None:
        if self.cluster not in CLUSTERS:
            raise DistError(f"cluster {self.cluster!r} is not one of {list(CLUSTERS)}")
        if self.scheduler and self.cluster != "local":
            raise DistError(
                f"--scheduler {self.scheduler} and --cluster {self.cluster} both say where "
                "workers come from; give one of them"
            )

    @classmethod
    def from_recipe(cls, execution: dict, **overrides) -> ExecOptions:
        """Options from a resolved ``execution`` section; ``None`` overrides are ignored."""
        keys = ("workers", "threads_per_worker", "device", "chunk_size", "eval_batch_size",
                "gpus_per_worker", "retries")  # fmt: skip
        values = {k: execution[k] for k in keys if k in execution}
        settings = dict(execution.get("cluster") or {})
        values["cluster"] = settings.pop("kind", "local")
        values["cluster_settings"] = settings
        values.update({k: v for k, v in overrides.items() if v is not None})
        if overrides.get("scheduler") and not overrides.get("cluster"):
            values["cluster"] = "local"  # an explicit scheduler wins over the recipe's cluster
        return cls(**values)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> ExecOptions:
        return cls(**d)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def worker_device(device: str) -> str:
    """The device of this worker: with several GPUs visible, worker ``n`` (the number its name
    ends with, as LocalCluster and jobqueue name them) takes GPU ``n mod count``."""
    device = resolve_device(device)
    count = torch.cuda.device_count() if device == "cuda" else 0
    if count <= 1:
        return device
    try:
        from distributed import get_worker

        match = re.search(r"(\d+)$", str(get_worker().name))
    except (ImportError, ValueError):  # not on a Dask worker
        match = None
    return f"cuda:{int(match[1]) % count if match else 0}"


def train_task(batch: dict, out_dir: str, options: dict) -> list[dict]:
    """One Dask task: train a population batch, write its shards, return their receipts.

    A top-level function of plain data, so it runs the same in this process or on any worker.
    """
    torch.set_num_threads(options["threads_per_worker"])
    pop = PopulationBatch.from_dict(batch)
    result = train_population(
        pop,
        device=worker_device(options["device"]),
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
    failed_runs: dict[str, list[str]] = field(default_factory=dict)  # batch_id -> run ids


@dataclass(frozen=True)
class StageStart:
    """What ``on_start`` hears once a stage's workers are reachable."""

    stage: str
    batches: int  # in the plan
    skipped: int  # already in the manifest
    skipped_runs: int  # runs of those batches
    dashboard: str | None  # the Dask dashboard's address, when one is served


# --- clusters -----------------------------------------------------------------------------------


def _has_bokeh() -> bool:
    return importlib.util.find_spec("bokeh") is not None


def _cluster_schema() -> dict:
    from .recipe import recipe_schema

    return recipe_schema()["properties"]["execution"]["properties"]["cluster"]


def _with_defaults(settings: dict) -> dict:
    """``execution.cluster`` settings with the schema's defaults filled in (one level deep)."""
    out = {}
    for key, prop in _cluster_schema()["properties"].items():
        if "properties" in prop:
            nested = {k: p["default"] for k, p in prop["properties"].items()}
            out[key] = {**nested, **settings.get(key, {})}
        else:
            out[key] = settings.get(key, prop["default"])
    return out


def jobqueue_kwargs(options: ExecOptions) -> dict:
    """Arguments of ``SLURMCluster``/``PBSCluster`` from the recipe's ``execution.cluster``.

    Each worker process runs one batch at a time (``--nthreads 1``) with ``threads_per_worker``
    torch threads; GPU workers declare ``GPU=gpus_per_worker`` and SLURM jobs ask for the GPUs.
    """
    cfg = _with_defaults(options.cluster_settings)
    processes = cfg["processes"] or max(1, cfg["cores"] // options.threads_per_worker)
    extra, worker_args = list(cfg["job_extra"]), ["--nthreads", "1"]  # the last --nthreads wins
    if options.gpus_per_worker:
        worker_args += ["--resources", f"GPU={options.gpus_per_worker}"]
        if options.cluster == "slurm" and not any("gres" in e or "gpus" in e for e in extra):
            extra.append(f"--gres=gpu:{options.gpus_per_worker * processes}")
    dashboard = options.dashboard and _has_bokeh()
    return dict(
        queue=cfg["queue"], account=cfg["account"], cores=cfg["cores"], processes=processes,
        memory=cfg["memory"], walltime=cfg["walltime"], job_name="zoo-worker",
        job_extra_directives=extra, worker_extra_args=worker_args,
        job_script_prologue=[f"export OMP_NUM_THREADS={options.threads_per_worker}",
                             *cfg["prologue"]],
        interface=cfg["interface"], local_directory=cfg["local_directory"],
        log_directory=cfg["log_directory"], python=cfg["python"] or sys.executable,
        scheduler_options={"dashboard_address": ":8787" if dashboard else ":0",
                           "dashboard": dashboard},
    )  # fmt: skip


def jobqueue_cluster(options: ExecOptions):
    """A dask-jobqueue cluster (nothing is submitted until it is scaled)."""
    try:
        import dask_jobqueue
    except ImportError as err:
        raise DistError(
            f"--cluster {options.cluster} needs dask-jobqueue; install it with "
            "`pip install 'zoo[cluster]'` (or `pip install dask-jobqueue`)"
        ) from err
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[options.cluster]
    return cls(**jobqueue_kwargs(options))


def make_cluster(options: ExecOptions):
    """The cluster ``options`` ask for: a LocalCluster, or jobqueue jobs (scaled or adaptive)."""
    if options.cluster != "local":
        cluster, cfg = jobqueue_cluster(options), _with_defaults(options.cluster_settings)
        adaptive = cfg["adaptive"]
        if adaptive["maximum"]:
            cluster.adapt(minimum_jobs=adaptive["minimum"], maximum_jobs=adaptive["maximum"])
        else:
            cluster.scale(jobs=cfg["jobs"])
        return cluster
    from dask.distributed import LocalCluster

    # one thread per process: two threads in one process spin-wait when the CPU is shared
    resources = {"GPU": options.gpus_per_worker} if options.gpus_per_worker else None
    return LocalCluster(
        n_workers=options.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=":0", scheduler_kwargs={"dashboard": options.dashboard and _has_bokeh()},
        env={"OMP_NUM_THREADS": str(options.threads_per_worker)}, resources=resources,
    )  # fmt: skip


@contextlib.contextmanager
def dask_client(options: ExecOptions) -> Iterator:
    """A client on ``options.scheduler``, or on the cluster :func:`make_cluster` starts."""
    from dask.distributed import Client

    if not options.scheduler:
        with make_cluster(options) as cluster, Client(cluster) as client:
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
    with contextlib.suppress(Exception):
        return client.dashboard_link if _has_bokeh() else None
    return None


# --- running a stage ----------------------------------------------------------------------------

Progress = Callable[[str, PopulationBatch, str | None], None]
TaskFn = Callable[[dict, str, dict], list[dict]]


def run_train(
    batches: list[PopulationBatch], out_dir: str | Path, options: ExecOptions,
    progress: Progress | None = None, **kwargs,
) -> RunSummary:  # fmt: skip
    """Train every batch not yet in the manifest (see :func:`run_stage`)."""
    return run_stage("train", batches, train_task, out_dir, options, progress, **kwargs)


def run_stage(
    stage: str, batches: list, task_fn: TaskFn, out_dir: str | Path, options: ExecOptions,
    progress: Progress | None = None, *, client=None,
    on_start: Callable[[StageStart], None] | None = None, done_exts: tuple = SHARD_EXTS,
) -> RunSummary:  # fmt: skip
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
    Returns:
        a :class:`RunSummary`; failures are collected, never raised, so other batches go on.
        SIGTERM is turned into ``KeyboardInterrupt``: running tasks are cancelled and the
        cluster shut down; a rerun then does only what the manifest lacks.
    """
    out = _task_location(out_dir, options, client)
    manifest = Manifest(out)
    done = manifest.done_batch_ids(stage, done_exts)
    summary = RunSummary(skipped=[b.batch_id for b in batches if b.batch_id in done])
    todo = [b for b in batches if b.batch_id not in done]
    finish = _finisher(manifest, summary, progress)

    def started(c) -> None:
        if on_start:
            runs = sum(len(b.runs) for b in batches if b.batch_id in done)
            link = c and dashboard_link(c)
            on_start(StageStart(stage, len(batches), len(summary.skipped), runs, link))

    with _sigterm_as_interrupt():
        if not todo or (client is None and _in_process(options)):
            started(None)
            for batch in todo:
                try:
                    finish(batch, task_fn(batch.to_dict(), out, options.to_dict()), None)
                except Exception as err:  # a batch that raises must not stop the others
                    finish(batch, None, _error_text(err))
            return summary
        with contextlib.nullcontext(client) if client else dask_client(options) as c:
            started(c)
            _run_on_dask(c, stage, task_fn, todo, out, options, finish)
    return summary


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
            summary.failed_runs[batch.batch_id] = [r.run_id for r in batch.runs]
        if progress:
            progress("done" if error is None else "failed", batch, error)

    return finish


def _run_on_dask(client, stage, task_fn, todo, out, options: ExecOptions, finish) -> None:
    from dask.distributed import as_completed

    opts = options.to_dict()
    resources = {"GPU": 1} if options.gpus_per_worker else None
    futures = {
        client.submit(task_fn, b.to_dict(), out, opts, key=f"{stage}-{b.batch_id}",
                      retries=options.retries, resources=resources): b
        for b in todo
    }  # fmt: skip
    try:
        for future in as_completed(futures):
            batch = futures.pop(future)
            try:
                records, error = future.result(), None
            except Exception as err:  # the task's error, KilledWorker (3 deaths), cancelled
                records, error = None, _error_text(err)
            finish(batch, records, error)
            future.release()
    except BaseException:
        client.cancel(list(futures))  # interrupted: stop what is queued or running
        raise


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


# --- progress -----------------------------------------------------------------------------------


class StageLog:
    """Counts a stage's progress from :func:`run_stage`'s callbacks and hands each event, as a
    JSON-ready dict, to its listeners (a progress display, a JSON log).

    Pass ``on_start=log.start`` and ``progress=log``; call ``log.end(summary)`` at the end.
    """

    def __init__(self, stage: str, batches: list, listeners: list | None = None):
        self.stage, self.listeners = stage, list(listeners or [])
        self.runs = {b.batch_id: len(b.runs) for b in batches}
        self.batches, self.models = len(batches), sum(self.runs.values())
        self.done = self.failed = self.models_done = self.models_failed = self.skipped_models = 0
        self.started = self.last = time.monotonic()

    def emit(self, event: str, **extra) -> None:
        elapsed = self.last - self.started  # up to the last batch, not the cluster's shutdown
        rate = self.models_done / elapsed if elapsed > 0 else 0.0
        left = self.models - self.skipped_models - self.models_done - self.models_failed
        state = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"), "stage": self.stage,
            "event": event, "batches": self.batches, "batches_done": self.done,
            "batches_failed": self.failed, "models": self.models, "models_done": self.models_done,
            "models_failed": self.models_failed, "models_skipped": self.skipped_models,
            "models_per_s": round(rate, 3), "eta_s": round(left / rate, 1) if rate > 0 else None,
            **extra,
        }  # fmt: skip
        for listener in self.listeners:
            listener(state)

    def start(self, info: StageStart) -> None:
        self.started = self.last = time.monotonic()
        self.skipped_models = info.skipped_runs
        self.emit("start", batches_skipped=info.skipped, dashboard=info.dashboard)

    def __call__(self, event: str, batch, error: str | None) -> None:
        self.last = time.monotonic()
        if event == "done":
            self.done, self.models_done = self.done + 1, self.models_done + len(batch.runs)
            self.emit("done", batch_id=batch.batch_id)
        else:
            self.failed, self.models_failed = self.failed + 1, self.models_failed + len(batch.runs)
            runs = [r.run_id for r in batch.runs]
            self.emit("failed", batch_id=batch.batch_id, run_ids=runs, error=error)

    def end(self, summary: RunSummary | None, interrupted: bool = False) -> None:
        counts = {"skipped": len(summary.skipped)} if summary else {}
        self.emit("interrupted" if interrupted else "end", **counts)


class JsonLog:
    """A listener of :class:`StageLog` that appends one JSON object per event to a file."""

    def __init__(self, path: str | Path):
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def __call__(self, state: dict) -> None:
        self.file.write(json.dumps(state) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class StageBar:
    """A listener of :class:`StageLog` that draws a rich progress bar (batches, models,
    models/s, failures, ETA) and prints the dashboard address and each failure."""

    def __init__(self, console, stage: str, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = console
        columns = (TextColumn(f"[bold]{stage}[/]"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("batches · {task.fields[info]}"))  # fmt: skip
        self.bar = Progress(*columns, console=console, transient=False)
        self.task = self.bar.add_task(stage, total=total, info="starting workers")
        self.skipped = 0

    def __enter__(self) -> StageBar:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def __call__(self, s: dict) -> None:
        from rich.markup import escape

        if s["event"] == "start":
            self.skipped = s["batches_skipped"]
            if s["dashboard"]:
                self.console.print(f"Dask dashboard: {s['dashboard']}")
            if self.skipped:
                self.console.print(
                    f"{self.skipped} of {s['batches']} batches already done: resuming"
                )
        elif s["event"] == "failed":
            runs = ", ".join(s["run_ids"][:4]) + (" …" if len(s["run_ids"]) > 4 else "")
            last = escape(s["error"].splitlines()[-1])
            self.console.print(f"[red]batch {s['batch_id']} failed[/] (runs {runs}): {last}")
        eta = "–" if s["eta_s"] is None else time.strftime("%H:%M:%S", time.gmtime(s["eta_s"]))
        todo = s["models"] - s["models_skipped"]
        info = f"{s['models_done']}/{todo} models · {s['models_per_s']:.1f} models/s · "
        info += f"{s['batches_failed']} failed · ETA {eta}"
        done = self.skipped + s["batches_done"] + s["batches_failed"]
        self.bar.update(self.task, completed=done, info=info)


def with_cluster_config(execution: dict, path: str | Path) -> dict:
    """``execution`` with its ``cluster`` section updated from a YAML file of the same keys
    (``kind``, ``queue``, ``cores``, ``memory``, ``walltime``, ``job_extra``, ``adaptive``…).

    Raises:
        RecipeError: naming every unknown key or bad value of the file.
    """
    import jsonschema
    import yaml

    from .errors import RecipeError

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise RecipeError(str(path), [f"cannot read the cluster config: {err}"]) from err
    problems = []
    for e in jsonschema.Draft202012Validator(_cluster_schema()).iter_errors(data):
        where = ".".join(map(str, ["cluster", *e.absolute_path]))
        allowed = (
            f"; allowed keys: {sorted(e.schema['properties'])}"
            if "properties" in e.schema and e.validator == "additionalProperties"
            else ""
        )
        problems.append(f"{where}: {e.message}{allowed}")
    if problems:
        raise RecipeError(str(path), sorted(problems))
    current = _with_defaults(execution.get("cluster", {}))
    adaptive = {**current["adaptive"], **data.get("adaptive", {})}
    return {**execution, "cluster": {**current, **data, "adaptive": adaptive}}
