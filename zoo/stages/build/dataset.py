"""The build stage: the store's shards -> a Hugging Face dataset folder that ``load_dataset`` reads.

```
<out>/dataset/
  README.md                    card: YAML (configs, features, license, tags) + prose
  data/<config>/<split>-NNNNN-of-NNNNN.parquet
  layout.json                  config -> layout (names, shapes, offsets, permutation spec)
  recipe.yaml                  the recipe that produced the zoo
  images/                      phase diagrams shown in the card
```
One row per checkpoint; one config per layout (architecture + shapes); splits by a hash of
``run_id``, so every checkpoint of a run is in the same split. The steps: collect the rows
(:mod:`~zoo.stages.build.collect`), write each config and split as Parquet
(:mod:`~zoo.stages.build.parquet`), draw the figures (:mod:`~zoo.stages.build.plot`), write
``layout.json`` and ``recipe.yaml``, and last the card (:mod:`~zoo.stages.build.card`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from zoo.errors import BuildError
from zoo.naming import (
    CARD_FILE,
    DATA_DIR,
    DATASET_DIR,
    IMAGES_DIR,
    LAYOUT_FILE,
    RECIPE_FILE,
    split_of,
)
from zoo.recipe import Recipe, expand_recipe
from zoo.stages.build.card import ConfigSummary, render_card
from zoo.stages.build.collect import ConfigRows, attach_landscape, collect
from zoo.stages.build.parquet import to_table, with_metadata, write_parquet_files
from zoo.stages.build.plot import plot_metrics
from zoo.stages.build.signals import card_extras, draw_signal_figures
from zoo.stages.landscape import COLUMN_DOCS as LANDSCAPE_DOCS
from zoo.store.fs import atomic_write_bytes


def build_dataset(recipe: Recipe, out_dir: str | Path) -> Path:
    """Build ``<out>/dataset`` from the store. Idempotent: the folder is rewritten each time.

    Returns:
        the dataset folder; ``datasets.load_dataset(str(folder), config)`` reads it offline.
    """
    out_dir = Path(out_dir)
    folder = out_dir / DATASET_DIR
    configs = collect(out_dir, {r.run_id for r in expand_recipe(recipe)})
    if not configs:
        raise BuildError(f"{out_dir}: none of the recipe's runs is trained yet; run `zoo train`")
    shutil.rmtree(folder / DATA_DIR, ignore_errors=True)
    shutil.rmtree(folder / IMAGES_DIR, ignore_errors=True)
    attach_landscape(configs, recipe, out_dir)
    draw_figures(configs, recipe, folder)
    draw_signal_figures(recipe, configs, folder)
    fractions = recipe.resolved["output"]["splits"]
    summary = []
    for name, rows in sorted(configs.items()):
        splits = [split_of(r, fractions) for r in rows.columns["run_id"]]
        order = np.lexsort((rows.columns["epoch"], rows.columns["run_id"]))
        table = with_metadata(to_table(rows, order, splits), rows.layout)
        files, counts = {}, {}
        for split in sorted(set(splits)):
            part = table.filter(pa.compute.equal(table["split"], split)).drop_columns(["split"])
            files[split] = write_parquet_files(folder, name, split, part)
            counts[split] = part.num_rows
        table = table.drop_columns(["split"])
        summary.append(ConfigSummary(name, rows.layout, table, files, counts))
    layouts = {s.name: s.layout.to_dict() for s in summary}
    atomic_write_bytes(folder / LAYOUT_FILE, json.dumps(layouts, indent=1).encode())
    atomic_write_bytes(folder / RECIPE_FILE, recipe.to_yaml().encode())
    signals, signal_docs = card_extras(recipe, configs)
    docs = {**LANDSCAPE_DOCS, **signal_docs}
    card = render_card(recipe, summary, folder, column_docs=docs, signals=signals)
    atomic_write_bytes(folder / CARD_FILE, card.encode())
    return folder


def draw_figures(configs: dict[str, ConfigRows], recipe: Recipe, folder: Path) -> list[Path]:
    """Phase diagrams over the first two grid axes at the last annotated epoch, one per metric
    over the rows of every config (an axis such as ``model.width`` spans configs)."""
    grid = list(recipe.resolved["grid"])
    if not recipe.resolved["landscape"]["metrics"] or not grid:
        return []
    x, y = (grid[0], grid[1]) if len(grid) > 1 else (grid[0], "seed")
    rows = [
        {k: v[i] for k, v in part.columns.items()}
        for part in configs.values()
        for i in range(len(part.weights))
    ]
    epochs = [r["epoch"] for r in rows if r.get("probe_loss") is not None]
    return plot_metrics(rows, x, y, max(epochs), folder / IMAGES_DIR, "") if epochs else []
