"""Publishing the studies: each ``zoo study`` kind the store holds becomes its own config
``study_<kind>`` of the dataset (one split, ``train``: every row of the zoo), with the cell's
hyperparameter columns and phase joined in, and a figure per study with the phases side by
side (``images/studies/``). The card's Studies section summarizes each per phase
(:mod:`zoo.stages.study.effects`).

Only the shards of the recipe's current study plan are read (as for the landscape): a study
run with other settings stays in the store but is not published.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow as pa

from zoo.errors import StudyError
from zoo.naming import IMAGES_DIR
from zoo.recipe import SECTIONS, Recipe, expand_recipe
from zoo.stages.build.parquet import write_parquet_files
from zoo.stages.landscape.phases import PHASES
from zoo.stages.study import KINDS, plan_study, study_stage
from zoo.stages.study.effects import PhaseEffect, study_effects
from zoo.store.manifest import Manifest
from zoo.store.shards import read_table_shard

STUDY_IMAGES = f"{IMAGES_DIR}/studies"
SPLIT = "train"


@dataclass(frozen=True)
class StudySummary:
    """What the build wrote for one study: its config, files, effects per phase and figure."""

    kind: str
    name: str
    table: pa.Table
    files: dict[str, list[str]]
    counts: dict[str, int]
    effects: tuple[PhaseEffect, ...]
    image: str | None  # relative to the dataset folder


def study_rows(recipe: Recipe, out_dir: Path, kind: str) -> list[dict]:
    """The rows of study ``kind`` under the recipe's current study settings ([] if none)."""
    try:
        wanted = {b.batch_id for b in plan_study(recipe, kind)}
    except StudyError:  # e.g. transfer without a second task: nothing can have run
        return []
    rows = []
    for rec in Manifest(out_dir).records(study_stage(kind)):
        if rec.batch_id in wanted and rec.ext == "parquet":
            rows += read_table_shard(out_dir, rec.path).to_pylist()
    return rows


def publish_studies(
    recipe: Recipe, out_dir: Path, folder: Path, labels: dict[tuple[str, int], dict]
) -> list[StudySummary]:
    """Write every study the store holds as a config of the dataset folder.

    Args:
        recipe: the zoo's recipe.
        out_dir: the store.
        folder: the dataset folder being built.
        labels: (cell_id, epoch) -> ``{"phase": …, "phase_uncertain": …}`` of the build.
    """
    cells = {}
    for run in expand_recipe(recipe):
        cells.setdefault(run.cell_id, run)
    out = []
    for kind in KINDS:
        rows = study_rows(recipe, out_dir, kind)
        if not rows:
            continue
        for row in rows:
            _join(row, cells.get(row["cell_id"]), labels)
        table = typed_table(rows)
        name = study_stage(kind)
        files = {SPLIT: write_parquet_files(folder, name, SPLIT, table)}
        effects = tuple(study_effects(kind, rows))
        image = plot_study(kind, rows, folder / STUDY_IMAGES / f"{name}.png")
        rel = f"{STUDY_IMAGES}/{name}.png" if image else None
        out.append(StudySummary(kind, name, table, files, {SPLIT: len(rows)}, effects, rel))
    return out


def _join(row: dict, run, labels: dict) -> None:
    """Add the cell's hyperparameter columns and its phase at the row's epoch."""
    if run is not None:
        for section in SECTIONS:
            for key, value in getattr(run, section).items():
                row.setdefault(f"{section}__{key}", value)
    label = labels.get((row["cell_id"], row["epoch"]), {})
    unsure = label.get("phase_uncertain")
    row["phase"] = label.get("phase") or ""  # "" and null: what every datasets format reads
    row["phase_uncertain"] = None if unsure is None else int(unsure)


def typed_table(rows: list[dict]) -> pa.Table:
    """Rows as an Arrow table that ``datasets`` reads: columns null in every row typed as
    strings, the Features under the ``huggingface`` schema key."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])
    for i, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.string()))
    features = datasets.Features.from_arrow_schema(table.schema)
    meta = {b"huggingface": json.dumps({"info": {"features": features.to_dict()}}).encode()}
    return table.replace_schema_metadata(meta)


def study_info(study: StudySummary, folder: Path | None) -> datasets.DatasetInfo:
    """The card header's ``dataset_info`` of a study config."""
    n = study.counts[SPLIT]
    splits = datasets.SplitDict()
    splits.add(datasets.SplitInfo(name=SPLIT, num_bytes=study.table.nbytes, num_examples=n))
    features = datasets.Features.from_arrow_schema(study.table.schema)
    info = datasets.DatasetInfo(features=features, config_name=study.name, splits=splits)
    info.dataset_size = study.table.nbytes
    if folder is not None:
        paths = [Path(folder) / p for p in study.files[SPLIT]]
        info.download_size = sum(p.stat().st_size for p in paths if p.exists())
    return info


