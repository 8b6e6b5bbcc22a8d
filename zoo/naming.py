"""Every id and every name of the store and of the published dataset, as values and pure functions.

Ids are functions of the resolved configuration only, so the same recipe gives the same ids on
any machine; resume means skipping ids the manifest already holds. File and folder names are
spelled here once (as ``datasets`` does in its ``naming.py``): the rest of ``zoo`` imports them.

An output folder::

    <out>/recipe.yaml                                   RECIPE_FILE
    <out>/manifest.jsonl                                MANIFEST
    <out>/shards/<stage>/<batch_id>.<ext>               shard_path()
    <out>/dataset/                                      DATASET_DIR: a Hugging Face dataset repo
        README.md                                       CARD_FILE
        layout.json                                     LAYOUT_FILE
        recipe.yaml                                     RECIPE_FILE
        data/<config>/<split>-NNNNN-of-NNNNN.parquet    data_file()
        images/<figure>.png                             IMAGES_DIR
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

ID_HEX = 16

MANIFEST = "manifest.jsonl"
RECIPE_FILE = "recipe.yaml"
SHARDS_DIR = "shards"
DATASET_DIR = "dataset"
CARD_FILE = "README.md"
LAYOUT_FILE = "layout.json"
DATA_DIR = "data"
IMAGES_DIR = "images"
PLOTS_DIR = "plots"  # `zoo plot` writes here, beside the dataset, not inside it
METADATA_CONFIG = "metadata"  # the config of every row's columns but the weights
METADATA_SPLIT = "rows"  # its one split (every row of every config and split)

# The card's load snippet names this repo until `zoo push` writes the real repo id in its place.
REPO_PLACEHOLDER = "<user>/<name>"

# The package's own contract files: zoo/schemas and zoo/cards are links to the repo's top-level
# schemas/ and cards/, so they ship inside the wheel.
PACKAGE_DIR = Path(__file__).parent


def resource(folder: str, name: str) -> Path:
    """A contract file shipped with the package: ``resource("schemas", "recipe.schema.json")``."""
    return PACKAGE_DIR / folder / name


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the text every hash is taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def short_hash(obj: Any, n: int = ID_HEX) -> str:
    """First ``n`` hex digits of sha256 over ``canonical_json(obj)``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


def run_id(resolved_config: dict) -> str:
    """Id of one run: 16 hex of sha256 over its canonical, fully resolved config (seed included).

    Example:
        >>> run_id({"seed": 0, "train": {"lr": 0.1}})
        '7f7c2edaa66f32c6'
    """
    return short_hash(resolved_config)


def checkpoint_id(run: str, epoch: int) -> str:
    """Id of one checkpoint: ``<run_id>-e<epoch:04d>``.

    Example:
        >>> checkpoint_id("7f7c2edaa66f32c6", 5)
        '7f7c2edaa66f32c6-e0005'
    """
    return f"{run}-e{epoch:04d}"


def step_checkpoint_id(run: str, step: int) -> str:
    """Id of a mid-epoch checkpoint: ``<run_id>-s<step:07d>`` (``checkpoints.steps``).

    Example:
        >>> step_checkpoint_id("7f7c2edaa66f32c6", 150)
        '7f7c2edaa66f32c6-s0000150'
    """
    return f"{run}-s{step:07d}"


def batch_id(run_ids: list[str]) -> str:
    """Id of a population batch: a hash of its sorted run ids (independent of worker count)."""
    return "b" + short_hash(sorted(run_ids), n=ID_HEX - 1)


def tensor_name(ckpt: str, param: str) -> str:
    """Name of one parameter of one checkpoint inside a safetensors shard."""
    return f"{ckpt}/{param}"


def shard_path(stage: str, batch: str, ext: str) -> str:
    """Path of a shard, relative to the output folder: ``shards/<stage>/<batch_id>.<ext>``."""
    return f"{SHARDS_DIR}/{stage}/{batch}.{ext}"


# The split rule's weights: a unit's position u in [0, 1) is frac(sum of weight x coordinate), a
# Kronecker (Weyl) sequence over its integer coordinates: the seed weighs the golden ratio's
# fractional part, grid axis k the fractional part of the square root of the k-th prime after 3
# (5 is skipped: its root is linear in the golden ratio). Irrational, rationally independent
# weights spread the units of a config evenly over [0, 1), so each split gets about its fraction.
GOLDEN = (5**0.5 - 1) / 2
AXIS_PRIMES = (2, 3, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73)
SPLIT_BY = ("run", "cell")  # or a dotted recipe key, e.g. task.index


def split_position(
    seed: int | None, grid_index: tuple[int, ...], sample_index: int | None
) -> float:
    """A unit's position in [0, 1): ``frac(GOLDEN * seed + sum_k sqrt(p_k) * grid_index[k] +
    sqrt(p_K) * sample_index)`` (``seed`` None: a whole grid cell is the unit).

    Depends on the unit's own coordinates only, so a grown recipe (more seeds, more grid values
    appended to a list, more sampled points) keeps every existing unit where it was.

    Example:
        >>> split_position(0, (0, 0), None), round(split_position(1, (), None), 6)
        (0.0, 0.618034)
    """
    weights = [p**0.5 % 1.0 for p in AXIS_PRIMES]
    if len(grid_index) >= len(weights):
        raise ValueError(f"the split rule has weights for {len(weights) - 1} grid axes")
    total = sum(w * i for w, i in zip(weights, grid_index, strict=False))
    total += GOLDEN * (seed or 0) + weights[len(grid_index)] * (sample_index or 0)
    return total % 1.0


def value_position(value) -> float:
    """The position in [0, 1) of a unit named by a recipe value (``output.split_by: task.index``):
    ``frac(GOLDEN * value)`` for an integer, else the first 15 hex digits of sha256 over its
    canonical JSON."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (GOLDEN * value) % 1.0
    return int(hashlib.sha256(canonical_json(value).encode()).hexdigest()[:15], 16) / 16**15


def split_of(position: float, fractions: dict[str, float]) -> str:
    """The split whose interval holds ``position``: the splits take consecutive intervals of
    [0, 1) in the order ``fractions`` lists them (train 0.7, validation 0.15, test 0.15: train is
    [0, 0.7), validation [0.7, 0.85), test [0.85, 1)).

    Example:
        >>> split_of(0.8, {"train": 0.7, "validation": 0.15, "test": 0.15})
        'validation'
    """
    total = 0.0
    names = list(fractions)
    for name in names:
        total += fractions[name]
        if position < total:
            return name
    return names[-1]


def data_file(config: str, split: str, part: str, index: int) -> str:
    """Path of one Parquet file of the built dataset, relative to its folder:
    ``data/<config>/<split>-<part>-<index:05d>.parquet``. A part is one train batch's rows, so a
    grown store adds files and leaves the others' names (and bytes) as they were; the Hub's
    ``data/<config>/<split>-*.parquet`` pattern reads them all."""
    return f"{DATA_DIR}/{config}/{split}-{part}-{index:05d}.parquet"
