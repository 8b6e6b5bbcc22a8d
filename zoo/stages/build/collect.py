"""Collect: plan the build from the manifest, before any weight is read.

A config is one weight space (names, shapes, permutation spec: one :class:`~zoo.layout.Layout`
up to the activation, which is a column). Each train shard pair (one population batch) holds
rows of one config; it becomes one :class:`BuildPart`, written as its own Parquet files, so a
grown store adds parts and leaves the others' files as they are. A part's id hashes everything
its files depend on (its shards' sha256, the checkpoints it takes, its runs' splits and order, its
landscape rows, the config's columns): a part whose id the manifest holds with intact files is
not written again.

Rows: the recipe's checkpoints, each once (a checkpoint found in two shards is taken from the
first, after checking that the second holds the same weights and metrics), with the run's
resolved config as ``<section>__<key>`` columns, the generalization gaps, and the landscape and
phase columns of its checkpoint (NaN, or null for text, where it was not annotated: see
:func:`column_types`).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zoo import SCHEMA_VERSION, __version__
from zoo.errors import BuildError
from zoo.layout import Layout
from zoo.naming import short_hash, split_of, split_position, value_position
from zoo.nn.architectures import layout_name
from zoo.recipe import SECTIONS, Recipe, RunConfig, expand_recipe
from zoo.stages.build.parquet import BuildPart, hyperparameter_type, row_features
from zoo.stages.landscape import plan_landscape
from zoo.stages.landscape.phases import cell_inputs, label_cells
from zoo.store.manifest import Manifest, ShardRecord
from zoo.store.shards import read_tensor_metadata, read_verified

FIRST_COLUMNS = ["checkpoint_id", "run_id", "cell_id", "epoch", "step", "status"]
# a train shard's columns besides its metrics and a signal task's columns (image_index, label)
TRAIN_SHARD_COLUMNS = {*FIRST_COLUMNS, "batch_id", "diverged_epoch", "run_config"}


@dataclass(frozen=True)
class ConfigPlan:
    """One config of the dataset: its name, published layout and columns."""

    name: str
    layout: Layout
    schema: pa.Schema  # every column, weights last
    sources: tuple[str, ...] = ()  # where the task data came from (Task.source), per shard
    # (provenance JSON, train batches) of the environments that trained it (issue 17)
    environments: tuple[tuple[str, int], ...] = ()


@dataclass
class BuildPlan:
    configs: dict[str, ConfigPlan]
    parts: list[BuildPart]
    runs: dict[str, RunConfig]


def plan_build(recipe: Recipe, out_dir: str | Path) -> BuildPlan:
    """The build's configs and parts, from the manifest, the shards' headers and the landscape
    shards (the weights are read by the parts)."""
    runs = {r.run_id: r for r in expand_recipe(recipe)}
    manifest = Manifest(out_dir)
    pairs = _train_pairs(manifest, set(runs))
    if not pairs:
        raise BuildError(
            f"{out_dir}: the store holds no trained checkpoint of this recipe's runs; run "
            "`zoo train` first"
        )
    owners = _owners(out_dir, pairs, runs)
    landscape = landscape_rows(recipe, out_dir, manifest)
    layouts = {b: Layout.from_dict(json.loads(_header(out_dir, p)["layout"])) for b, p in owners}
    names = _config_names(layouts.values())
    configs, parts = {}, []
    for batch, pair in owners:
        config = names[layouts[batch].sha256]
        members = [pair["checkpoints"], layouts[batch], pair]
        configs.setdefault(config, []).append(members)
    plans = {
        name: _config_plan(name, members, runs, landscape, out_dir)
        for name, members in configs.items()
    }
    for batch, pair in owners:
        name = names[layouts[batch].sha256]
        parts.append(_part(plans[name], batch, pair, runs, landscape, recipe))
    return BuildPlan(plans, parts, runs)


def _train_pairs(manifest: Manifest, keep: set[str]) -> dict[str, dict]:
    """batch_id -> {"safetensors": record, "parquet": record} of complete pairs with kept runs."""
    by_batch: dict[str, dict[str, ShardRecord]] = defaultdict(dict)
    for rec in manifest.records("train"):
        if keep.intersection(rec.run_ids):
            by_batch[rec.batch_id][rec.ext] = rec
    return {b: p for b, p in by_batch.items() if set(p) == {"parquet", "safetensors"}}


def _owners(out_dir, pairs: dict[str, dict], runs: dict) -> list[tuple[str, dict]]:
    """Each kept checkpoint from the first shard pair that holds it (manifest order); a second
    copy must hold the same weights and metrics."""
    seen: dict[str, str] = {}
    out = []
    for batch, pair in pairs.items():
        here = [c for c in pair["parquet"].checkpoint_ids if c.split("-")[0] in runs]
        dupes: dict[str, list[str]] = defaultdict(list)  # earlier batch -> shared checkpoints
        for ckpt in here:
            if ckpt in seen:
                dupes[seen[ckpt]].append(ckpt)
        for earlier, ckpts in dupes.items():
            check_same_checkpoints(out_dir, ckpts, pairs[earlier], pair)
        take = tuple(c for c in here if c not in seen)
        seen.update(dict.fromkeys(take, batch))
        if take:
            out.append((batch, {**pair, "checkpoints": take}))
    return out


def check_same_checkpoints(out_dir, ckpts: list[str], first: dict, second: dict) -> None:
    """Refuse two different contents under one checkpoint id (each shard pair read once)."""
    from safetensors.numpy import load as load_tensors

    def content(pair) -> tuple[dict, dict]:
        tensors = load_tensors(read_verified(out_dir, pair["safetensors"]))
        table = pq.read_table(pa.BufferReader(read_verified(out_dir, pair["parquet"])))
        metrics = {
            r["checkpoint_id"]: {k: v for k, v in r.items() if k.startswith(("train_", "test_"))}
            for r in table.to_pylist()
        }
        return tensors, metrics

    (ta, ma), (tb, mb) = content(first), content(second)
    for ckpt in ckpts:
        names = [k for k in ta if k.startswith(f"{ckpt}/")]
        same = all(k in tb and np.array_equal(ta[k], tb[k]) for k in names)
        if not (same and names and ma.get(ckpt) == mb.get(ckpt)):
            raise BuildError(
                f"checkpoint {ckpt} is stored twice with different contents, in "
                f"{first['parquet'].path} and {second['parquet'].path}; keep one: run `zoo "
                "verify OUT --repair` if one is damaged, else delete the records of the older "
                "batch from manifest.jsonl and build again"
            )


def _header(out_dir, pair: dict) -> dict:
    return read_tensor_metadata(out_dir, pair["safetensors"].path)


def weight_space(layout: Layout) -> str:
    """What makes two layouts one config: names, shapes, permutation spec and the model keys
    that shape them (not the activation: rows of one weight space with different activations
    are one config, the activation a column)."""
    model = {k: v for k, v in layout.model.items() if k != "activation"}
    return short_hash([list(layout.names), [list(s) for s in layout.shapes], model])


def _config_names(layouts) -> dict[str, str]:
    """layout sha256 -> config name: ``layout_name`` (``mlp_d2_w32``, ``cnn_small_w16``), with
    the input size and the classes added where two weight spaces would share a name."""
    spaces: dict[str, Layout] = {}
    for layout in layouts:
        spaces.setdefault(weight_space(layout), layout)
    by_name: dict[str, list[str]] = defaultdict(list)
    for space, layout in spaces.items():
        by_name[layout_name(layout)].append(space)
    names = {}
    for base, members in by_name.items():
        for space in members:
            m = spaces[space].model
            inputs = math.prod(m.get("input_shape", [0]))
            longer = f"{base}_in{inputs}_c{m.get('n_classes')}"
            names[space] = base if len(members) == 1 else longer
    if len(set(names.values())) < len(names):  # same name, inputs and classes: fall back
        names = {s: f"{layout_name(spaces[s])}_{s[:6]}" for s in names}
    return {layout.sha256: names[weight_space(layout)] for layout in layouts}


def config_environments(out_dir) -> dict[str, Counter]:
    """config -> how many train batches each environment (a :class:`Provenance`, ``None``
    where not recorded) computed, from the manifest's records and the shards' headers (no
    weight is read; a shard that cannot be read is left out: ``zoo verify`` names it).
    Weights are bitwise reproducible only within one environment (issue 17)."""
    from zoo.errors import StoreError

    layouts, environments = {}, {}
    for rec in Manifest(out_dir).records("train"):
        if rec.ext != "safetensors":
            continue
        try:
            header = read_tensor_metadata(out_dir, rec.path)
        except StoreError:
            continue
        layouts[rec.batch_id] = Layout.from_dict(json.loads(header["layout"]))
        environments[rec.batch_id] = rec.provenance
    names = _config_names(layouts.values())
    out: dict[str, Counter] = defaultdict(Counter)
    for batch, layout in layouts.items():
        out[names[layout.sha256]][environments[batch]] += 1
    return dict(out)


# --- columns ------------------------------------------------------------------------------------


def _config_plan(name: str, members: list, runs: dict, landscape: dict, out_dir) -> ConfigPlan:
    """A config's published layout (its activation None where its rows differ in it) and its
    columns: ids, metrics, hyperparameters, landscape, weights."""
    layouts = [layout for _, layout, _ in members]
    activations = {layout.model.get("activation") for layout in layouts}
    model = dict(layouts[0].model, activation=activations.pop() if len(activations) == 1 else None)
    layout = Layout(layouts[0].names, layouts[0].shapes, model, layouts[0].perm_spec)
    ckpts = [c for checkpoints, _, _ in members for c in checkpoints]
    ids = {c.rpartition("-")[0] for c in ckpts}
    shards = [pair["parquet"] for _, _, pair in members]
    metrics, sources, environments = _shard_columns(out_dir, shards)
    columns = {
        **metrics,
        **_hyperparameter_columns([runs[r] for r in sorted(ids)]),
        **landscape_columns([landscape[c] for c in ckpts if c in landscape]),
    }
    fields = [pa.field(c, column_types(c, columns)) for c in FIRST_COLUMNS]
    rest = sorted(k for k in columns if k not in FIRST_COLUMNS)
    fields += [pa.field(k, columns[k]) for k in rest]
    fields.append(pa.field("weights", pa.list_(pa.float32(), layout.num_params)))
    sources = tuple(sorted(sources - {""}))
    return ConfigPlan(name, layout, pa.schema(fields), sources, environments)


def column_types(key: str, columns: dict[str, pa.DataType]) -> pa.DataType:
    """The Arrow type of a column: from ``schemas/checkpoint.features.json`` for the columns
    every row has, else as collected."""
    if key in row_features():
        return row_features().arrow_schema.field(key).type
    return columns[key]


def _shard_columns(
    out_dir, records: list[ShardRecord]
) -> tuple[dict[str, pa.DataType], set, tuple]:
    """The metric columns of the config's train shards (``train_<m>``, ``test_<m>``), their
    generalization gaps and the other columns of a train shard; the shards' task sources; and
    their environments with how many shards each wrote (provenance JSON, count; "" where not
    recorded). From their schema metadata: the files' footers alone are read."""
    from zoo.store.fs import open_file

    out = {"diverged_epoch": pa.int32(), "seed": pa.int64()}
    sources, environments = set(), Counter()
    for rec in records:
        with open_file(Path(out_dir) / rec.path) as f:
            schema = pq.read_schema(f)
        meta = json.loads((schema.metadata or {}).get(b"zoo", b"{}"))
        sources.add(meta.get("task_source", ""))
        provenance = meta.get("provenance")
        environments[json.dumps(provenance, sort_keys=True) if provenance else ""] += 1
        for name in schema.names:
            if name.startswith(("train_", "test_")) or name not in TRAIN_SHARD_COLUMNS:
                out[name] = schema.field(name).type  # metrics; a signal task's own columns
    gaps = {"loss": ("test", "train"), "acc": ("train", "test")}  # positive: overfitting
    for metric in gaps:
        if f"train_{metric}" in out:
            out[f"gen_gap_{metric}"] = pa.float64()
    return out, sources, tuple(sorted(environments.items()))


