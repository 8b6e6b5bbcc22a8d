"""The ``zoo`` command: parse, call one function of :mod:`zoo.pipeline`, print. No logic here."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__, pipeline
from .build import build_dataset
from .dist import ExecOptions
from .errors import ZooError
from .recipe import Recipe, load_recipe
from .store import Manifest

app = typer.Typer(
    help=(
        "Generate, annotate and publish model zoos as weight-space datasets.\n\n"
        "A recipe (YAML) declares a task, an architecture, an init, training settings, a grid "
        "of overrides and a number of seeds; `zoo run RECIPE` trains every run, stores every "
        "checkpoint and builds a Hugging Face dataset folder.\n\n"
        "Example:  zoo run pipelines/quickstart.yaml"
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True, soft_wrap=True)  # errors and paths are never wrapped

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML, e.g. pipelines/quickstart.yaml.")]
OutArg = Annotated[Path, typer.Argument(help="A zoo's output folder, e.g. out/quickstart.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key: --set train.epochs=5 (repeatable)."),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(help="Worker processes of the embedded Dask cluster (0: this process)."),
]
SchedulerOpt = Annotated[
    str | None, typer.Option(help="Address of an existing Dask scheduler, e.g. tcp://host:8786.")
]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu or cuda.")]


def _fail(err: ZooError) -> None:
    console.print(f"[bold red]error:[/] {escape(str(err))}")
    raise typer.Exit(code=2)


def _load(recipe: Path, overrides: list[str] | None) -> Recipe:
    try:
        return load_recipe(recipe, overrides or [])
    except ZooError as err:
        _fail(err)


def _options(recipe: Recipe, workers, scheduler, device) -> ExecOptions:
    return ExecOptions.from_recipe(
        recipe.execution, workers=workers, scheduler=scheduler, device=device
    )


def _train(recipe: Recipe, options: ExecOptions):
    plan = pipeline.plan(recipe)
    columns = [TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(),
               TextColumn("batches · {task.fields[models]} models · {task.fields[failed]} failed"),
               TimeRemainingColumn()]  # fmt: skip
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("train", total=len(plan.batches), models=0, failed=0)
        counts = Counter()

        def progress(event, batch, error):
            counts[event] += 1
            counts["models"] += len(batch.runs) if event == "done" else 0
            bar.update(task, advance=1, models=counts["models"], failed=counts["failed"])
            if error:
                console.print(f"[red]batch {batch.batch_id} failed:[/] {error.splitlines()[-1]}")

        summary = pipeline.train(recipe, options, progress)
        bar.update(task, completed=len(plan.batches))
    if summary.skipped:
        console.print(f"{len(summary.skipped)} batches were already done (resumed).")
    return summary


@app.command()
def run(
    recipe: RecipeArg, set: SetOpt = None, workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None, device: DeviceOpt = None,
):  # fmt: skip
    """Train every run of a recipe and build its dataset folder (resumable).

    Runs only what the output folder does not hold yet, so an interrupted run continues where
    it stopped. Example: zoo run pipelines/quickstart.yaml --set seeds=8
    """
    rec = _load(recipe, set)
    try:
        summary = _train(rec, _options(rec, workers, scheduler, device))
        pipeline.raise_for_failures(summary, rec)
        if rec.resolved["landscape"]["metrics"]:
            _landscape(rec, _options(rec, workers, scheduler, device))
        folder = build_dataset(rec, rec.out_dir)
    except ZooError as err:
        _fail(err)
    _print_inspect(rec.out_dir)
    console.print(f"\n[green]dataset:[/] {folder}\n  datasets.load_dataset({str(folder)!r})")


@app.command()
def train(
    recipe: RecipeArg, set: SetOpt = None, workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None, device: DeviceOpt = None,
):  # fmt: skip
    """Train the runs of a recipe into the store (shards + manifest); no dataset is built.

    Example: zoo train pipelines/quickstart.yaml --workers 2
    """
    rec = _load(recipe, set)
    try:
        summary = _train(rec, _options(rec, workers, scheduler, device))
        pipeline.raise_for_failures(summary, rec)
    except ZooError as err:
        _fail(err)
    console.print(f"trained {len(summary.done)} batches into {rec.out_dir}")


@app.command()
def build(out: OutArg):
    """Build the dataset folder OUT/dataset from the store (README card, Parquet, layout.json).

    Example: zoo build out/quickstart
    """
    try:
        rec = load_recipe(out / "recipe.yaml", [f"output.dir={out}"])
        folder = build_dataset(rec, out)
    except ZooError as err:
        _fail(err)
    console.print(f"built {folder}")


@app.command()
def plan(recipe: RecipeArg, set: SetOpt = None):
    """Dry run: list the runs, population batches and estimated storage; trains nothing.

    Example: zoo plan pipelines/quickstart.yaml --set seeds=10
    """
    rec = _load(recipe, set)
    try:
        p = pipeline.plan(rec)
        params = p.num_params()
    except ZooError as err:
        _fail(err)
    table = Table(title=f"plan of {rec.name}")
    cols = ("batch", "runs", "arch", "params", "optimizer", "batch size", "epochs", "checkpoints")
    for col in cols:
        table.add_column(col)
    for b in p.batches:
        r = b.runs[0]
        table.add_row(b.batch_id, str(len(b.runs)), r.model["arch"], f"{params[b.batch_id]:,}",
                      r.train["optimizer"],
                      str(r.train["batch_size"]), str(r.train["epochs"]),
                      ",".join(map(str, r.checkpoints)))  # fmt: skip
    Console().print(table)
    Console().print(
        f"{len(p.runs)} runs in {len(p.batches)} population batches, {p.checkpoints} checkpoints; "
        f"estimated storage {p.storage_bytes() / 2**20:.1f} MiB "
        f"-> {rec.out_dir}"
    )


@app.command()
def verify(
    out: OutArg,
    repair: Annotated[
        bool, typer.Option(help="Delete damaged shards and forget them, so `zoo run` redoes them.")
    ] = False,
):
    """Re-hash every shard against its sha256 in the manifest; name missing, truncated or
    altered files, and shards no record names (orphans of a kill, harmless).

    Exits 1 when a recorded shard is damaged. Example: zoo verify out/quickstart --repair
    """
    manifest = Manifest(out)
    problems = manifest.verify()
    damaged = [p for p in problems if p.kind != "orphan"]
    for p in problems:
        color = "yellow" if p.kind == "orphan" else "red"
        print_out(f"[{color}]{p.kind}[/]: {p.path}: {p.detail}")
    if repair and problems:
        for p in problems:
            (out / p.path).unlink(missing_ok=True)
        dropped = manifest.drop(p.path for p in damaged)
        print_out(f"repaired: removed {len(problems)} file(s), forgot {dropped} record(s); "
                  f"`zoo run` recomputes those batches")  # fmt: skip
        return
    if not damaged:
        print_out(
            f"[green]ok[/]: {len(manifest.records())} shards match their sha256 in {manifest.path}"
        )
        return
    raise typer.Exit(code=1)


def print_out(text: str) -> None:
    Console(soft_wrap=True).print(text)


def _print_inspect(out: Path) -> None:
    import datasets

    folder = out / "dataset"
    layouts = json.loads((folder / "layout.json").read_text())
    table = Table(title=f"zoo {out}")
    for col in ("config", "split", "rows", "runs", "params", "status", "test_acc (last epoch)"):
        table.add_column(col)
    for config in layouts:
        parts = datasets.load_dataset(str(folder), config)
        for split, ds in parts.items():
            cols = ds.select_columns(["run_id", "status", "epoch", "test_acc"]).to_pandas()
            last = cols[cols.epoch == cols.epoch.max()].test_acc
            status = ", ".join(f"{k} {v}" for k, v in Counter(cols.status).items())
            table.add_row(config, split, str(len(ds)), str(cols.run_id.nunique()),
                          f"{layouts[config]['num_params']:,}", status,
                          f"{last.mean():.3f} ± {last.std():.3f}" if len(last) > 1 else
                          f"{last.mean():.3f}")  # fmt: skip
    Console().print(table)


@app.command()
def inspect(out: OutArg):
    """Summarize a built zoo: configs, splits, rows, runs, status and accuracy.

    Example: zoo inspect out/quickstart
    """
    if not (out / "dataset" / "layout.json").exists():
        _fail(ZooError(f"{out}/dataset is not built; run `zoo build {out}` first"))
    _print_inspect(out)


def _landscape(rec: Recipe, options: ExecOptions) -> None:
    batches = pipeline.plan_landscape_batches(rec)
    with Progress(TextColumn("[bold]landscape[/]"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console) as bar:  # fmt: skip
        task = bar.add_task("landscape", total=len(batches))

        def progress(event, batch, error):
            bar.update(task, advance=1)
            if error:
                console.print(f"[red]batch {batch.batch_id} failed:[/] {escape(error)}")

        summary = pipeline.landscape(rec, options, progress)
        bar.update(task, completed=len(batches))
    pipeline.raise_for_failures(summary, rec, stage="landscape")


@app.command()
def landscape(
    out: OutArg, workers: WorkersOpt = None, scheduler: SchedulerOpt = None,
    device: DeviceOpt = None,
):  # fmt: skip
    """Compute the recipe's loss-landscape metrics for a trained zoo, then rebuild its dataset.

    Hessian top eigenvalues and trace, weight statistics, CKA, barriers, Bezier mode
    connectivity and phase labels, as chosen in the recipe's `landscape:` section; resumable.
    Example: zoo landscape out/phase_zoo
    """
    try:
        rec = load_recipe(out / "recipe.yaml", [f"output.dir={out}"])
        if not rec.resolved["landscape"]["metrics"]:
            example = "landscape: {metrics: [hessian, weights, cka, barrier, phase]}"
            raise ZooError(f"{out}/recipe.yaml has no landscape.metrics; add e.g. `{example}`")
        _landscape(rec, _options(rec, workers, scheduler, device))
        folder = build_dataset(rec, out)
    except ZooError as err:
        _fail(err)
    console.print(f"annotated and rebuilt {folder}")


@app.command()
def plot(
    out: OutArg,
    x: Annotated[str, typer.Option(help="Grid key on the x axis, e.g. train.lr.")],
    y: Annotated[str, typer.Option(help="Grid key on the y axis, e.g. model.width.")],
    metric: Annotated[
        list[str] | None, typer.Option(help="Metric column(s), repeatable (default: all).")
    ] = None,
    epoch: Annotated[int | None, typer.Option(help="Epoch (default: last annotated).")] = None,
):
    """Draw phase diagrams: PNG heatmaps of metrics over two grid axes, phases overlaid.

    Writes OUT/plots/<config>_<metric>.png. Example:
    zoo plot out/phase_zoo --x train.batch_size --y model.width
    """
    import datasets

    from .plot import DEFAULT_METRICS, plot_metrics

    folder = out / "dataset"
    if not (folder / "layout.json").exists():
        _fail(ZooError(f"{folder} is not built; run `zoo build {out}` first"))
    written = []
    for config in json.loads((folder / "layout.json").read_text()):
        splits = datasets.load_dataset(str(folder), config).values()
        rows = [r for ds in splits for r in ds.remove_columns(["weights"]).to_list()]
        annotated = [r["epoch"] for r in rows if r.get("probe_loss") is not None]
        at = epoch if epoch is not None else max(annotated or [r["epoch"] for r in rows])
        names = metric or DEFAULT_METRICS
        written += plot_metrics(rows, x, y, at, out / "plots", f"{config}_", names)
    if not written:
        _fail(ZooError(f"nothing to plot: no values of {metric or 'the metrics'} over {x} x {y}"))
    for path in written:
        print_out(str(path))


@app.command()
def version():
    """Print the zoo version."""
    print(__version__)
