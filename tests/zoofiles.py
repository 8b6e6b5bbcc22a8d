"""A synthetic multi-file zoo folder, written by the build's own Parquet writer: the rows of
``batches`` train batches (one file each), ``epochs`` checkpoints of ``runs`` runs, a learning
rate grid, random float32 weights. Big enough to measure what a filtered read touches, made
in a second without training. Not a test module (no ``test_`` prefix): ``tests/test_load.py``
and ``benchmarks/load_throughput.py`` use it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from zoo.layout import Layout, PermutationSpec
from zoo.naming import CARD_FILE, LAYOUT_FILE
from zoo.stages.build import parquet

CONFIG = "synthetic_w8"
LRS = (0.01, 0.05, 0.1, 0.2)


def synthetic_layout(params: int) -> Layout:
    """A one-layer layout of ``params`` parameters (``params`` a multiple of 9: 8 units)."""
    inputs = params // 8 - 1
    shapes = ((8, inputs), (8,))
    return Layout(("0.weight", "0.bias"), shapes, {"arch": "mlp"}, PermutationSpec({}, {}))


def synthetic_zoo(
    folder: Path, *, batches: int = 4, runs: int = 128, epochs: int = 10, params: int = 520
) -> Path:
    """Write the zoo under ``folder`` (``data/``, ``layout.json``, a card); rows ordered as the
    build orders them (epoch, then the lr grid, then seed) and written with its row groups."""
    rng = np.random.default_rng(0)
    layout = synthetic_layout(params)
    for b in range(batches):
        epoch = np.repeat(np.arange(epochs, dtype=np.int32), runs)
        seed = np.tile(np.arange(runs) % (runs // len(LRS)), epochs) + 1000 * b
        lr = np.tile(np.repeat(LRS, runs // len(LRS)), epochs)
        flat = (0.1 * rng.standard_normal((runs * epochs, layout.num_params))).astype(np.float32)
        table = pa.table(
            {
                "checkpoint_id": [f"r{b}-{s}-{e}" for s, e in zip(seed, epoch, strict=True)],
                "epoch": epoch,
                "step": epoch.astype(np.int64) * 10,
                "seed": seed,
                "train__lr": lr,
                "test_acc": rng.random(len(epoch)),
                "weights": pa.FixedSizeListArray.from_arrays(
                    pa.array(flat.reshape(-1)), layout.num_params
                ),
            }
        )
        for rel, data in parquet.encode_files(CONFIG, "train", f"b{b:02d}", table):
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
    (folder / LAYOUT_FILE).write_text(json.dumps({CONFIG: layout.to_dict()}))
    (folder / CARD_FILE).write_text(CARD)
    return folder


# the card's YAML that `datasets.load_dataset(folder, CONFIG)` reads the files by
CARD = f"""---
configs:
- config_name: {CONFIG}
  data_files:
  - split: train
    path: data/{CONFIG}/train-*.parquet
---
A synthetic zoo (random weights) for tests and benchmarks.
"""