def _hyperparameter_columns(runs: list[RunConfig]) -> dict[str, pa.DataType]:
    """``<section>__<key>`` of every key a run of the config has. A key some runs lack (momentum
    in an SGD/Adam grid) is null there; so that every ``datasets`` format and the default
    DataLoader collate read it, a boolean of that kind is stored as int8 (null -> NaN) and a list
    as a fixed-length list (NaN where absent)."""
    present: dict[str, list] = defaultdict(list)
    for run in runs:
        for section in SECTIONS:
            for key, value in getattr(run, section).items():
                present[f"{section}__{key}"].append(value)
    out = {}
    for column, values in present.items():
        kind = hyperparameter_type(column, values)
        partial = len(values) < len(runs)
        out[column] = _loader_safe(kind, values, partial)
    return out


def _loader_safe(kind: pa.DataType, values: list, nullable: bool) -> pa.DataType:
    """``kind``, made readable by every format when some rows are null: bool -> int8, a list
    -> a fixed-length list of float64 (NaN-filled)."""
    if pa.types.is_list(kind):
        lengths = {len(v) for v in values if v is not None}
        return pa.list_(pa.float64(), lengths.pop()) if len(lengths) == 1 else kind
    if pa.types.is_boolean(kind) and nullable:
        return pa.int8()
    return kind


