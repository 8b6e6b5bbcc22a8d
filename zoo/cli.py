"""The ``zoo`` command: parse, call one function of :mod:`zoo.pipeline`, print. No logic here."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .clusters import with_cluster_config
from .dist import ExecOptions, resolve_device
from .errors import ZooError
from .fsio import is_remote, store_location
from .manifest import Manifest
from .progress import JsonLog, StageBar, StageLog
from .recipe import Recipe, load_recipe

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
    typer.Option(help="Append one JSON object per event (start, done, failed, end) to this file."),
]


def _fail(err: ZooError) -> None:
    console.print(f"[bold red]error:[/] {escape(str(err))}")
    raise typer.Exit(code=2)


def _pipeline():
    """zoo.pipeline, imported when a command runs: `zoo --help` need not load torch and
    `datasets`."""
    from . import pipeline

    return pipeline


def build_dataset(recipe: Recipe, out) -> Path:
    from .build import build_dataset

    return build_dataset(recipe, out)


def _load(recipe: Path, overrides: list[str] | None, scale: bool = False) -> Recipe:
    try:
        return load_recipe(recipe, overrides or [], scale=scale)
    except ZooError as err:
        _fail(err)


def _options(
    recipe: Recipe, workers, scheduler, device, threads_per_worker=None, cluster=None,
    cluster_config=None,
) -> ExecOptions:  # fmt: skip
    execution = recipe.execution
    if cluster_config is not None:
        execution = with_cluster_config(execution, cluster_config)
    return ExecOptions.from_recipe(
        execution, workers=workers, scheduler=scheduler, device=device, cluster=cluster,
        threads_per_worker=threads_per_worker, dashboard=True,
    )  # fmt: skip


def _train(recipe: Recipe, options: ExecOptions, quiet: bool = False, json_log=None):
    """Train with a progress bar and a JSON event log (see :func:`_stage`)."""
    return _stage("train", _pipeline().plan(recipe).batches, _pipeline().train, recipe, options,
                  quiet, json_log)  # fmt: skip


def _landscape(recipe: Recipe, options: ExecOptions, quiet: bool = False, json_log=None):
    """Annotate with a progress bar and a JSON event log; stops on failed batches."""
    batches = _pipeline().plan_landscape_batches(recipe)
    summary = _stage("landscape", batches, _pipeline().landscape, recipe, options, quiet,
                     json_log)  # fmt: skip
    _pipeline().raise_for_failures(summary, recipe, stage="landscape")


def _stage(stage: str, batches: list, fn, recipe: Recipe, options: ExecOptions,
           quiet: bool = False, json_log=None):  # fmt: skip
    """Run one stage (``fn``: pipeline.train or pipeline.landscape) with a progress bar (unless
    quiet; failures are summarized at the end either way) and a JSON event log; Ctrl-C or
    SIGTERM stops the workers and exits with 130."""
    log = StageLog(stage, batches)
    with contextlib.ExitStack() as stack:
        if json_log is not None:
            log.listeners.append(stack.enter_context(contextlib.closing(JsonLog(json_log))))
        if not quiet:
            log.listeners.append(stack.enter_context(StageBar(console, stage, len(batches))))
        try:
            summary = fn(recipe, options, log, on_start=log.start)
        except KeyboardInterrupt:
            log.end(None, interrupted=True)
            stack.close()
            console.print(
                f"[yellow]interrupted[/] after {log.done} new {stage} batches; finished batches "
                "are saved: run the same command again to do the rest"
            )
            raise typer.Exit(code=130) from None
        log.end(summary)
    return summary


@app.command()
def run(
    recipe: RecipeArg, set: SetOpt = None, scale: ScaleOpt = False, workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None, device: DeviceOpt = None,
    threads_per_worker: ThreadsOpt = None, cluster: ClusterOpt = None,
    cluster_config: ClusterConfigOpt = None, quiet: QuietOpt = False, json_log: JsonLogOpt = None,
):  # fmt: skip
    """Train every run of a recipe and build its dataset folder (resumable).

    Runs only what the output folder does not hold yet, so an interrupted run continues where
    it stopped. Example: zoo run pipelines/quickstart.yaml --set seeds=8
    The published size: zoo run pipelines/fashion_cnn_small_width_batch.yaml --scale
    On SLURM: zoo run RECIPE --cluster slurm --cluster-config slurm.yaml --quiet
    """
    rec = _load(recipe, set, scale)
    try:
        opts = _options(rec, workers, scheduler, device, threads_per_worker, cluster,
                        cluster_config)  # fmt: skip
        summary = _train(rec, opts, quiet, json_log)
        _pipeline().raise_for_failures(summary, rec)
        if rec.resolved["landscape"]["metrics"]:
            _landscape(rec, opts, quiet, json_log)
        folder = build_dataset(rec, rec.out_dir)
    except ZooError as err:
        _fail(err)
    if not is_remote(rec.out_dir):  # the summary table reads the folder with `datasets`
        _print_inspect(Path(store_location(rec.out_dir)))
    console.print(f"\n[green]dataset:[/] {folder}\n  datasets.load_dataset({str(folder)!r})")


@app.command()
def train(
    recipe: RecipeArg, set: SetOpt = None, scale: ScaleOpt = False, workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None, device: DeviceOpt = None,
    threads_per_worker: ThreadsOpt = None, cluster: ClusterOpt = None,
    cluster_config: ClusterConfigOpt = None, quiet: QuietOpt = False, json_log: JsonLogOpt = None,
):  # fmt: skip
    """Train the runs of a recipe into the store (shards + manifest); no dataset is built.

    Example: zoo train pipelines/quickstart.yaml --workers 2
    On an existing Dask cluster: zoo train RECIPE --scheduler tcp://host:8786 --json-log log.jsonl
    """
    rec = _load(recipe, set, scale)
    try:
        opts = _options(rec, workers, scheduler, device, threads_per_worker, cluster,
                        cluster_config)  # fmt: skip
        summary = _train(rec, opts, quiet, json_log)
        _pipeline().raise_for_failures(summary, rec)
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
def plan(recipe: RecipeArg, set: SetOpt = None, scale: ScaleOpt = False):
    """Dry run: list the runs, population batches, memory, time and storage; trains nothing.

    Example: zoo plan pipelines/quickstart.yaml --set seeds=10
    The published size: zoo plan pipelines/fashion_cnn_s_hyperparameter_grid.yaml --scale
    """
    rec = _load(recipe, set, scale)
    try:
        p = _pipeline().plan(rec)
        params, memory = p.num_params(), p.memory_bytes()
        device = resolve_device(rec.execution.get("device") or "auto")
        seconds = p.estimated_seconds(device)
    except ZooError as err:
        _fail(err)
    table = Table(title=f"plan of {rec.name}")
    cols = ("batch", "runs", "arch", "params", "optimizer", "batch size", "epochs", "checkpoints",
            "memory")  # fmt: skip
    for col in cols:
        table.add_column(col)
    for b in p.batches:
        r = b.runs[0]
        table.add_row(b.batch_id, str(len(b.runs)), r.model["arch"], f"{params[b.batch_id]:,}",
                      r.train["optimizer"],
                      str(r.train["batch_size"]), str(r.train["epochs"]),
                      ",".join(map(str, r.checkpoints)),
                      f"{memory[b.batch_id] / 2**20:,.0f} MiB")  # fmt: skip
    Console().print(table)
    workers = max(1, rec.execution.get("workers") or 1)
    Console().print(
        f"{len(p.runs)} runs in {len(p.batches)} population batches, {p.checkpoints} checkpoints; "
        f"estimated storage {p.storage_bytes() / 2**20:.1f} MiB, peak memory per batch "
        f"{max(memory.values(), default=0) / 2**20:,.0f} MiB, training about "
        f"{_duration(seconds / workers)} on {workers} {device} worker(s) "
        "(rough: within 3x on the shipped recipes) "
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
    rows = []
    for config in layouts:
        for split, ds in datasets.load_dataset(str(folder), config).items():
            rows.append((config, split, len(ds), _inspect_cells(ds, layouts[config])))
    phased = any(cells[-1] for *_, cells in rows)
    table = Table(title=f"zoo {out}")
    columns = ("config", "split", "rows", "runs", "params", "status", "test_acc (last epoch)")
    for col in columns + (("phases (last annotated epoch)",) if phased else ()):
        table.add_column(col)
    for config, split, n, cells in rows:
        table.add_row(config, split, str(n), *(cells if phased else cells[:-1]))
    Console().print(table)


def _inspect_cells(ds, layout: dict) -> list[str]:
    """runs, params, status counts, test accuracy at the last epoch, phase counts."""
    names = ["run_id", "status", "epoch", "test_acc"] + (
        ["phase"] if "phase" in ds.features else []
    )
    cols = ds.select_columns(names).to_pandas()
    last = cols[cols.epoch == cols.epoch.max()].test_acc
    status = ", ".join(f"{k} {v}" for k, v in Counter(cols.status).items())
    acc = f"{last.mean():.3f} ± {last.std():.3f}" if len(last) > 1 else f"{last.mean():.3f}"
    labelled = cols.dropna(subset=["phase"]) if "phase" in cols else cols.iloc[:0]
    labelled = labelled[labelled.epoch == labelled.epoch.max()] if len(labelled) else labelled
    phases = ", ".join(f"{k} {v}" for k, v in sorted(Counter(labelled.get("phase", [])).items()))
    return [str(cols.run_id.nunique()), f"{layout['num_params']:,}", status, acc, phases]


@app.command()
def inspect(out: OutArg):
    """Summarize a built zoo: configs, splits, rows, runs, status, accuracy and phases.

    Example: zoo inspect out/quickstart
    """
    if not (out / "dataset" / "layout.json").exists():
        _fail(ZooError(f"{out}/dataset is not built; run `zoo build {out}` first"))
    _print_inspect(out)


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

    One heatmap per metric over the rows of every config (an axis such as model.width spans
    configs), the mean over seeds and other axes in each cell. Writes OUT/plots/<metric>.png.
    Example: zoo plot out/phase_zoo --x train.batch_size --y model.width
    """
    import datasets

    from .plot import DEFAULT_METRICS, plot_metrics

    folder = out / "dataset"
    if not (folder / "layout.json").exists():
        _fail(ZooError(f"{folder} is not built; run `zoo build {out}` first"))
    rows = []
    for config in json.loads((folder / "layout.json").read_text()):
        splits = datasets.load_dataset(str(folder), config).values()
        rows += [r for ds in splits for r in ds.remove_columns(["weights"]).to_list()]
    annotated = [r["epoch"] for r in rows if r.get("probe_loss") is not None]
    at = epoch if epoch is not None else max(annotated or [r["epoch"] for r in rows])
    written = plot_metrics(rows, x, y, at, out / "plots", "", metric or DEFAULT_METRICS)
    if not written:
        _fail(ZooError(f"nothing to plot: no values of {metric or 'the metrics'} over {x} x {y}"))
    for path in written:
        print_out(str(path))


