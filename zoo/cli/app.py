"""The ``zoo`` command: parse, call one function of the stages or :mod:`zoo.dist.pipeline`,
print. No logic here.

This module holds the app and the stage commands; the shared options are in
:mod:`zoo.cli.options`, the progress display in :mod:`zoo.cli.progress`, the tool commands
(evaluate-generator, learn, push, pull) in :mod:`zoo.cli.tools`. Modules that import torch or
``datasets`` are imported inside the commands, so ``zoo --help`` answers at once."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from zoo import __version__
from zoo.cli.options import (
    ClusterConfigOpt,
    ClusterOpt,
    DeviceOpt,
    JobScriptOpt,
    JsonLogOpt,
    OutArg,
    QuietOpt,
    RecipeArg,
    ScaleOpt,
    SchedulerOpt,
    SetOpt,
    ThreadsOpt,
    WorkersOpt,
    _fail,
    _load,
    _options,
    console,
    print_job_script,
    print_out,
)
from zoo.cli.progress import ClusterWarnings, JsonLog, StageBar, StageLog
from zoo.cli.tools import register
from zoo.dist.options import ExecOptions, resolve_device
from zoo.dist.run import RunSummary
from zoo.errors import ZooError
from zoo.naming import DATASET_DIR, LAYOUT_FILE, PLOTS_DIR, RECIPE_FILE
from zoo.recipe import Recipe, load_recipe
from zoo.store.fs import is_remote, store_location
from zoo.store.manifest import Manifest

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


def _pipeline():
    """zoo.dist.pipeline, imported when a command runs: `zoo --help` need not load torch and
    `datasets`."""
    from zoo.dist import pipeline

    return pipeline


def _build(recipe: Recipe, options: ExecOptions, quiet: bool = False, json_log=None) -> Path:
    """Build the dataset folder with a progress bar over its parts (see :func:`_stage`)."""
    from zoo.stages.build import parts_to_write, plan_build

    plan = plan_build(recipe, recipe.out_dir)

    def build(recipe, options, log, batches, **kwargs) -> Path:
        return _pipeline().build(recipe, options, log, plan=plan, **kwargs)

    parts = parts_to_write(plan, recipe.out_dir)
    return _stage("build", parts, build, recipe, options, quiet, json_log)


def _train(
    recipe: Recipe, options: ExecOptions, quiet: bool = False, json_log=None, publisher=None
):
    """Train with a progress bar and a JSON event log (see :func:`_stage`); with a
    ``publisher`` (``zoo run --push``), snapshots are pushed as batches finish."""
    from zoo.stages.plan import plan

    batches = plan(recipe, _pipeline().stored_checkpoints(recipe)).batches
    train = _pipeline().train
    if publisher is not None:

        def train(recipe, options, log, **kwargs):
            return _pipeline().train(recipe, options, publisher.watch(log), **kwargs)

    return _stage("train", batches, train, recipe, options, quiet, json_log)


def _print_push(event) -> None:
    """One line per push of ``zoo run --push``."""
    if event.error:
        console.print(
            f"[yellow]push failed[/] (training goes on; tried again later): {event.error}"
        )
        return
    what = "zoo" if event.final else "snapshot"
    sent = event.result.sent_bytes / 2**20
    console.print(
        f"[green]pushed[/] {what}: {event.runs} of {event.planned} runs to {event.result.url} "
        f"({sent:.1f} MiB sent)"
    )


def _landscape(recipe: Recipe, options: ExecOptions, quiet: bool = False, json_log=None):
    """Annotate with a progress bar and a JSON event log; stops on failed batches."""
    from zoo.stages.landscape import plan_landscape_batches

    batches = plan_landscape_batches(recipe)
    summary = _stage("landscape", batches, _pipeline().landscape, recipe, options, quiet, json_log)
    _pipeline().raise_for_failures(summary, recipe, stage="landscape")


def _stage(
    stage: str,
    batches: list,
    fn,
    recipe: Recipe,
    options: ExecOptions,
    quiet: bool = False,
    json_log=None,
):
    """Run one stage (``fn``: pipeline.train, .landscape or .build) with a progress bar (unless
    quiet; failures are summarized at the end either way) and a JSON event log; Ctrl-C or
    SIGTERM stops the workers and exits with 130. Returns what ``fn`` returns."""
    log = StageLog(stage, batches)
    with contextlib.ExitStack() as stack:
        if json_log is not None:
            log.listeners.append(stack.enter_context(contextlib.closing(JsonLog(json_log))))
        if not quiet:
            log.listeners.append(stack.enter_context(StageBar(console, stage, len(batches))))
        else:
            log.listeners.append(ClusterWarnings(console))
        try:
            summary = fn(
                recipe, options, log, batches=batches, on_start=log.start, on_event=log.cluster
            )
        except KeyboardInterrupt:
            log.end(None, interrupted=True)
            stack.close()
            console.print(
                f"[yellow]interrupted[/] after {log.done} new {stage} batches{_stopped(log)}; "
                "finished batches are saved: run the same command again to do the rest"
            )
            raise typer.Exit(code=130) from None
        log.end(summary if isinstance(summary, RunSummary) else None)
    return summary


def _stopped(log: StageLog) -> str:
    """What became of the batches that were running on the workers at the interrupt."""
    if not log.stopped:
        return ""
    left = log.stopped.get("still_running", 0)
    text = f", stopped {log.stopped['stopped']} running on the workers"
    return text + (f" ({left} still finishing their epoch)" if left else "")


@app.command()
def run(
    recipe: RecipeArg,
    set: SetOpt = None,
    scale: ScaleOpt = False,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    device: DeviceOpt = None,
    threads_per_worker: ThreadsOpt = None,
    cluster: ClusterOpt = None,
    cluster_config: ClusterConfigOpt = None,
    quiet: QuietOpt = False,
    json_log: JsonLogOpt = None,
    print_job_script_: JobScriptOpt = False,
    push: Annotated[
        str | None,
        typer.Option(
            "--push",
            metavar="REPO",
            help="Publish while training: push what is finished to this Hub dataset repo "
            "(user/name) every output.push.every_s seconds (default 1800) or "
            "output.push.every_batches train batches, then the finished zoo (tagged). Each "
            "push is one commit: the repo stays loadable, also if the run is killed.",
        ),
    ] = None,
):
    """Train every run of a recipe and build its dataset folder (resumable).

    Runs only what the output folder does not hold yet, so an interrupted run continues where
    it stopped. Example: zoo run pipelines/quickstart.yaml --set seeds=8
    The published size: zoo run pipelines/fashion_cnn_small_width_batch.yaml --scale
    On SLURM: zoo run RECIPE --cluster slurm --cluster-config slurm.yaml --quiet
    The SLURM job script, not submitted: zoo run RECIPE --cluster slurm --print-job-script
    Publish while training: zoo run RECIPE --push alice/zoo --set output.push.every_s=600
    """
    rec = _load(recipe, [*(set or []), *([f"output.push.repo_id={push}"] if push else [])], scale)
    try:
        opts = _options(
            rec,
            workers,
            scheduler,
            device,
            threads_per_worker,
            cluster,
            cluster_config,
            check=not print_job_script_,
        )
        if print_job_script_:
            return print_job_script(opts)
        publisher = _pipeline().publisher_of(rec, _print_push)
        summary = _train(rec, opts, quiet, json_log, publisher)
        _pipeline().raise_for_failures(summary, rec)
        if rec.resolved["landscape"]["metrics"]:
            _landscape(rec, opts, quiet, json_log)
        folder = _build(rec, opts, quiet, json_log)
        if publisher is not None:
            publisher.push(final=True)
    except ZooError as err:
        _fail(err)
    if not is_remote(rec.out_dir):  # the summary table reads the folder with `datasets`
        _print_inspect(Path(store_location(rec.out_dir)))
    console.print(f"\n[green]dataset:[/] {folder}\n  datasets.load_dataset({str(folder)!r})")


@app.command()
def train(
    recipe: RecipeArg,
    set: SetOpt = None,
    scale: ScaleOpt = False,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    device: DeviceOpt = None,
    threads_per_worker: ThreadsOpt = None,
    cluster: ClusterOpt = None,
    cluster_config: ClusterConfigOpt = None,
    quiet: QuietOpt = False,
    json_log: JsonLogOpt = None,
    print_job_script_: JobScriptOpt = False,
):
    """Train the runs of a recipe into the store (shards + manifest); no dataset is built.

    Example: zoo train pipelines/quickstart.yaml --workers 2
    On an existing Dask cluster: zoo train RECIPE --scheduler tcp://host:8786 --json-log log.jsonl
    """
    rec = _load(recipe, set, scale)
    try:
        opts = _options(
            rec,
            workers,
            scheduler,
            device,
            threads_per_worker,
            cluster,
            cluster_config,
            check=not print_job_script_,
        )
        if print_job_script_:
            return print_job_script(opts)
        summary = _train(rec, opts, quiet, json_log)
        _pipeline().raise_for_failures(summary, rec)
    except ZooError as err:
        _fail(err)
    console.print(f"trained {len(summary.done)} batches into {rec.out_dir}")


@app.command()
def build(
    out: OutArg,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    quiet: QuietOpt = False,
    json_log: JsonLogOpt = None,
):
    """Build the dataset folder OUT/dataset from the store (README card, Parquet, layout.json).

    One part per train batch, written as Dask tasks (--workers, --scheduler as for `zoo run`);
    a part whose shards, landscape rows and splits did not change since the last build keeps
    its files. Every shard's sha256 is checked as it is read.
    Example: zoo build out/quickstart --workers 2
    """
    try:
        rec = load_recipe(out / RECIPE_FILE, [f"output.dir={out}"])
        folder = _build(rec, _options(rec, workers, scheduler, None), quiet, json_log)
    except ZooError as err:
        _fail(err)
    console.print(f"built {folder}")


@app.command()
def plan(recipe: RecipeArg, set: SetOpt = None, scale: ScaleOpt = False):
    """Dry run: list the runs, population batches, memory, time and storage; trains nothing.

    Example: zoo plan pipelines/quickstart.yaml --set seeds=10
    The published size: zoo plan pipelines/fashion_cnn_s_hyperparameter_grid.yaml --scale
    """
    from zoo.stages.plan import plan as plan_recipe

    rec = _load(recipe, set, scale)
    try:
        stored = _pipeline().stored_checkpoints(rec)
        p = plan_recipe(rec, stored)
        params, memory = p.num_params(), p.memory_bytes()
        device = resolve_device(rec.execution.get("device") or "auto")
        seconds = p.estimated_seconds(device)
    except ZooError as err:
        _fail(err)
    table = Table(title=f"plan of {rec.name}")
    cols = (
        "batch",
        "runs",
        "arch",
        "params",
        "optimizer",
        "batch size",
        "epochs",
        "checkpoints",
        "memory",
    )
    for col in cols:
        table.add_column(col)
    for b in p.batches:
        r = b.runs[0]
        table.add_row(
            b.batch_id,
            str(len(b.runs)),
            r.model["arch"],
            f"{params[b.batch_id]:,}",
            r.train["optimizer"],
            str(r.train["batch_size"]),
            str(r.train["epochs"]),
            ",".join(map(str, r.checkpoints)),
            f"{memory[b.batch_id] / 2**20:,.0f} MiB",
        )
    Console().print(table)
    workers = max(1, rec.execution.get("workers") or 1)
    if stored:
        todo = sum(len(b.runs) for b in p.batches)
        Console().print(
            f"{rec.out_dir} holds {len(stored)} checkpoints already: {todo} of {len(p.runs)} "
            "runs have checkpoints to train (the batches and estimates below are what is left)"
        )
    Console().print(
        f"{len(p.runs)} runs in {len(p.batches)} population batches, {p.checkpoints} checkpoints; "
        f"estimated storage {p.storage_bytes() / 2**20:.1f} MiB, peak memory per batch "
        f"{max(memory.values(), default=0) / 2**20:,.0f} MiB, training about "
        f"{_duration(seconds / workers)} on {workers} {device} worker(s) "
        f"({p.estimate_accuracy()}) "
        f"-> {rec.out_dir}"
    )


def _duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``3.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


@app.command()
def verify(
    out: OutArg,
    repair: Annotated[
        bool, typer.Option(help="Delete damaged shards and forget them, so `zoo run` redoes them.")
    ] = False,
):
    """Re-hash every shard against its sha256 in the manifest; name missing, truncated or
    altered files, and shards no record names (orphans of a kill, harmless). Warns where one
    config's batches were trained in different environments (versions, device, threads,
    determinism): its weights are then reproducible bit for bit only batch by batch.

    Exits 1 when a recorded shard is damaged. Example: zoo verify out/quickstart --repair
    """
    manifest = Manifest(out)
    problems = manifest.verify()
    damaged = [p for p in problems if p.kind != "orphan"]
    for p in problems:
        color = "yellow" if p.kind == "orphan" else "red"
        print_out(f"[{color}]{p.kind}[/]: {p.path}: {p.detail}")
    _warn_mixed_environments(out)
    if repair and problems:
        for p in problems:
            (out / p.path).unlink(missing_ok=True)
        dropped = manifest.drop(p.path for p in damaged)
        print_out(
            f"repaired: removed {len(problems)} file(s), forgot {dropped} record(s); "
            f"`zoo run` recomputes those batches"
        )
        return
    if not damaged:
        print_out(
            f"[green]ok[/]: {len(manifest.records())} shards match their sha256 in {manifest.path}"
        )
        return
    raise typer.Exit(code=1)


def _warn_mixed_environments(out: Path) -> None:
    """A warning per config whose train batches were computed in several environments (issue
    17): its weights are then reproducible bit for bit only batch by batch."""
    from zoo.stages.build.collect import config_environments
    from zoo.store.provenance import differing_fields

    for config, counts in sorted(config_environments(out).items()):
        if len(counts) < 2:
            continue
        known = [p for p in counts if p is not None]
        differ = differing_fields(known) + (["not recorded"] if None in counts else [])
        print_out(
            f"[yellow]warning[/]: config {config} mixes {len(counts)} environments (they differ "
            f"in: {', '.join(differ)}); bitwise reproducibility holds only within one:"
        )
        for provenance, n in counts.most_common():
            said = provenance.describe() if provenance else "not recorded (an older zoo)"
            print_out(f"  {n} train batch(es): {said}")


def _print_inspect(out: Path, console: Console | None = None) -> None:
    """A table of the built zoo that reads at 80 columns: one line per config and split."""
    import datasets
    from rich import box

    folder = out / DATASET_DIR
    layouts = json.loads((folder / LAYOUT_FILE).read_text())
    rows, labelled, metric = [], [], "test_acc"
    for config in layouts:
        for split, ds in datasets.load_dataset(str(folder), config).items():
            metric = "test_acc" if "test_acc" in ds.features else "test_psnr"  # signal zoos
            rows.append((config, split, len(ds), _inspect_cells(ds, metric)))
            labelled += _coverage_rows(ds)
    phased = any(cells[-1] for *_, cells in rows)
    unhealthy = any(cells[1] for *_, cells in rows)
    table = Table(title=f"zoo {out}", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("config", no_wrap=True)
    for name in ("split", "rows", "runs", metric):
        table.add_column(name, no_wrap=True, justify="left" if name == "split" else "right")
    if unhealthy:
        table.add_column("diverged")
    if phased:
        table.add_column("phases")
    for config, split, n, (runs, diverged, acc, phases) in rows:
        extra = ([diverged] if unhealthy else []) + ([phases] if phased else [])
        table.add_row(config, split, str(n), runs, acc, *extra)
    console = console or Console()
    console.print(table)
    params = ", ".join(f"{c} {layouts[c]['num_params']:,}" for c in layouts)
    notes = [f"parameters: {params}", f"{metric}: mean ± std over runs at the last epoch"]
    if phased:
        notes.append("phases: cells' labels at the last annotated epoch")
    console.print("\n".join(notes))
    _print_coverage(labelled)


def _coverage_rows(ds) -> list[dict]:
    """The columns phase coverage reads, as rows (none without a phase column)."""
    from zoo.stages.build.phasecard import COVERAGE_COLUMNS

    if "phase" not in ds.features:
        return []
    keep = [c for c in ds.column_names if c in COVERAGE_COLUMNS or "__" in c]
    return ds.select_columns(keep).to_list()


def _print_coverage(rows: list[dict]) -> None:
    """Which phases the zoo covers, where each grid axis changes the label, uncertain cells."""
    from zoo.stages.build.phasecard import axis_name, coverage_summary
    from zoo.stages.landscape.coverage import phase_coverage

    cov = phase_coverage(rows)
    if cov is None:
        return
    print_out(coverage_summary(cov))
    if cov.steps:
        steps = Table(title="where the phase label changes along each grid axis")
        for col in ("axis", "step", "lines that change", "changes"):
            steps.add_column(col)
        for s in cov.steps:
            changes = ", ".join(f"{k} x{n}" for k, n in sorted(s.changes.items())) or "-"
            steps.add_row(
                axis_name(s.axis), f"{s.low} -> {s.high}", f"{s.changed}/{s.lines}", changes
            )
        Console().print(steps)
    if cov.uncertain:
        unsure = Table(title=f"{len(cov.uncertain)} uncertain cells (an input near its threshold)")
        for col in (*map(axis_name, cov.axes), "phase", "near"):
            unsure.add_column(col)
        for u in cov.uncertain:
            unsure.add_row(*(str(u.values.get(a)) for a in cov.axes), u.phase, u.near)
        Console().print(unsure)


def _inspect_cells(ds, metric: str = "test_acc") -> list[str]:
    """runs, diverged rows, the test metric (accuracy; PSNR for a signal zoo) at the last epoch,
    phase counts."""
    names = ["run_id", "status", "epoch", metric] + (["phase"] if "phase" in ds.features else [])
    cols = ds.select_columns(names).to_pandas()
    last = cols[cols.epoch == cols.epoch.max()][metric]
    diverged = int((cols.status != "ok").sum())
    acc = f"{last.mean():.3f} ± {last.std():.3f}" if len(last) > 1 else f"{last.mean():.3f}"
    labelled = cols[cols.phase != ""] if "phase" in cols else cols.iloc[:0]
    labelled = labelled[labelled.epoch == labelled.epoch.max()] if len(labelled) else labelled
    phases = ", ".join(f"{k} {v}" for k, v in sorted(Counter(labelled.get("phase", [])).items()))
    return [str(cols.run_id.nunique()), str(diverged) if diverged else "", acc, phases]


@app.command()
def inspect(out: OutArg):
    """Summarize a built zoo: configs, splits, rows, runs, status, accuracy and phases.

    Example: zoo inspect out/quickstart
    """
    if not (out / DATASET_DIR / LAYOUT_FILE).exists():
        _fail(ZooError(f"{out}/dataset is not built; run `zoo build {out}` first"))
    _print_inspect(out)


@app.command()
def landscape(
    out: OutArg,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    device: DeviceOpt = None,
):
    """Compute the recipe's loss-landscape metrics for a trained zoo, then rebuild its dataset.

    Hessian top eigenvalues and trace, weight statistics, CKA, barriers, Bezier mode
    connectivity and phase labels, as chosen in the recipe's `landscape:` section; resumable.
    Example: zoo landscape out/phase_zoo
    """
    try:
        rec = load_recipe(out / RECIPE_FILE, [f"output.dir={out}"])
        if not rec.resolved["landscape"]["metrics"]:
            example = "landscape: {metrics: [hessian, weights, cka, barrier, phase]}"
            raise ZooError(f"{out}/recipe.yaml has no landscape.metrics; add e.g. `{example}`")
        opts = _options(rec, workers, scheduler, device)
        _landscape(rec, opts)
        folder = _build(rec, opts)
    except ZooError as err:
        _fail(err)
    console.print(f"annotated and rebuilt {folder}")


@app.command()
def study(
    out: OutArg,
    kind: Annotated[str, typer.Argument(help="averaging, pruning or transfer.")],
    set: SetOpt = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
    json_log: JsonLogOpt = None,
):
    """Study what the phases mean downstream, then rebuild the dataset with the study as the
    config study_KIND (resumable).

    averaging: each cell's seeds averaged, plain and after weight matching, vs the endpoints.
    pruning: global magnitude pruning at several sparsities, with and without a fine-tune.
    transfer: linear probe and full fine-tune on a second task vs training from scratch.
    Settings: the recipe's `studies:` section (--set studies.transfer.epochs=3 changes it and
    is written to OUT/recipe.yaml). Example: zoo study out/teacher_mlp_phases averaging
    """
    from zoo.stages.study import check_kind, plan_study, study_stage
    from zoo.store.fs import atomic_write_bytes

    try:
        rec = load_recipe(out / RECIPE_FILE, [f"output.dir={out}", *(set or [])])
        check_kind(kind)
        batches = plan_study(rec, kind)
        if set:  # the build publishes the study of the recipe it reads
            atomic_write_bytes(out / RECIPE_FILE, rec.to_yaml().encode())
        opts = _options(rec, workers, scheduler, device)

        def run_kind(recipe, options, log, **kwargs):
            return _pipeline().study(recipe, kind, options, log, **kwargs)

        summary = _stage(study_stage(kind), batches, run_kind, rec, opts, quiet, json_log)
        _pipeline().raise_for_failures(
            summary, rec, stage=study_stage(kind), command=f"zoo study {out} {kind}"
        )
        folder = _build(rec, opts, quiet, json_log)
    except ZooError as err:
        _fail(err)
    console.print(
        f"studied {kind} and rebuilt {folder}\n  datasets.load_dataset("
        f"{str(folder)!r}, {study_stage(kind)!r})"
    )


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

    One heatmap per metric over the rows of every config (an axis such as model.width spans
    configs), the mean over seeds and other axes in each cell. Writes OUT/plots/<metric>.png.
    Example: zoo plot out/phase_zoo --x train.batch_size --y model.width
    """
    import datasets

    from zoo.stages.build.plot import DEFAULT_METRICS, plot_metrics

    folder = out / DATASET_DIR
    if not (folder / LAYOUT_FILE).exists():
        _fail(ZooError(f"{folder} is not built; run `zoo build {out}` first"))
    rows = []
    for config in json.loads((folder / LAYOUT_FILE).read_text()):
        splits = datasets.load_dataset(str(folder), config).values()
        rows += [r for ds in splits for r in ds.remove_columns(["weights"]).to_list()]
    annotated = [r["epoch"] for r in rows if r.get("probe_loss") is not None]
    at = epoch if epoch is not None else max(annotated or [r["epoch"] for r in rows])
    written = plot_metrics(rows, x, y, at, out / PLOTS_DIR, "", metric or DEFAULT_METRICS)
    if not written:
        _fail(ZooError(f"nothing to plot: no values of {metric or 'the metrics'} over {x} x {y}"))
    for path in written:
        print_out(str(path))


register(app)  # the tool commands: evaluate-generator, learn, push, pull


@app.command()
def version():
    """Print the zoo version."""
    print(__version__)
