"""Where a stage's workers come from: a Dask ``LocalCluster`` here, or SLURM/PBS batch jobs
through dask-jobqueue, built from the recipe's ``execution.cluster`` section (or a
``--cluster-config`` YAML file of the same keys) with the schema's defaults.
"""

from __future__ import annotations

import importlib.util
import sys
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
