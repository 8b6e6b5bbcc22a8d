"""The dataset card: YAML header (configs, features, splits, license, tags) and prose made from
the zoo itself, filled into ``cards/dataset_card.md``.

The header is what the Hub and ``datasets`` read: ``configs`` (data files per config and
split), ``dataset_info`` (features with ``weights`` as a fixed-length float32 list, every
metadata column typed, split sizes), license, tags and size category. ``huggingface_hub``'s
``DatasetCard`` parses it when the card is rendered, so a card that would not load is never
written.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard, DatasetCardData

from zoo import SCHEMA_VERSION, __version__
from zoo.errors import BuildError
from zoo.layout import Layout
from zoo.naming import DATA_DIR, IMAGES_DIR, REPO_PLACEHOLDER, resource
from zoo.recipe import expand_recipe
from zoo.stages.build.parquet import FILE_BYTES, ROW_GROUP_BYTES
from zoo.stages.build.phasecard import coverage_of_tables, render_coverage, render_studies
from zoo.stages.build.studies import study_config, study_info
from zoo.stages.landscape.phases import describe_rule
from zoo.store.fs import file_size, list_files, open_file
from zoo.tasks import describe_task

TEMPLATE = resource("cards", "dataset_card.md")
TAGS = ["weight-space-learning", "model-zoo", "neural-network-weights", "zoo"]

COLUMN_DOCS = {
    "checkpoint_id": "`<run_id>-e<epoch:04d>` (mid-epoch: `<run_id>-s<step:07d>`), one row each",
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
    "train_ppl": "perplexity exp(train_loss) over every scored token (language models)",
    "test_ppl": "perplexity exp(test_loss) over every scored token (language models)",
    "gen_gap_loss": "test_loss − train_loss",
    "gen_gap_acc": "train_acc − test_acc",
    "seed": "the run's seed (init and data order derive from it)",
    "phase": "phase label of the run's grid cell at this epoch (see Estimator settings)",
    "weights": "all parameters as one float32 vector (see layout.json)",
}

# Works whose setups an architecture or a landscape metric follows: cited when used.
ARCH_CITATIONS = {
    "cnn_s": "Schürholt, Taskiran, Knyazev, Giró-i-Nieto, Borth. Model Zoos: A Dataset of "
    "Diverse Populations of Neural Network Models. NeurIPS Datasets and Benchmarks, 2022.",
    "cnn_small": "Unterthiner, Keysers, Gelly, Bousquet, Tolstikhin. Predicting Neural Network "
    "Accuracy from Weights. arXiv:2002.11448, 2020.",
    "resnet": "He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR, 2016.",
    "transformer": "Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin. "
    "Attention Is All You Need. NeurIPS, 2017.",
}
METRIC_CITATIONS = {
    "hessian": "Yao, Gholami, Keutzer, Mahoney. PyHessian: Neural Networks Through the Lens of "
    "the Hessian. IEEE Big Data, 2020.",
    "weights": "Martin, Mahoney. Implicit Self-Regularization in Deep Neural Networks: Evidence "
    "from Random Matrix Theory and Implications for Learning. JMLR 22(165), 2021.",
    "cka": "Kornblith, Norouzi, Lee, Hinton. Similarity of Neural Network Representations "
    "Revisited. ICML, 2019.",
    "bezier": "Garipov, Izmailov, Podoprikhin, Vetrov, Wilson. Loss Surfaces, Mode "
    "Connectivity, and Fast Ensembling of DNNs. NeurIPS, 2018.",
    "barrier": "Frankle, Dziugaite, Roy, Carbin. Linear Mode Connectivity and the Lottery "
    "Ticket Hypothesis. ICML, 2020.",
    "phase": "Yang, Hodgkinson, Theisen, Zou, Gonzalez, Ramchandran, Mahoney. Taxonomizing "
    "Local versus Global Structure in Neural Network Loss Landscapes. NeurIPS, 2021.",
}


@dataclass(frozen=True)
class ConfigSummary:
    """What the build wrote for one config: what the card describes, read from the files.

    Attributes:
        name: the config name.
        layout: its weight space.
        schema: every column (``weights`` included).
        table: every row, every column but ``weights``.
        files: split -> Parquet paths relative to the dataset folder.
        counts: split -> rows.
        num_bytes: split -> uncompressed bytes of its rows (the Parquet files' metadata).
    """

    name: str
    layout: Layout
    schema: pa.Schema
    table: pa.Table
    files: dict[str, list[str]]
    counts: dict[str, int]
    num_bytes: dict[str, int]
    sources: tuple[str, ...] = ()
    environments: tuple[tuple[str, int], ...] = ()  # (provenance JSON, train batches)


def summarize(plan, files: dict[str, list[str]], folder: Path) -> ConfigSummary:
    """A config's summary from its Parquet files: their row counts and sizes (metadata) and
    every column but the weights (a projection: the weights are not read)."""
    columns = [n for n in plan.schema.names if n != "weights"]
    tables, counts, num_bytes = [], {}, {}
    for split, paths in files.items():
        for rel in paths:
            with open_file(Path(folder) / rel) as f:
                parquet = pq.ParquetFile(f)
                meta = parquet.metadata
                rows = parquet.read(columns=columns)
            tables.append(rows.append_column("split", pa.array([split] * rows.num_rows)))
            counts[split] = counts.get(split, 0) + meta.num_rows
            size = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
            num_bytes[split] = num_bytes.get(split, 0) + size
    table = pa.concat_tables(tables)
    return ConfigSummary(
        plan.name,
        plan.layout,
        plan.schema,
        table,
        files,
        counts,
        num_bytes,
        plan.sources,
        plan.environments,
    )


def yaml_header(
    recipe,
    summary: list[ConfigSummary],
    folder: Path | None = None,
    metadata: ConfigSummary | None = None,
    studies: tuple = (),
) -> dict:
    """The card's YAML: configs with data_files per split, features and split sizes per config
    (the ``metadata`` config after the weight configs, then ``studies``), license, tags, size
    category."""
    configs = []
    summary = [*summary, metadata] if metadata else summary
    for i, part in enumerate(summary):
        files = [
            {"split": split, "path": f"{DATA_DIR}/{part.name}/{split}-*.parquet"}
            for split in sorted(part.files)
        ]
        entry = {"config_name": part.name, "data_files": files}
        if i == 0:
            entry["default"] = True
        configs.append(entry)
    configs += [study_config(s) for s in studies]
    infos = DatasetInfosDict({p.name: _dataset_info(recipe, p, folder) for p in summary})
    infos.update({s.name: study_info(s, folder) for s in studies})
    card_data = DatasetCardData()
    infos.to_dataset_card_data(card_data)
    info_list = card_data["dataset_info"]  # one config gives a mapping: keep the list form
    info_list = info_list if isinstance(info_list, list) else [info_list]
    order = [c["config_name"] for c in configs]  # the configs' order, not the alphabet's
    info_list = sorted(
        (_features_first(i) for i in info_list), key=lambda i: order.index(i["config_name"])
    )
    n_rows = sum(p.table.num_rows for p in summary if p is not metadata)
    return {
        "configs": configs,
        "dataset_info": info_list,
        "license": recipe.resolved["output"]["license"],
        "tags": TAGS,
        "size_categories": [_size_category(n_rows)],
        "pretty_name": recipe.name,
    }


def _features_first(info: dict) -> dict:
    """``features``, then ``config_name``, then the rest: the order ``DatasetInfo`` writes its
    YAML in, so cards keep their bytes (and a push does not re-send them)."""
    rest = {k: v for k, v in info.items() if k not in ("features", "config_name")}
    return {"features": info["features"], "config_name": info["config_name"], **rest}


def _dataset_info(recipe, part: ConfigSummary, folder: Path | None) -> datasets.DatasetInfo:
    features = datasets.Features.from_arrow_schema(part.schema)
    splits = datasets.SplitDict()
    for split in sorted(part.files):
        n, num_bytes = part.counts[split], part.num_bytes[split]
        splits.add(datasets.SplitInfo(name=split, num_bytes=num_bytes, num_examples=n))
    info = datasets.DatasetInfo(features=features, config_name=part.name, splits=splits)
    info.dataset_size = sum(s.num_bytes for s in splits.values())
    if folder is not None:
        info.download_size = sum(_file_bytes(folder, part.files).values())
    return info


def _file_bytes(folder: Path, files: dict[str, list[str]]) -> dict[str, int]:
    """Bytes in the store of each split's Parquet files (0 where not written yet)."""
    return {
        split: sum(file_size(Path(folder) / p) or 0 for p in paths)
        for split, paths in files.items()
    }


SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"),
    (10**8, "10M<n<100M"),
    (10**9, "100M<n<1B"),
    (10**10, "1B<n<10B"),
    (10**11, "10B<n<100B"),
    (10**12, "100B<n<1T"),
]


