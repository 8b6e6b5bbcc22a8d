"""The build stage: the store's shards -> a Hugging Face dataset folder that ``load_dataset`` reads.

```
<out>/dataset/
  README.md                                card: YAML (configs, features, license, tags) + prose
  data/<config>/<split>-<batch>-NNNNN.parquet  one file (or more) per train batch
  layout.json                              config -> layout (names, shapes, offsets, perm. spec)
  recipe.yaml                              the recipe that produced the zoo (no machine paths)
  images/                                  phase diagrams shown in the card
```
1. Plan (:mod:`~zoo.stages.build.collect`): configs, their columns, and one part per train
   batch; a part whose files the manifest records intact (same inputs, same id) is kept.
2. Write the other parts (:func:`~zoo.stages.build.parquet.build_part`), in this process or as
   Dask tasks (:func:`zoo.dist.pipeline.build`); each part's files are recorded in the manifest
   (stage ``build``), so ``zoo verify`` checks them too. Memory is one part at a time, per worker.
3. Delete files no part writes any more; then, from the files on disk, ``layout.json``,
   ``recipe.yaml``, the figures and last the card (:mod:`~zoo.stages.build.card`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from zoo.naming import (
    CARD_FILE,
    DATA_DIR,
    DATASET_DIR,
    IMAGES_DIR,
    LAYOUT_FILE,
    METADATA_CONFIG,
    METADATA_SPLIT,
    RECIPE_FILE,
)
from zoo.recipe import Recipe
from zoo.stages.build.card import ConfigSummary, render_card, summarize
from zoo.stages.build.collect import BuildPlan, plan_build
from zoo.stages.build.parquet import (
    STAGE,
    BuildPart,
    build_part,
    encode_files,
    table_metadata,
)
from zoo.stages.build.plot import plot_metrics
from zoo.stages.build.signals import METRICS_TEXT, card_extras, draw_signal_figures
from zoo.stages.build.studies import labels_of, publish_studies
from zoo.stages.landscape import COLUMN_DOCS as LANDSCAPE_DOCS
from zoo.store.fs import atomic_write_bytes, file_size, list_files, open_file, remove
from zoo.store.manifest import Manifest, ShardRecord
from zoo.store.shards import write_file

RunParts = Callable[[list[BuildPart], Path], None]


def build_dataset(recipe: Recipe, out_dir: str | Path, run_parts: RunParts | None = None) -> Path:
    """Build ``<out>/dataset`` from the store; only parts whose inputs changed are rewritten.

    Args:
        recipe: the zoo's recipe.
        out_dir: its output folder (a path or an fsspec URL).
        run_parts: writes the parts that need writing and records their receipts in the
            manifest (:func:`zoo.dist.pipeline.build` runs them as Dask tasks); ``None``: one
            after the other in this process.
    Returns:
        the dataset folder; ``datasets.load_dataset(str(folder), config)`` reads it offline.
    """
    plan = plan_build(recipe, out_dir)
    (run_parts or run_parts_here)(parts_to_write(plan, out_dir), Path(out_dir))
    return finish_build(recipe, out_dir, plan)


def parts_to_write(plan: BuildPlan, out_dir: str | Path) -> list[BuildPart]:
    """The parts whose files the manifest does not record intact (new or changed inputs)."""
    manifest = Manifest(out_dir)
    return [p for p in plan.parts if not _intact(Path(out_dir), manifest, p)]


def finish_build(recipe: Recipe, out_dir: str | Path, plan: BuildPlan) -> Path:
    """After the parts: delete stale files, then write ``layout.json``, ``recipe.yaml``, the
    figures and last the card, from the files on disk."""
    out_dir = Path(out_dir)
    folder = out_dir / DATASET_DIR
    manifest = Manifest(out_dir)
    files = _forget_stale(out_dir, manifest, plan)
    configs = [summarize(plan.configs[name], files[name], folder) for name in sorted(files)]
    metadata = write_metadata(out_dir, manifest, configs)
    layouts = {c.name: c.layout.to_dict() for c in configs}
    atomic_write_bytes(folder / LAYOUT_FILE, json.dumps(layouts, indent=1).encode())
    atomic_write_bytes(folder / RECIPE_FILE, published_recipe(recipe).encode())
    remove(folder / IMAGES_DIR)
    draw_figures(configs, recipe, folder)
    draw_signal_figures(recipe, configs, folder, plan.runs)
    signals, signal_docs = card_extras(recipe, configs, plan.runs)
    labels = {k: v for c in configs for k, v in labels_of(_label_columns(c.table)).items()}
    studies = publish_studies(recipe, out_dir, folder, labels)  # configs study_<kind>
    card = render_card(
        recipe,
        configs,
        folder,
        column_docs={**LANDSCAPE_DOCS, **signal_docs},
        metadata=metadata,
        studies=studies,
        signals=signals,
        metrics=METRICS_TEXT if signals else None,
    )
    atomic_write_bytes(folder / CARD_FILE, card.encode())
    return folder


def _label_columns(table) -> dict[str, list]:
    """The columns a cell's phase label is read from (:func:`labels_of`)."""
    names = [n for n in ("cell_id", "epoch", "phase", "phase_uncertain") if n in table.column_names]
    return table.select(names).to_pydict()


