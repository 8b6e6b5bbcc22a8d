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


def split_of(run: str, fractions: dict[str, float]) -> str:
    """The split a run belongs to, from a hash of its id (never from listing order).

    ``fractions`` maps split name -> fraction; they are taken in sorted-name order so the
    assignment does not depend on dict order. Every checkpoint of a run lands in the same split.
    """
    u = int(hashlib.sha256(f"split:{run}".encode()).hexdigest()[:15], 16) / 16**15
    total = 0.0
    names = sorted(fractions)
    for name in names:
        total += fractions[name]
        if u < total:
            return name
    return names[-1]


def data_file(config: str, split: str, index: int, count: int) -> str:
    """Path of one Parquet file of the built dataset (the Hub's naming)."""
    return f"{DATA_DIR}/{config}/{split}-{index:05d}-of-{count:05d}.parquet"