@app.command("evaluate-generator")
def evaluate_generator(
    zoo_folder: Annotated[Path, typer.Argument(help="A built zoo dataset folder (OUT/dataset).")],
    generated: Annotated[
        Path, typer.Argument(help="Generated weights: Parquet (a `weights` column) or safetensors.")
    ],
    config: Annotated[str | None, typer.Option(help="Architecture config of the zoo.")] = None,
    replica_threshold: Annotated[
        float, typer.Option(help="Novelty at or below this is a near-replica.")
    ] = 0.05,
    candidates: Annotated[int, typer.Option(help="Checkpoints aligned per model.")] = 5,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    plot_out: Annotated[Path | None, typer.Option("--plot", help="Write the scatter PNG.")] = None,
):
    """Score generated weights against the zoo and three baselines (noise, average, gaussian).

    Reports test accuracy, novelty (distance to the nearest training checkpoint after
    alignment), prediction agreement and error-set IoU with that checkpoint, the share of
    near-replicas, and diversity. Example:
    zoo evaluate-generator out/zoo/dataset samples.parquet --json report.json --plot novelty.png
    """
    from . import generators as g

    try:
        ref = g.load_reference(zoo_folder, config)
        weights = g.read_generated(generated, ref.layout)
        settings = g.EvalSettings(replica_threshold=replica_threshold, candidates=candidates)
        results = g.evaluate(weights, ref, settings)
    except ZooError as err:
        _fail(err)
    rep = g.report(results, settings)
    table = Table(title=f"{len(weights)} generated models vs baselines")
    cols = ("source", "models", "test_acc_mean", "test_acc_max", "novelty_median",
            "replica_share", "agreement_mean", "error_iou_mean", "diversity")  # fmt: skip
    for col in cols:
        table.add_column(col)
    for row in rep["summary"]:
        cells = [f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols]
        table.add_row(*cells)
    Console().print(table)
    if json_out:
        json_out.write_text(json.dumps(rep, indent=1))
        print_out(f"report: {json_out}")
    if plot_out:
        print_out(f"plot: {g.plot_scatter(results, plot_out)}")