def landscape_columns(rows: list[dict]) -> dict[str, pa.DataType]:
    """Types of the landscape and phase columns: numbers as float64 (null where a checkpoint was
    not annotated: NaN in the torch format), text as string ("" there), flags as int8 (1/0, null:
    a null boolean would stop the default DataLoader collate), lists of numbers as fixed-length
    float64 lists (NaN-filled: a null list would stop the torch format)."""
    out: dict[str, pa.DataType] = {}
    for row in rows:
        for key, value in row.items():
            if key in FIRST_COLUMNS or key in out or value is None:
                continue
            if isinstance(value, bool):
                out[key] = pa.int8()
            elif isinstance(value, int | float):
                out[key] = pa.float64()
            elif isinstance(value, list):
                out[key] = pa.list_(pa.float64(), len(value))
            else:
                out[key] = pa.string()
    return out


# --- parts --------------------------------------------------------------------------------------


def _part(
    plan: ConfigPlan, batch: str, pair: dict, runs: dict, landscape: dict, recipe
) -> BuildPart:
    """One config's rows of one train batch, and the id of everything its files depend on."""
    ckpts = pair["checkpoints"]
    ids = sorted({c.rpartition("-")[0] for c in ckpts})
    fractions = recipe.resolved["output"]["splits"]
    split_by = recipe.resolved["output"]["split_by"]
    members = {
        r: [split_of(unit_position(runs[r], split_by), fractions), sort_key(runs[r])] for r in ids
    }
    rows = {c: landscape[c] for c in ckpts if c in landscape}
    schema = plan.schema.serialize().to_pybytes().hex()
    weights, metrics = pair["safetensors"], pair["parquet"]
    key = [
        plan.name,
        batch,
        weights.sha256,
        metrics.sha256,
        list(ckpts),
        members,
        rows,
        schema,
        __version__,
        SCHEMA_VERSION,
    ]
    return BuildPart(
        part_id="D" + short_hash(key, n=15),
        config=plan.name,
        train_batch=batch,
        weights=weights.to_dict(),
        metrics=metrics.to_dict(),
        checkpoints=tuple(ckpts),
        placement=members,
        landscape=rows,
        schema=schema,
    )