def study_config(study: StudySummary) -> dict:
    """The card header's ``configs`` entry of a study config."""
    return {
        "config_name": study.name,
        "data_files": [{"split": SPLIT, "path": f"data/{study.name}/{SPLIT}-*.parquet"}],
    }


def labels_of(columns: dict[str, list]) -> dict[tuple[str, int], dict]:
    """(cell_id, epoch) -> phase and uncertainty, from a config's collected columns."""
    out = {}
    if "phase" not in columns:
        return out
    uncertain = columns.get("phase_uncertain") or [None] * len(columns["phase"])
    for cell, epoch, phase, unsure in zip(
        columns["cell_id"], columns["epoch"], columns["phase"], uncertain, strict=True
    ):
        if phase:  # "" where the checkpoint was not annotated
            out[(cell, epoch)] = {"phase": phase, "phase_uncertain": unsure}
    return out


# --- the figure: the phases side by side --------------------------------------------------------

BARS = {
    "averaging": [
        ("endpoint_acc", "endpoints"),
        ("avg_acc", "plain average"),
        ("avg_aligned_acc", "aligned average"),
    ],
    "transfer": [
        ("scratch_probe_acc", "probe, random features"),
        ("probe_acc", "probe"),
        ("scratch_full_acc", "from scratch"),
        ("full_acc", "full fine-tune"),
    ],
}


def _phase_means(rows: list[dict], column: str, where=None) -> dict[str, tuple[float, float]]:
    """Per phase: mean and std across cells of ``column`` (cell means first)."""
    epoch = max((r["epoch"] for r in rows if r.get("phase") in PHASES), default=None)
    per_cell: dict[str, list] = {}
    phase = {}
    for r in rows:
        v = r.get(column)
        if r["epoch"] != epoch or r.get("phase") not in PHASES or (where and not where(r)):
            continue
        if isinstance(v, int | float) and math.isfinite(v):
            per_cell.setdefault(r["cell_id"], []).append(v)
            phase[r["cell_id"]] = r["phase"]
    grouped: dict[str, list] = {}
    for cell, values in per_cell.items():
        grouped.setdefault(phase[cell], []).append(statistics.fmean(values))
    return {
        p: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
        for p in PHASES
        if (v := grouped.get(p))
    }


def plot_study(kind: str, rows: list[dict], path: Path) -> Path | None:
    """One PNG per study: accuracies per phase (bars; pruning: accuracy vs sparsity, one line
    per phase). None when no row has a phase."""
    if not any(r.get("phase") in PHASES for r in rows):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if kind == "pruning":
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110, sharey=True)
        _sparsity_lines(axes, rows)
    else:
        fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
        _bars(ax, rows, BARS[kind])
    fig.suptitle(f"{kind} study: test accuracy per phase (mean ± std across cells)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _bars(ax, rows: list[dict], bars: list[tuple[str, str]]) -> None:
    import numpy as np

    series = [(label, _phase_means(rows, column)) for column, label in bars]
    phases = [p for p in PHASES if any(p in s for _, s in series)]
    width = 0.8 / len(series)
    for k, (label, means) in enumerate(series):
        xs = np.arange(len(phases)) + (k - (len(series) - 1) / 2) * width
        ys = [means.get(p, (math.nan, 0))[0] for p in phases]
        es = [means.get(p, (0, 0))[1] for p in phases]
        ax.bar(xs, ys, width, yerr=es, label=label, capsize=2)
    ax.set_xticks(range(len(phases)), phases)
    ax.set_xlabel("phase")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7)


def _sparsity_lines(axes, rows: list[dict]) -> None:
    sparsities = sorted({r["sparsity"] for r in rows})
    for ax, column, title in (
        (axes[0], "pruned_acc", "pruned"),
        (axes[1], "finetuned_acc", "pruned + fine-tuned"),
    ):
        for phase in PHASES:
            points = [
                (s, _phase_means(rows, column, lambda r, s=s: r["sparsity"] == s).get(phase))
                for s in sparsities
            ]
            points = [(s, m) for s, m in points if m is not None]
            if points:
                ax.errorbar(
                    [s for s, _ in points],
                    [m[0] for _, m in points],
                    yerr=[m[1] for _, m in points],
                    label=phase,
                    marker="o",
                    capsize=2,
                )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("sparsity")
    axes[0].set_ylabel("test accuracy")
    axes[1].legend(fontsize=7)