@app.command()
def version():
    """Print the zoo version."""
    print(__version__)


def _learn_table(report) -> Table:
    table = Table(title=f"zoo learn {report.folder} ({report.config}): test-split scores")
    for col in ("target", "model", "augment", "R²", "Kendall τ", "acc", "train/test"):
        table.add_column(col, overflow="fold")

    def fmt(value, std=None):
        if value is None:
            return "–"
        return f"{value:.3f}" + (f"±{std:.3f}" if std is not None else "")

    for s in report.scores:
        table.add_row(s.target, s.model, s.augmentation, fmt(s.r2, s.r2_std),
                      fmt(s.tau, s.tau_std), fmt(s.accuracy),
                      f"{s.n_train}/{s.n_test}")  # fmt: skip
    return table


@app.command()
def learn(
    out: OutArg,
    target: Annotated[list[str] | None, typer.Option(
        help="Column to predict (repeatable); 'all' = test_acc, gen_gap_acc, epoch.")] = None,
    config: Annotated[str | None, typer.Option(
        help="The zoo's config (architecture); needed when it has several.")] = None,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Where to write the scores as JSON (default OUT/learn.json).")] = None,
    augment: Annotated[list[str] | None, typer.Option(
        help="Augmentation set for the weight-space nets (repeatable): none, permute, "
             "sign_flip, rescale, noise, dropout, erase, prune, mixup, mixup_aligned, default.")
    ] = None,
    nets: Annotated[bool, typer.Option(help="Train the weight-space nets (MLP, DeepSets).")] = True,
    epochs: Annotated[int, typer.Option(help="Epochs per weight-space net.")] = 60,
    repeats: Annotated[int, typer.Option(help="Seeds per weight-space net (mean ± std).")] = 1,
    seed: Annotated[int, typer.Option(help="Base seed.")] = 0,
):  # fmt: skip
    """Downstream baselines on a built zoo: predict TARGET from weights, split by run.

    Weight statistics -> ridge and boosted trees; the phase label (if the zoo has one); an MLP
    on flat weights and a DeepSets net over neurons, without and with each augmentation.
    Prints R², Kendall τ (accuracy for phase) on the test split and writes JSON.
    Example: zoo learn out/quickstart --target test_acc --target epoch --repeats 3
    """
    from . import learn as baselines
    from .fsio import atomic_write_bytes

    targets = list(baselines.TARGETS) if target in (["all"],) else (target or ["test_acc"])
    sets = augment or list(baselines.DEFAULT_AUGMENTATIONS)
    kinds = baselines.NETS if nets else ()
    columns = [TextColumn("[bold]learn[/]"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[last]}"), TimeRemainingColumn()]  # fmt: skip
    try:
        layout = baselines.load_layout(baselines.dataset_folder(out), config)
        per_target = [a for a in sets if a in baselines.augmentation_sets(layout, "t")]
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("nets", total=len(per_target) * len(kinds) * len(targets), last="")
            report = baselines.learn(
                out, targets, config=config, nets=kinds, augmentations=sets, epochs=epochs,
                repeats=repeats, seed=seed,
                progress=lambda label: bar.update(task, advance=1, last=label),
            )  # fmt: skip
    except ZooError as err:
        _fail(err)
    Console().print(_learn_table(report))
    for note in report.notes:
        print_out(f"[yellow]note:[/] {note}")
    path = json_path or out / "learn.json"
    atomic_write_bytes(path, json.dumps(report.to_dict(), indent=1).encode())
    print_out(f"scores: {path}")


@app.command()
def push(
    out: OutArg,
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub dataset repo: user/name.")],
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    revision: Annotated[
        str | None, typer.Option(help="Branch to push to (created if missing); default main.")
    ] = None,
    message: Annotated[str | None, typer.Option(help="Commit message.")] = None,
    tag: Annotated[
        str | None, typer.Option(help="Tag of this version; default v<zoo version>-<n>.")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would change; touch nothing.")] = False,
):
    """Publish a built zoo as a Hugging Face dataset repo; upload only what changed.

    Creates the repo if needed, uploads new or changed files (a grown zoo sends its new shards,
    card and layout), deletes data files the build no longer has, and tags the version. The
    token comes from HF_TOKEN or `hf auth login` and is never printed. Interrupted? Run the same
    command again. Example: zoo push out/quickstart --repo-id alice/quickstart-zoo
    """
    from .hub import push as push_zoo

    with Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as bar:  # fmt: skip
        tasks = {}

        def progress(stage, done, total):
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        try:
            result = push_zoo(out, repo_id, private=private, revision=revision, message=message,
                              tag=tag, dry_run=dry_run, progress=progress)  # fmt: skip
        except ZooError as err:
            _fail(err)
    plan = result.plan
    verb = "would upload" if dry_run else "uploaded"
    print_out(f"{verb} {len(plan.upload)} file(s) ({result.upload_bytes / 2**20:.1f} MiB), "
              f"{'would delete' if dry_run else 'deleted'} {len(plan.delete)}, "
              f"{len(plan.unchanged)} unchanged")  # fmt: skip
    for path in plan.upload if dry_run else ():
        print_out(f"  + {path}")
    for path in plan.delete if dry_run else ():
        print_out(f"  - {path}")
    if result.tag:
        print_out(f"tagged {result.tag}")
    print_out(f"[green]{escape(result.url)}[/]\n  zoo.load({repo_id!r})")


@app.command()
def pull(
    repo_id: Annotated[str, typer.Argument(help="Hub dataset repo: user/name.")],
    local_dir: Annotated[
        Path | None, typer.Option(help="Where to put it; default ./<name>.")
    ] = None,
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit.")] = None,
):
    """Download a zoo from the Hub for offline use (resumable).

    Example: zoo pull alice/quickstart-zoo --local-dir zoos/quickstart
    """
    from .hub import pull as pull_zoo

    try:
        folder = pull_zoo(repo_id, local_dir, revision=revision)
    except ZooError as err:
        _fail(err)
    print_out(f"{folder}\n  zoo.load({str(folder)!r})")