def _size_category(n: int) -> str:
    """The Hub's ``size_categories`` label of ``n`` rows."""
    for limit, label in SIZE_CATEGORIES:
        if n < limit:
            return label
    return "n>1T"


def _md_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; a ``|`` inside a cell is escaped so it does not split the cell."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _columns_table(schema: pa.Schema, column_docs: dict[str, str] | None = None) -> str:
    docs = {**COLUMN_DOCS, **(column_docs or {})}
    rows = []
    for field in schema:
        doc = docs.get(field.name, "")
        if "__" in field.name and field.name not in (column_docs or {}):
            section, key = field.name.split("__", 1)
            doc = f"recipe `{section}.{key}` of the run"
        rows.append([f"`{field.name}`", f"`{field.type}`", doc])
    return _md_table(["column", "type", "meaning"], rows)


def load_snippet(name: str, split: str, repo: str = REPO_PLACEHOLDER) -> str:
    """The "How to load" code of the card (run by the tests, on a folder and on a Hub repo)."""
    return (
        "import datasets, zoo\n\n"
        f'ds, layout = zoo.load("{repo}", "{name}", split="{split}")  # torch format + Layout\n'
        'weights = ds["weights"][:]                    # (N, P) float32 tensor\n'
        "net = zoo.to_module(ds[0], layout)            # a working torch.nn.Module\n"
        "batches = zoo.iter_weights(ds, batch_size=256)  # (256, P) tensors, memmap-fast\n\n"
        "# plain `datasets`, streamed: rows as dicts (ids, hyperparameters, metrics, weights)\n"
        f'stream = datasets.load_dataset("{repo}", "{name}", split="{split}", streaming=True)\n'
        "row = next(iter(stream))"
    )