def unit_position(run: RunConfig, split_by: str) -> float:
    """Where a run's split unit lies in [0, 1) (:mod:`zoo.naming`'s split rule): the run (its
    seed and grid coordinates), its grid cell (the coordinates alone) or the value of a recipe
    key (``task.index``: every run with that value lands in one split)."""
    if split_by == "run":
        return split_position(run.seed, run.grid_index, run.sample_index)
    if split_by == "cell":
        return split_position(None, run.grid_index, run.sample_index)
    section, _, key = split_by.partition(".")
    return value_position(getattr(run, section).get(key))


def sort_key(run: RunConfig) -> list[int]:
    """Rows are ordered by epoch, then by the run's grid coordinates and seed, so Parquet row
    groups cover contiguous epochs and grid values (their statistics then help filters)."""
    return [*run.grid_index, -1 if run.sample_index is None else run.sample_index, run.seed]


# --- landscape ------------------------------------------------------------------------------------


def landscape_rows(recipe: Recipe, out_dir, manifest: Manifest | None = None) -> dict[str, dict]:
    """checkpoint_id -> the landscape columns of the recipe's current landscape plan (stale
    settings are ignored), with the phase columns of its cell when ``phase`` is a metric."""
    settings = recipe.resolved["landscape"]
    if not settings["metrics"]:
        return {}
    wanted = {b.batch_id for b in plan_landscape(expand_recipe(recipe), settings)}
    rows = []
    for rec in (manifest or Manifest(out_dir)).records("landscape"):
        if rec.batch_id in wanted and rec.ext == "parquet":
            rows += pq.read_table(pa.BufferReader(read_verified(out_dir, rec))).to_pylist()
    if rows and "phase" in settings["metrics"]:
        trains = {r.cell_id: r.train for r in expand_recipe(recipe)}  # v2: optimizer bounds
        labels = label_cells(cell_inputs(rows), settings["phase"], trains)
        for row in rows:
            row.update(labels[(row["cell_id"], row["epoch"])])
    drop = set(FIRST_COLUMNS) - {"checkpoint_id"}
    return {r["checkpoint_id"]: {k: v for k, v in r.items() if k not in drop} for r in rows}