def write_metadata(
    out_dir: Path, manifest: Manifest, configs: list[ConfigSummary]
) -> ConfigSummary:
    """The ``metadata`` config: every column but ``weights`` of every row of every config, with
    ``config`` and ``split`` (rewritten by every build; recorded in the manifest like the data
    files)."""
    tables = [
        c.table.append_column("config", pa.array([c.name] * c.table.num_rows)) for c in configs
    ]
    table = pa.concat_tables(tables, promote_options="default")
    table = table.replace_schema_metadata(table_metadata(table))
    files, start = [], 0
    for rel, data in encode_files(METADATA_CONFIG, METADATA_SPLIT, "all", table):
        rows = pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows
        part = table.slice(start, rows)
        ids = part["run_id"].to_pylist(), part["checkpoint_id"].to_pylist()
        record = write_file(out_dir, f"{DATASET_DIR}/{rel}", STAGE, METADATA_CONFIG, *ids, data)
        manifest.append([record])
        files.append(rel)
        start += rows
    counts, num_bytes = {METADATA_SPLIT: table.num_rows}, {METADATA_SPLIT: table.nbytes}
    files_by_split = {METADATA_SPLIT: files}
    return ConfigSummary(
        METADATA_CONFIG, None, table.schema, table, files_by_split, counts, num_bytes
    )


def run_parts_here(parts: list[BuildPart], out_dir: Path) -> None:
    """Write the parts one after the other in this process, recording each part's files."""
    manifest = Manifest(out_dir)
    for part in parts:
        records = build_part(part.to_dict(), str(out_dir), {})
        manifest.append(ShardRecord.from_dict(r) for r in records)


def _intact(out_dir: Path, manifest: Manifest, part: BuildPart) -> bool:
    """Whether the manifest records files holding every checkpoint of the part, each there at
    its recorded size (a file ``zoo verify --repair`` removed makes its part be written again)."""
    records = [r for r in manifest.records(STAGE) if r.batch_id == part.part_id]
    held = {c for r in records for c in r.checkpoint_ids}
    if held != set(part.checkpoints):
        return False
    return all(file_size(out_dir / r.path) == r.bytes for r in records)


def _forget_stale(out_dir: Path, manifest: Manifest, plan: BuildPlan) -> dict[str, dict]:
    """Delete data files no current part wrote and forget their records; returns config ->
    split -> the current files (paths relative to the dataset folder)."""
    current = {p.part_id: p.config for p in plan.parts}
    records = manifest.records(STAGE)
    keep: dict[str, dict[str, list[str]]] = {}
    for rec in records:
        if rec.batch_id in current:
            rel = rec.path.removeprefix(f"{DATASET_DIR}/")
            split = rel.split("/")[-1].split("-")[0]
            keep.setdefault(current[rec.batch_id], {}).setdefault(split, []).append(rel)
    stale = [r.path for r in records if r.batch_id not in current]
    if stale:
        manifest.drop(stale)
    written = {f for splits in keep.values() for paths in splits.values() for f in paths}
    for rel in list_files(out_dir / DATASET_DIR / DATA_DIR):
        if f"{DATA_DIR}/{rel}" not in written:
            remove(out_dir / DATASET_DIR / DATA_DIR / rel)
    return {c: {s: sorted(p) for s, p in sorted(splits.items())} for c, splits in keep.items()}


def published_recipe(recipe: Recipe) -> str:
    """The recipe as published beside the data: as written, without the output folder (a path
    of the machine that built it; the same zoo built elsewhere publishes the same file) and
    without where it is pushed (``output.push``: who runs it again pushes elsewhere)."""
    data = dict(recipe.data)
    output = {k: v for k, v in (data.get("output") or {}).items() if k not in ("dir", "push")}
    data = {k: v for k, v in data.items() if k != "output"} | ({"output": output} if output else {})
    return yaml.safe_dump(data, sort_keys=False)


def draw_figures(configs: list[ConfigSummary], recipe: Recipe, folder: Path) -> list[Path]:
    """Phase diagrams over the first two grid axes at the last annotated epoch, one per metric
    over the rows of every config (an axis such as ``model.width`` spans configs)."""
    grid = list(recipe.resolved["grid"])
    if not recipe.resolved["landscape"]["metrics"] or not grid:
        return []
    x, y = (grid[0], grid[1]) if len(grid) > 1 else (grid[0], "seed")
    rows = []
    for config in configs:
        for paths in config.files.values():
            for rel in paths:
                with open_file(folder / rel) as f:
                    table = pq.read_table(
                        f, columns=[n for n in config.schema.names if n != "weights"]
                    )
                rows += table.to_pylist()
    epochs = [r["epoch"] for r in rows if _annotated(r)]
    return plot_metrics(rows, x, y, max(epochs), folder / IMAGES_DIR, "") if epochs else []


def _annotated(row: dict) -> bool:
    value = row.get("probe_loss")
    return value is not None and value == value  # NaN where not annotated