def _counts(summary: list[ConfigSummary]) -> str:
    """Rows per status (and per phase, where a ``phase`` column exists) of each config."""
    parts = []
    for column in ("status", "phase"):
        per = {
            p.name: Counter("null" if v is None else str(v) for v in p.table[column].to_pylist())
            for p in summary
            if column in p.table.column_names
        }
        if not per:
            continue
        values = sorted({v for counts in per.values() for v in counts})
        rows = [[f"`{name}`", *(c.get(v, 0) for v in values)] for name, c in per.items()]
        note = (
            " (null: checkpoints not annotated)" if column == "phase" and "null" in values else ""
        )
        parts.append(f"Rows per {column}{note}:\n\n" + _md_table(["config", *values], rows))
    return "\n\n".join(parts)


def _figures(folder: Path) -> str:
    images = [p for p in list_files(Path(folder) / IMAGES_DIR) if p.endswith(".png")]
    if not images:
        return ""
    links = "\n\n".join(f"![{p.removesuffix('.png')}]({IMAGES_DIR}/{p})" for p in images)
    return "## Figures\n\n" + links


def _estimators(res: dict) -> str:
    settings = res.get("landscape") or {}
    if not settings.get("metrics"):
        return ""
    text = yaml.safe_dump(settings, sort_keys=False).strip()
    return (
        "## Estimator settings\n\nThe landscape columns were computed with these settings "
        "(the recipe's `landscape:` section, defaults resolved):\n\n```yaml\n" + text + "\n```"
    )


def _citations(res: dict) -> str:
    items = list(res.get("citations") or [])
    arches = {res["model"]["arch"], *res["grid"].get("model.arch", [])}
    items += [ARCH_CITATIONS[a] for a in sorted(arches) if a in ARCH_CITATIONS]
    metrics = (res.get("landscape") or {}).get("metrics") or []
    items += [METRIC_CITATIONS[m] for m in metrics if m in METRIC_CITATIONS]
    if not items:
        return ""
    return "## Citations\n\nThis zoo follows the setups of:\n\n" + "\n".join(
        f"- {c}" for c in items
    )


