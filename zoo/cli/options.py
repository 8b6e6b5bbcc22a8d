"""What every ``zoo`` command shares: the stderr console, error exit, the option and argument
types (``Annotated`` aliases), and loading a recipe and its execution options."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from zoo.dist.clusters import check_cluster, job_script, with_cluster_config
from zoo.dist.options import ExecOptions
from zoo.errors import ZooError
from zoo.recipe import Recipe, load_recipe

console = Console(stderr=True, soft_wrap=True)  # errors and paths are never wrapped

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML, e.g. pipelines/quickstart.yaml.")]
OutArg = Annotated[Path, typer.Argument(help="A zoo's output folder, e.g. out/quickstart.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key: --set train.epochs=5 (repeatable)."),
]
ScaleOpt = Annotated[
    bool,
    typer.Option(
        "--scale",
        help="Apply the recipe's `scale:` overrides: the published size of the zoo it follows "
        "(its own output folder, `-scaled`).",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(help="Worker processes of the embedded Dask cluster (0: this process)."),
]
SchedulerOpt = Annotated[
    str | None, typer.Option(help="Address of an existing Dask scheduler, e.g. tcp://host:8786.")
]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu or cuda.")]
ThreadsOpt = Annotated[
    int | None, typer.Option(help="Torch threads per worker (default: the recipe's, 1).")
]
ClusterOpt = Annotated[
    str | None,
    typer.Option(
        help="local (a LocalCluster here), slurm or pbs (worker jobs via dask-jobqueue, "
        "the `cluster` extra). Default: the recipe's execution.cluster.kind."
    ),
]
ClusterConfigOpt = Annotated[
    Path | None,
    typer.Option(
        help="YAML file of execution.cluster keys (queue, cores, memory, walltime, job_extra, "
        "prologue, adaptive: {minimum, maximum}, …) overriding the recipe's."
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar (batch jobs); errors still print.")
]
JsonLogOpt = Annotated[
    Path | None,
    typer.Option(
        help="Append one JSON object per event to this file: start, done, failed, end, and "
        "no_workers, workers, worker_lost, batch_rerun, stopping, stopped, interrupted."
    ),
]
JobScriptOpt = Annotated[
    bool,
    typer.Option(
        "--print-job-script",
        help="Print the batch script a --cluster slurm|pbs run would submit for each worker "
        "job, and exit: nothing is submitted or trained.",
    ),
]


def _fail(err: ZooError) -> None:
    console.print(f"[bold red]error:[/] {escape(str(err))}")
    raise typer.Exit(code=2)


def print_out(text: str) -> None:
    Console(soft_wrap=True).print(text)


def _load(recipe: Path, overrides: list[str] | None, scale: bool = False) -> Recipe:
    try:
        return load_recipe(recipe, overrides or [], scale=scale)
    except ZooError as err:
        _fail(err)


def _options(
    recipe: Recipe,
    workers,
    scheduler,
    device,
    threads_per_worker=None,
    cluster=None,
    cluster_config=None,
    check: bool = True,
) -> ExecOptions:
    """The execution options of a command; ``check``: fail at once where a SLURM/PBS cluster
    could not submit a job (dask-jobqueue or the submit command missing)."""
    execution = recipe.execution
    if cluster_config is not None:
        execution = with_cluster_config(execution, cluster_config)
    options = ExecOptions.from_recipe(
        execution,
        workers=workers,
        scheduler=scheduler,
        device=device,
        cluster=cluster,
        threads_per_worker=threads_per_worker,
        dashboard=True,
    )
    if check:
        check_cluster(options)
    return options


def print_job_script(options: ExecOptions) -> None:
    """Print the job script of a SLURM/PBS run to stdout (a note on its scheduler address to
    stderr); nothing is submitted."""
    if options.cluster == "local":
        raise ZooError(
            "--print-job-script shows the script of SLURM/PBS worker jobs: add --cluster slurm "
            "(or pbs), or set execution.cluster.kind in the recipe or the --cluster-config file"
        )
    script = job_script(dataclasses.replace(options, dashboard=False))
    print(script, end="" if script.endswith("\n") else "\n")
    console.print(
        f"[dim]the job script of --cluster {options.cluster} (not submitted); a run puts its "
        "own scheduler's address in place of this one[/]"
    )
