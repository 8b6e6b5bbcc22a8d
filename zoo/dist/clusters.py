"""Where a stage's workers come from: a Dask ``LocalCluster`` here, or SLURM/PBS batch jobs
through dask-jobqueue, built from the recipe's ``execution.cluster`` section (or a
``--cluster-config`` YAML file of the same keys) with the schema's defaults.

A SLURM/PBS run checks first that it can submit jobs (:func:`check_cluster`: dask-jobqueue
installed, ``sbatch``/``qsub`` on PATH), so it fails at once instead of waiting forever;
:func:`job_script` shows the job script without submitting it; while it runs, the errors of job
submissions are kept out of the log (no traceback every few seconds) and handed to the
no-workers message (:data:`JOB_ERRORS`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from zoo.dist.options import ExecOptions
from zoo.errors import DistError


def has_bokeh() -> bool:
    """Whether bokeh is installed: the Dask dashboard needs it."""
    return importlib.util.find_spec("bokeh") is not None


def _cluster_schema() -> dict:
    from zoo.recipe import recipe_schema

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
    dashboard = options.dashboard and has_bokeh()
    return dict(
        queue=cfg["queue"],
        account=cfg["account"],
        cores=cfg["cores"],
        processes=processes,
        memory=cfg["memory"],
        walltime=cfg["walltime"],
        job_name="zoo-worker",
        job_extra_directives=extra,
        worker_extra_args=worker_args,
        job_script_prologue=[
            f"export OMP_NUM_THREADS={options.threads_per_worker}",
            *cfg["prologue"],
        ],
        interface=cfg["interface"],
        local_directory=cfg["local_directory"],
        log_directory=cfg["log_directory"],
        python=cfg["python"] or sys.executable,
        scheduler_options={
            "dashboard_address": ":8787" if dashboard else ":0",
            "dashboard": dashboard,
        },
    )


SUBMIT_COMMANDS = {"slurm": "sbatch", "pbs": "qsub"}
QUEUE_COMMANDS = {"slurm": "squeue -n zoo-worker", "pbs": "qstat -u $USER"}


def _jobqueue_class(options: ExecOptions):
    try:
        import dask_jobqueue
    except ImportError as err:
        raise DistError(
            f"--cluster {options.cluster} needs dask-jobqueue; install it with "
            "`pip install 'zoo[cluster]'` (or `pip install dask-jobqueue`)"
        ) from err
    return {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[options.cluster]


def check_cluster(options: ExecOptions) -> None:
    """Fail at once where a SLURM/PBS run could not start a single worker job: dask-jobqueue
    missing, or the submit command (``sbatch``, ``qsub``) not on PATH. Nothing for local runs.

    Raises:
        DistError: naming what is missing and the ways on.
    """
    if options.cluster == "local":
        return
    _jobqueue_class(options)
    command = SUBMIT_COMMANDS[options.cluster]
    if shutil.which(command) is None:
        raise DistError(
            f"--cluster {options.cluster} submits its worker jobs with `{command}`, which is not "
            f"on PATH here: run zoo where `{command}` works (a login node of the cluster), or "
            "take workers from elsewhere: --workers N (this machine) or --scheduler ADDRESS (a "
            "running Dask cluster). --print-job-script shows the job script without submitting"
        )


def jobqueue_cluster(options: ExecOptions):
    """A dask-jobqueue cluster (nothing is submitted until it is scaled)."""
    return _jobqueue_class(options)(**jobqueue_kwargs(options))


def job_script(options: ExecOptions) -> str:
    """The batch script a ``--cluster slurm|pbs`` run submits for each worker job, without
    submitting anything (the submit command need not exist). Its scheduler address is that of
    a scheduler started for the occasion: a real run starts its own."""
    cluster = jobqueue_cluster(options)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


class JobErrors(logging.Filter):
    """Keeps the errors of dask-jobqueue's job submissions out of the log (tornado prints a
    traceback every few seconds otherwise) and remembers the last one for the operator."""

    LOGGERS = (
        "tornado.application",
        "asyncio",
        "distributed.deploy.adaptive",
        "distributed.deploy.spec",
    )

    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not _from_jobqueue(record.exc_info[2]):
            return True
        self.last = _condense(str(exc)) or type(exc).__name__
        self.count += 1
        return False


def _condense(text: str) -> str:
    """dask-jobqueue's "Command exited with non-zero exit code. Exit code: 1 Command: sbatch …
    stdout: … stderr: …" as "`sbatch` exited with code 1: <stderr>"; other text on one line."""
    match = re.search(r"Exit code: (\d+)\s+Command:\s+(\S+).*?stderr:\s*(.*)", text, re.S)
    if match:
        code, command, stderr = match.groups()
        return f"`{command}` exited with code {code}: {' '.join(stderr.split())[:300]}"
    return " ".join(text.split())[:400]


def _from_jobqueue(tb) -> bool:
    while tb is not None:
        if "dask_jobqueue" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


JOB_ERRORS = JobErrors()


@contextlib.contextmanager
def capture_job_errors(options: ExecOptions) -> Iterator[JobErrors | None]:
    """While a jobqueue cluster runs, route its job submission errors to :data:`JOB_ERRORS`."""
    if options.cluster == "local":
        yield None
        return
    JOB_ERRORS.last, JOB_ERRORS.count = None, 0
    loggers = [logging.getLogger(name) for name in JobErrors.LOGGERS]
    for logger in loggers:
        logger.addFilter(JOB_ERRORS)
    try:
        yield JOB_ERRORS
    finally:
        for logger in loggers:
            logger.removeFilter(JOB_ERRORS)


def waiting_hint(options: ExecOptions) -> str:
    """What to check when no worker connects."""
    if options.scheduler:
        return (
            f"start workers with `dask worker {options.scheduler} --nthreads 1` (Ctrl-C stops "
            "this run; finished batches are kept)"
        )
    if options.cluster != "local":
        return (
            f"the worker jobs may wait in the queue (`{QUEUE_COMMANDS[options.cluster]}`) or "
            "fail at start (see the cluster's log_directory)"
        )
    return "the local workers did not start; check memory and the Dask worker logs"


def make_cluster(options: ExecOptions):
    """The cluster ``options`` ask for: a LocalCluster, or jobqueue jobs (scaled or adaptive);
    a SLURM/PBS cluster is checked first (:func:`check_cluster`)."""
    if options.cluster != "local":
        check_cluster(options)
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
        n_workers=options.workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
        scheduler_kwargs={"dashboard": options.dashboard and has_bokeh()},
        env={"OMP_NUM_THREADS": str(options.threads_per_worker)},
        resources=resources,
    )


def with_cluster_config(execution: dict, path: str | Path) -> dict:
    """``execution`` with its ``cluster`` section updated from a YAML file of the same keys
    (``kind``, ``queue``, ``cores``, ``memory``, ``walltime``, ``job_extra``, ``adaptive``…).

    Raises:
        RecipeError: naming every unknown key or bad value of the file.
    """
    import jsonschema
    import yaml

    from zoo.errors import RecipeError

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
