"""The dataset card: YAML header (configs, features, license, tags) and prose made from the zoo."""

from __future__ import annotations

import string
from pathlib import Path

import datasets
import yaml

from . import SCHEMA_VERSION, __version__

TEMPLATE = Path(__file__).parent / "cards" / "dataset_card.md"

COLUMN_DOCS = {
    "checkpoint_id": "`<run_id>-e<epoch>`: one row per checkpoint",
    "run_id": "16 hex of sha256 over the run's resolved config (seed included)",
    "cell_id": "hash of the config without the seed: runs of one grid cell share it",
    "epoch": "training epochs done when the checkpoint was taken (0 = initialization)",
    "step": "optimizer steps done when the checkpoint was taken",
    "status": "`ok`, or `diverged` once the model's loss turned NaN/inf (it is then frozen)",
    "diverged_epoch": "epoch in which the loss first turned NaN/inf (null if never)",
    "train_loss": "mean cross-entropy on the whole training set",
    "train_acc": "accuracy on the whole training set",
    "test_loss": "mean cross-entropy on the test set",
    "test_acc": "accuracy on the test set",
    "gen_gap_loss": "test_loss − train_loss",
    "gen_gap_acc": "train_acc − test_acc",
    "seed": "the run's seed (init and data order derive from it)",
    "weights": "all parameters as one float32 vector (see layout.json)",
}


def yaml_header(recipe, summary: dict) -> dict:
    """The card's YAML: configs with data_files per split, features per config, metadata."""
    configs, infos = [], []
    for i, (name, part) in enumerate(summary.items()):
        files = [
            {"split": split, "path": f"data/{name}/{split}-*.parquet"}
            for split in sorted(part["files"])
        ]
        entry = {"config_name": name, "data_files": files}
        if i == 0:
            entry["default"] = True
        configs.append(entry)
        features = datasets.Features.from_arrow_schema(part["table"].schema)
        infos.append(datasets.DatasetInfo(features=features, config_name=name)._to_yaml_dict())
    n_rows = sum(p["table"].num_rows for p in summary.values())
    return {
        "configs": configs,
        "dataset_info": infos,
        "license": recipe.resolved["output"]["license"],
        "tags": ["weight-space-learning", "model-zoo", "zoo"],
        "size_categories": [_size_category(n_rows)],
        "pretty_name": recipe.name,
    }


def _size_category(n: int) -> str:
    for limit, label in [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")]:
        if n < limit:
            return label
    return "100K<n<1M" if n < 1_000_000 else "n>1M"


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _columns_table(table) -> str:
    rows = []
    for field in table.schema:
        doc = COLUMN_DOCS.get(field.name, "")
        if "__" in field.name:
            section, key = field.name.split("__", 1)
            doc = f"recipe `{section}.{key}` of the run"
        rows.append([f"`{field.name}`", f"`{field.type}`", doc])
    return _md_table(["column", "type", "meaning"], rows)


def load_snippet(name: str, repo: str = "path/to/dataset") -> str:
    return (
        "import datasets, zoo\n\n"
        f'ds = datasets.load_dataset("{repo}", "{name}", split="train")\n'
        'weights = ds.with_format("torch")["weights"]        # (N, P) float32\n'
        'layout = zoo.load_layout("' + repo + '", "' + name + '")\n'
        "net = zoo.to_module(ds[0], layout)                 # a torch.nn.Module"
    )


def render_card(recipe, summary: dict, folder: Path) -> str:
    """Fill ``cards/dataset_card.md`` from the recipe and the built tables."""
    first_name, first = next(iter(summary.items()))
    table, layout = first["table"], first["rows"].layout
    res = recipe.resolved
    grid = res["grid"]
    n_runs = len(set().union(*(set(p["table"]["run_id"].to_pylist()) for p in summary.values())))
    status = {}
    for p in summary.values():
        for s in p["table"]["status"].to_pylist():
            status[s] = status.get(s, 0) + 1
    values = {
        "yaml_header": yaml.safe_dump(yaml_header(recipe, summary), sort_keys=False).strip(),
        "pretty_name": recipe.name,
        "description": res.get("description") or "",
        "n_runs": n_runs,
        "n_rows": sum(p["table"].num_rows for p in summary.values()),
        "n_cells": max(1, n_runs // res["seeds"]),
        "seeds": res["seeds"],
        "epochs": ", ".join(map(str, sorted(set(table["epoch"].to_pylist())))),
        "config_list": ", ".join(
            f"`{n}` ({p['rows'].layout.num_params:,} parameters)" for n, p in summary.items()
        ),  # fmt: skip
        "task": f"`{res['task']['name']}`",
        "status_counts": ", ".join(f"{k}: {v}" for k, v in sorted(status.items())),
        "zoo_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "grid_table": _md_table(["recipe key", "values"], [[f"`{k}`", v] for k, v in grid.items()])
        if grid
        else "Only the seed varies.",
        "fixed_yaml": yaml.safe_dump(
            {s: res[s] for s in ("task", "model", "init", "train")}, sort_keys=False
        ).strip(),
        "load_snippet": load_snippet(first_name),
        "layout_table": _md_table(
            ["parameter", "shape", "offset"],
            [
                [f"`{n}`", list(s), o]
                for n, s, o in zip(layout.names, layout.shapes, layout.offsets, strict=True)
            ],
        ),
        "split_fractions": ", ".join(f"{k} {v:g}" for k, v in res["output"]["splits"].items()),
        "files_table": _md_table(
            ["config", "split", "rows", "files"],
            [
                [n, s, p["counts"][s], len(p["files"][s])]
                for n, p in summary.items()
                for s in p["files"]
            ],
        ),
        "columns_table": _columns_table(table),
        "citations": _citations(res.get("citations") or []),
    }
    return string.Template(TEMPLATE.read_text()).substitute(values)


def _citations(items: list[str]) -> str:
    if not items:
        return ""
    return "## Citations\n\nThis zoo follows the setup of:\n\n" + "\n".join(f"- {c}" for c in items)