def _trained(res: dict) -> str:
    """What was trained and why, in one paragraph made from the recipe."""
    grid, sampled = res["grid"], _sampled(res)

    def val(section: str, key: str) -> str:  # a grid key reads "one of [...]"
        dotted = f"{section}.{key}"
        if dotted in sampled:
            return "sampled"
        return f"one of {grid[dotted]}" if dotted in grid else str(res[section].get(key))

    m = res["model"]
    model = ", ".join(f"{k} {val('model', k)}" for k in m if k != "arch")
    varies = ", ".join(f"`{k}`" for k in grid) or "only the seed"
    if sampled:
        count = res["sample"]["count"]
        keys = ", ".join(f"`{k}`" for k in sampled)
        varies += f"; {count} points drawn at random (seeded) per grid point set {keys}"
    return (
        f"Every run trains a `{val('model', 'arch')}` network ({model}) on "
        f"`{val('task', 'name')}`, initialized with `{val('init', 'scheme')}` (scale "
        f"{val('init', 'scale')}), with `{val('train', 'optimizer')}` at learning rate "
        f"{val('train', 'lr')}, batch size {val('train', 'batch_size')}, for "
        f"{val('train', 'epochs')} epochs. The grid varies {varies}, and each grid cell is "
        f"trained with {res['seeds']} seeds, so that the effect of each setting on the weights "
        "can be told apart from seed noise."
    )


def _sampled(res: dict) -> dict:
    """The recipe's sampled keys and their distributions (``sample.params``), if any."""
    sample = res.get("sample") or {}
    return dict(sample.get("params") or {}) if sample.get("count") else {}


def _varies_table(res: dict) -> str:
    """Grid keys with their values and sampled keys with their distributions."""
    rows = [[f"`{k}`", "grid", v] for k, v in res["grid"].items()]
    sample = res.get("sample") or {}
    for key, dist in _sampled(res).items():
        (kind, args), *_ = dist.items()
        rows.append(
            [
                f"`{key}`",
                f"sampled ({sample['count']} draws, seed {sample.get('seed')})",
                f"{kind} {args}",
            ]
        )
    if not rows:
        return "Only the seed varies."
    return _md_table(["recipe key", "how", "values"], rows)


def _files_table(summary: list[ConfigSummary], folder: Path) -> str:
    rows = []
    for part in summary:
        sizes = _file_bytes(folder, part.files)
        for split, paths in part.files.items():
            encodings = sorted({_weights_encoding(folder / p) for p in paths} - {None})
            rows.append(
                [
                    f"`{part.name}`",
                    split,
                    part.counts[split],
                    len(paths),
                    _mb(sizes[split]),
                    ", ".join(encodings),
                ]
            )
    return _md_table(["config", "split", "rows", "files", "size", "weights encoding"], rows)


def _weights_encoding(path: Path) -> str | None:
    """How a Parquet file encodes its ``weights`` (``BYTE_STREAM_SPLIT`` or ``PLAIN``)."""
    if file_size(path) is None:
        return None
    with open_file(path) as f:
        meta = pq.ParquetFile(f).metadata
    for i in range(meta.num_columns):
        column = meta.row_group(0).column(i) if meta.num_row_groups else None
        if column is not None and column.path_in_schema.startswith("weights."):
            return "BYTE_STREAM_SPLIT" if "BYTE_STREAM_SPLIT" in column.encodings else "PLAIN"
    return None


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB" if n < 2**30 else f"{n / 2**30:.2f} GB"


def _layout_table(layout) -> str:
    rows = [
        [f"`{n}`", list(s), o]
        for n, s, o in zip(layout.names, layout.shapes, layout.offsets, strict=True)
    ]
    return _md_table(["parameter", "shape", "offset"], rows)


def _load_split(part: ConfigSummary) -> str:
    return "train" if "train" in part.files else sorted(part.files)[0]


