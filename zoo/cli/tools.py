"""The ``zoo`` tool commands beside the stages: evaluate-generator, learn, push and pull.

:func:`register` adds them to the ``zoo`` app of :mod:`zoo.cli`; each imports its module
(generators, learn, hub) only when it runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from zoo.cli.options import OutArg, _fail, console, print_out
from zoo.errors import ZooError


def register(app: typer.Typer) -> None:
    """Add the tool commands to ``app``, in the order ``zoo --help`` lists them."""
    app.command("evaluate-generator")(evaluate_generator)
    app.command()(learn)
    app.command()(push)
    app.command()(pull)


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
    from zoo.weightspace import generators as g

    try:
        ref = g.load_reference(zoo_folder, config)
        weights = g.read_generated(generated, ref.layout)
        settings = g.EvalSettings(replica_threshold=replica_threshold, candidates=candidates)
        results = g.evaluate(weights, ref, settings)
    except ZooError as err:
        _fail(err)
    rep = g.report(results, settings)
    table = Table(title=f"{len(weights)} generated models vs baselines")
    cols = (
        "source",
        "models",
        "test_acc_mean",
        "test_acc_max",
        "novelty_median",
        "replica_share",
        "agreement_mean",
        "error_iou_mean",
        "diversity",
    )
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


def _learn_table(report) -> Table:
    table = Table(title=f"zoo learn {report.folder} ({report.config}): test-split scores")
    views = any(s.views is not None for s in report.scores)
    cols = ("target", *(["views"] if views else []), "model", "augment", "R²", "Kendall τ", "acc")
    for col in (*cols, "train/test"):
        table.add_column(col, overflow="fold")

    def fmt(value, std=None):
        if value is None:
            return "–"
        return f"{value:.3f}" + (f"±{std:.3f}" if std is not None else "")

    for s in report.scores:
        table.add_row(
            s.target,
            *([str(s.views)] if views else []),
            s.model,
            s.augmentation,
            fmt(s.r2, s.r2_std),
            fmt(s.tau, s.tau_std),
            fmt(s.accuracy, s.accuracy_std),
            f"{s.n_train}/{s.n_test}",
        )
    return table


def learn(
    out: OutArg,
    target: Annotated[
        list[str] | None,
        typer.Option(help="Column to predict (repeatable); 'all' = test_acc, gen_gap_acc, epoch."),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(help="The zoo's config (architecture); needed when it has several."),
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Where to write the scores as JSON (default OUT/learn.json)."),
    ] = None,
    augment: Annotated[
        list[str] | None,
        typer.Option(
            help="Augmentation set for the weight-space nets (repeatable): none, permute, "
            "sign_flip, rescale, noise, dropout, erase, prune, mixup, mixup_aligned, default."
        ),
    ] = None,
    nets: Annotated[bool, typer.Option(help="Train the weight-space nets (MLP, DeepSets).")] = True,
    epochs: Annotated[int, typer.Option(help="Epochs per weight-space net.")] = 60,
    repeats: Annotated[int, typer.Option(help="Seeds per weight-space net (mean ± std).")] = 1,
    seed: Annotated[int, typer.Option(help="Base seed.")] = 0,
    classify: Annotated[
        bool,
        typer.Option(
            help="Predict TARGET (default: label) as a class: accuracy instead of R² and τ, "
            "as in the INR classification benchmarks (signal zoos)."
        ),
    ] = False,
    views: Annotated[
        list[int] | None,
        typer.Option(help="With --classify: training views per signal (repeatable; 0: all)."),
    ] = None,
    group: Annotated[
        str,
        typer.Option(
            help="With --classify: auto (the zoo's splits if every view of a signal is in one, "
            "else by task__index), a column to split by, or '' (the zoo's splits)."
        ),
    ] = "auto",
    epoch: Annotated[
        str, typer.Option(help="With --classify: the epoch whose checkpoints are used, or last.")
    ] = "last",
):
    """Downstream baselines on a built zoo: predict TARGET from weights, split by run.

    Weight statistics -> ridge and boosted trees; the phase label (if the zoo has one); an MLP
    on flat weights and a DeepSets net over neurons, without and with each augmentation.
    Prints R², Kendall τ (accuracy for phase) on the test split and writes JSON.
    Example: zoo learn out/quickstart --target test_acc --target epoch --repeats 3

    --classify: class labels from weights (a signal zoo's image class), with statistics
    baselines and the nets, per number of training views.
    Example: zoo learn out/digits_siren_views --classify --views 1 --views 0 --repeats 3
    """
    if classify:
        options = {"views": views, "group": group, "epoch": epoch, "json_path": json_path}
        run = {"nets": nets, "augment": augment, "epochs": epochs, "repeats": repeats}
        return _learn_classes(out, (target or ["label"])[0], config, seed, options, run)
    from zoo.store.dataset import load_layout
    from zoo.store.fs import atomic_write_bytes
    from zoo.weightspace import learn as baselines

    targets = list(baselines.TARGETS) if target in (["all"],) else (target or ["test_acc"])
    sets = augment or list(baselines.DEFAULT_AUGMENTATIONS)
    kinds = baselines.NETS if nets else ()
    columns = [
        TextColumn("[bold]learn[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeRemainingColumn(),
    ]
    try:
        layout = load_layout(out, config)
        per_target = [a for a in sets if a in baselines.augmentation_sets(layout, "t")]
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("nets", total=len(per_target) * len(kinds) * len(targets), last="")
            report = baselines.learn(
                out,
                targets,
                config=config,
                nets=kinds,
                augmentations=sets,
                epochs=epochs,
                repeats=repeats,
                seed=seed,
                progress=lambda label: bar.update(task, advance=1, last=label),
            )
    except ZooError as err:
        _fail(err)
    Console().print(_learn_table(report))
    for note in report.notes:
        print_out(f"[yellow]note:[/] {note}")
    path = json_path or out / "learn.json"
    atomic_write_bytes(path, json.dumps(report.to_dict(), indent=1).encode())
    print_out(f"scores: {path}")


def _learn_classes(out: Path, target: str, config, seed: int, options: dict, run: dict) -> None:
    """``zoo learn --classify``: :func:`zoo.weightspace.classify.learn_classes`, printed."""
    from zoo.store.fs import atomic_write_bytes
    from zoo.weightspace import classify
    from zoo.weightspace import learn as baselines

    epoch = options["epoch"] if options["epoch"] == "last" else int(options["epoch"])
    views = [v or None for v in options["views"] or [0]]
    try:
        with console.status("[bold]learn --classify[/]") as status:
            report = classify.learn_classes(
                out,
                target,
                config=config,
                nets=baselines.NETS if run["nets"] else (),
                augmentations=run["augment"] or list(baselines.DEFAULT_AUGMENTATIONS),
                epochs=run["epochs"],
                repeats=run["repeats"],
                seed=seed,
                group=options["group"],
                epoch=epoch,
                views=views,
                progress=lambda label: status.update(f"[bold]learn --classify[/] {label}"),
            )
    except ZooError as err:
        _fail(err)
    Console().print(_learn_table(report))
    for note in report.notes:
        print_out(f"[yellow]note:[/] {note}")
    path = options["json_path"] or out / "learn.json"
    atomic_write_bytes(path, json.dumps(report.to_dict(), indent=1).encode())
    print_out(f"scores: {path}")


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
    from zoo.hub.push import push as push_zoo

    with Progress(
        TextColumn("[bold]{task.description}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks = {}

        def progress(stage, done, total):
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        try:
            result = push_zoo(
                out,
                repo_id,
                private=private,
                revision=revision,
                message=message,
                tag=tag,
                dry_run=dry_run,
                progress=progress,
            )
        except ZooError as err:
            _fail(err)
    _print_push(result, dry_run)


def _print_push(result, dry_run: bool) -> None:
    """What a push did (counting only the bytes it sent) or would do, and how to load it."""
    plan = result.plan
    if dry_run:
        print_out(
            f"would upload {len(plan.upload)} file(s) ({result.upload_bytes / 2**20:.1f} MiB), "
            f"would delete {len(plan.delete)}, {len(plan.unchanged)} unchanged"
        )
        if not result.visible:
            print_out(
                f"{result.repo_id} does not exist or is private: a push creates it (to compare "
                "with a private repo's files, set HF_TOKEN to a token that can read it)"
            )
    else:
        held = len(plan.upload) - len(result.sent)
        print_out(
            f"uploaded {len(result.sent)} file(s) ({result.sent_bytes / 2**20:.1f} MiB), "
            f"deleted {len(plan.delete)}, {len(plan.unchanged)} unchanged"
            + (f"; {held} changed file(s) the Hub already held were not sent again" if held else "")
        )
    for path in plan.upload if dry_run else ():
        print_out(f"  + {path}")
    for path in plan.delete if dry_run else ():
        print_out(f"  - {path}")
    if result.tag:
        print_out(f"tagged {result.tag}")
    at = f", revision={result.revision!r}" if result.revision != "main" else ""
    print_out(f"[green]{escape(result.url)}[/]\n  zoo.load({result.repo_id!r}{at})")


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
    from zoo.hub.load import pull as pull_zoo

    try:
        folder = pull_zoo(repo_id, local_dir, revision=revision)
    except ZooError as err:
        _fail(err)
    print_out(f"{folder}\n  zoo.load({str(folder)!r})")