def render_card(
    recipe,
    summary: list[ConfigSummary],
    folder: Path,
    column_docs: dict[str, str] | None = None,
    metadata: ConfigSummary | None = None,
    studies: tuple = (),
    signals: str = "",
    metrics: str | None = None,
) -> str:
    """Fill ``cards/dataset_card.md`` from the recipe, the built tables and the folder.

    Args:
        recipe: the zoo's :class:`~zoo.recipe.Recipe`.
        summary: what :func:`zoo.stages.build.build_dataset` wrote, one
            :class:`ConfigSummary` per config (its Parquet files already under ``folder``).
        folder: the dataset folder; its ``images/*.png`` become the Figures section.
        column_docs: column -> meaning, merged over the built-in descriptions.
        metadata: the ``metadata`` config (every column but the weights, of every row).
        studies: the study configs the build wrote (:mod:`zoo.stages.build.studies`).
        signals: a signal zoo's section on rendering its networks (issue 14), else empty.
        metrics: the Data section's paragraph on the metric columns, where the task's objective
            is not classification (None: cross-entropy and accuracy).
    Returns:
        the card's text; ``huggingface_hub.DatasetCard`` has parsed its header.
    """
    folder = Path(folder)
    values = {
        **_overview(recipe, summary, folder, metadata, studies),
        **_sections(recipe, summary, folder, metadata, metrics),
    }
    values["columns_table"] = _columns_table(summary[0].schema, column_docs)
    values["studies"] = render_studies(studies)
    values["signals"] = signals
    text = string.Template(TEMPLATE.read_text()).substitute(values)
    text = re.sub(r"\n{3,}", "\n\n", text)  # sections left empty leave no gaps
    extra = ([metadata.name] if metadata else []) + [s.name for s in studies]
    check_card(text, [p.name for p in summary] + extra)
    return text


def _overview(
    recipe, summary: list[ConfigSummary], folder: Path, metadata=None, studies=()
) -> dict:
    """The header and the overview table's values."""
    res = recipe.resolved
    tables = [p.table for p in summary]
    n_runs = len(set().union(*(set(t["run_id"].to_pylist()) for t in tables)))
    status = Counter(s for t in tables for s in t["status"].to_pylist())
    total = sum(sum(_file_bytes(folder, p.files).values()) for p in summary)
    raw = sum(p.table.num_rows * p.layout.num_params * 4 for p in summary)
    header = yaml_header(recipe, summary, folder, metadata, studies)
    return {
        "yaml_header": yaml.safe_dump(header, sort_keys=False, allow_unicode=True).strip(),
        "pretty_name": recipe.name,
        "description": res.get("description") or "",
        "n_runs": n_runs,
        "n_rows": sum(t.num_rows for t in tables),
        "n_cells": max(1, n_runs // res["seeds"]),
        "seeds": res["seeds"],
        "epochs": ", ".join(map(str, sorted(set(tables[0]["epoch"].to_pylist())))),
        "config_list": ", ".join(
            f"`{p.name}` ({p.layout.num_params:,} parameters)" for p in summary
        ),
        "task": f"`{res['task']['name']}`",
        "status_counts": ", ".join(f"{k}: {v}" for k, v in sorted(status.items())),
        "size": f"{_mb(total)} of Parquet ({total / max(1, raw):.2f} × the raw float32 weights)",
        "zoo_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "progress": progress_text(recipe, n_runs),
    }


def progress_text(recipe, n_runs: int) -> str:
    """What a snapshot pushed while training holds (issue 17); ``""`` for a finished zoo."""
    planned = len(expand_recipe(recipe))
    if n_runs >= planned:
        return ""
    return (
        f"**A snapshot of a zoo in training:** it holds {n_runs} of the {planned} runs its "
        "recipe plans, each with all its checkpoints (`zoo run --push` publishes what is "
        "finished as it trains; a run's split does not change as more runs arrive)."
    )


def _sections(
    recipe, summary: list[ConfigSummary], folder: Path, metadata=None, metrics=None
) -> dict:
    """The values of the card's sections below the overview."""
    res = recipe.resolved
    first = summary[0]
    fixed = {s: res[s] for s in ("task", "model", "init", "train", "checkpoints")}
    return {
        "trained": _trained(res),
        "grid_table": _varies_table(res),
        "fixed_yaml": yaml.safe_dump(fixed, sort_keys=False).strip(),
        "counts": _counts(summary),
        "coverage": render_coverage(coverage_of_tables([p.table for p in summary])),
        "figures": _figures(folder),
        "load_snippet": load_snippet(first.name, _load_split(first)),
        "layout_tables": "\n\n".join(f"`{c.name}`:\n\n{_layout_table(c.layout)}" for c in summary),
        "data_text": data_text(recipe, sorted({s for c in summary for s in c.sources}), metrics),
        "split_text": split_text(res),
        "files_table": _files_table([*summary, metadata] if metadata else summary, folder),
        "metadata_text": _metadata_text(metadata),
        "parquet_limits": f"row groups of at most {ROW_GROUP_BYTES // 2**20} MB and files of at "
        f"most {FILE_BYTES // 2**20} MB (uncompressed)",
        "estimators": _estimators(res),
        "environments": environments_text(summary),
        "citations": _citations(res),
    }


def environments_text(summary: list[ConfigSummary]) -> str:
    """Where and with what each config was trained (issue 17): its environments (versions,
    device, threads, determinism settings, from the train shards' provenance) and how many
    train batches each computed."""
    from zoo.store.provenance import Provenance

    rows = []
    for part in summary:
        for text, count in part.environments:
            said = Provenance.from_dict(json.loads(text)).describe() if text else "not recorded"
            rows.append([f"`{part.name}`", count, said])
    if not rows:
        return ""
    mixed = [p.name for p in summary if len(p.environments) > 1]
    note = (
        f" **{', '.join(f'`{m}`' for m in mixed)} mix(es) environments**: rows from different "
        "environments may differ in their last bits."
        if mixed
        else " Each config was trained in one environment."
    )
    return (
        "## Environments\n\nWeights are bitwise reproducible only within one environment (the "
        "same versions, device, CPU kernels, thread count and determinism settings: they order "
        f"the float sums).{note} `zoo verify` reports this for a store.\n\n"
        + _md_table(["config", "train batches", "environment"], rows)
    )


def _metadata_text(metadata: ConfigSummary | None) -> str:
    if metadata is None:
        return ""
    return (
        f"The config `{metadata.name}` holds every column but `weights` of every row of every "
        f"config ({metadata.table.num_rows:,} rows, with `config` and `split` columns): filter "
        "and plot the whole zoo without "
        f'downloading a weight, e.g. `datasets.load_dataset(REPO, "{metadata.name}", '
        f'split="{next(iter(metadata.files))}").to_pandas()`.'
    )


def data_text(recipe, sources: list[str] = (), metrics: str | None = None) -> str:
    """How every number of a row was computed, in words a consumer can reimplement; ``sources``:
    where the task data was read (machine paths are left out of a published card); ``metrics``:
    the metric paragraph of a task that is not classification."""
    res = recipe.resolved
    varied = sorted(k for k in [*res["grid"], *_sampled(res)] if k.startswith("task."))
    task = describe_task(res["task"])
    if varied:
        task += f" The grid or the sample varies {', '.join(f'`{k}`' for k in varied)} per run."
    if sources:
        read = "; ".join(re.sub(r"(/[\w.+-]+)+/?", "a local folder", s) for s in sources)
        task += f" Read from: {read}."
    parts = [
        f"**Task** (`{res['task']['name']}`). {task}",
        metrics or classification_metrics(recipe),
        "**Checkpoints.** `checkpoint_id` is `<run_id>-e<epoch>` with the epoch in 4 digits "
        "(`…-e0005`; epoch 0 is the initialization), and `<run_id>-s<step>` with the optimizer "
        "step in 7 digits for a mid-epoch checkpoint (`…-s0000150`). A run's minibatches in "
        "epoch e follow `numpy.random.default_rng(numpy.random.SeedSequence([seed, 2, e]))"
        ".permutation(n_train)`, `batch_size` at a time (the last one smaller).",
    ]
    if res["landscape"]["metrics"]:
        parts.append(landscape_text(res["landscape"]))
    return "\n\n".join(parts)


SEQUENCE_TASKS = ("modular_tokens", "algorithmic", "char_lm")


def classification_metrics(recipe) -> str:
    """The Data section's paragraph on the metric columns of a classification task (of class
    labels, or of tokens at the scored positions of a sequence task)."""
    name = recipe.resolved["task"]["name"]
    what = "mean cross-entropy and accuracy"
    if name in SEQUENCE_TASKS:
        what = (
            "mean cross-entropy (natural log) and accuracy over the scored positions (`y` ≠ −100: "
            "the argmax of the logits at a position against its target token), pooled over every "
            "sequence of the set"
        )
    ppl = (
        " `train_ppl` and `test_ppl` are exp of `train_loss` and `test_loss` (the perplexity of "
        "the whole set, not a mean of per-batch perplexities)."
        if name == "char_lm"
        else ""
    )
    return (
        f"**Metrics.** `train_loss` and `train_acc` are the checkpoint's {what} on the whole "
        "training set above; `test_loss` and `test_acc` on the task's test "
        "set above (not this dataset's `test` split, whose rows are models), computed from the "
        "weights as stored (float32) in batches of "
        f"{recipe.execution['eval_batch_size']}: recomputed from `weights` and `layout.json` "
        f"they agree to float32 rounding (accuracies exactly, in our checks).{ppl} "
        "`gen_gap_loss` = test_loss − train_loss, `gen_gap_acc` = train_acc − test_acc."
    )


def landscape_text(settings: dict) -> str:
    """The landscape columns' definitions (the estimator settings are listed below them)."""
    probe = settings["probe"]
    text = (
        "**Landscape.** At the epochs `landscape.at`, on a probe sample of "
        f"{probe['batches']} × {probe['batch_size']} training examples, those at `sorted("
        "numpy.random.default_rng(numpy.random.SeedSequence([probe.seed, 13])).choice(n_train, "
        "n, replace=False))` with `probe.seed` = "
        f"{probe['seed']}. `probe_loss`: the mean training loss there (the objective of the "
        "Metrics above). Hessian columns: of that "
        "loss, by Lanczos (top eigenvalues, residual) and Hutchinson (trace). `barrier_mean`: "
        "over the seed pairs of the grid cell, `max_t L((1−t)·a + t·b) − (L(a) + L(b)) / 2` "
        f"at {settings['barrier']['points']} evenly spaced t in [0, 1] (the same definition as "
        "`zoo.weightspace.align.loss_barrier`); `cka_mean`: linear CKA of the "
        f"{settings['cka']['representation']} on the probe sample, over the same pairs."
    )
    if "phase" in settings["metrics"]:
        text += "\n\n**Phase rule.** " + describe_rule(settings["phase"])
    return text


def split_text(res: dict) -> str:
    """The split rule, with this recipe's unit and fractions."""
    out = res["output"]
    unit = {
        "run": "a run (every checkpoint of a run lands in one split)",
        "cell": "a grid cell (every run of a cell lands in one split)",
    }.get(out["split_by"], f"the value of `{out['split_by']}` (runs that share it share a split)")
    intervals, start = [], 0.0
    for name, fraction in out["splits"].items():
        intervals.append(f"{name} [{start:g}, {start + fraction:g})")
        start += fraction
    return (
        f"A split unit is {unit}. A unit with seed s, index i_k of its value in grid list k of "
        "`recipe.yaml` (the grid's key order) and sample number j (`sample:`, else 0) lies at "
        "u = frac(0.6180339887…·s + Σ_k frac(√p_k)·i_k + frac(√p_(K+1))·j), p = 2, 3, 7, 11, "
        "13, … (5 skipped; a grid cell drops the seed term; a recipe key's integer value v "
        "gives u = frac(0.6180339887…·v)); the splits take consecutive intervals of [0, 1): "
        f"{', '.join(intervals)}. The units spread evenly, so each split holds about its "
        "fraction, and more seeds, values appended to a grid list or more sampled points never "
        "move a unit."
    )


def check_card(text: str, configs: list[str]) -> DatasetCard:
    """Parse a card as the Hub does (``huggingface_hub.DatasetCard``) and check that its header
    names every config; raise :class:`BuildError` otherwise."""
    try:
        card = DatasetCard(text)
    except (ValueError, yaml.YAMLError) as err:
        raise BuildError(f"the dataset card's YAML header does not parse: {err}") from err
    named = [c["config_name"] for c in card.data.to_dict().get("configs", [])]
    if named != configs:
        raise BuildError(f"the dataset card names configs {named}, the build wrote {configs}")
    return card
