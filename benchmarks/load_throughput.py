"""Read throughput of a zoo's weights column, against a raw float32 memmap of the same floats.

Measures, in one run, on one thread (``torch.set_num_threads(1)``), warm page cache:

- ``datasets.load_dataset(folder, config, split).with_format("torch")`` iterated in batches of
  256 (the Arrow cache ``load_dataset`` prepares once is timed apart, as "prepare");
- ``zoo.iter_weights`` on the same dataset (its memory-mapped Arrow table, one copy a batch);
- the same through ``streaming=True`` (Parquet decoded as it is read), for the zoo's own files
  and for the weights written ``BYTE_STREAM_SPLIT`` and ``PLAIN``;
- the physical reference: the same (N, P) float32 matrix as a ``.npy`` memmap, batches of 256
  copied out;

and the Parquet size as a fraction of the raw float32 bytes: the zoo's files (``zoo build`` picks
the smaller weights encoding per file) and the same table written all ``BYTE_STREAM_SPLIT`` and
all ``PLAIN`` by the same writer.

The zoo: ``zoo.run`` of a cnn_small-on-digits recipe with many seeds (trained, real weights;
resumable: a second run reuses it), under ``--out``.

Run:  python benchmarks/load_throughput.py [--seeds 500] [--out /tmp/zoo_load_bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

import zoo
from zoo.dist.options import ExecOptions
from zoo.recipe import recipe_from_dict
from zoo.stages.build import parquet as build

BATCH = 256


def bench_recipe(out: Path, seeds: int) -> zoo.Recipe:
    return recipe_from_dict(
        {
            "schema_version": 1,
            "name": "load_bench",
            "task": {"name": "digits"},
            "model": {"arch": "cnn_small", "width": 16, "activation": "relu"},
            "train": {"optimizer": "adam", "lr": 0.003, "batch_size": 64, "epochs": 5},
            "seeds": seeds,
            "checkpoints": {"epochs": [0, 1, 2, 3, 4, 5]},
            "execution": {"workers": 0, "population_size": 64},
            "output": {"dir": str(out), "splits": {"train": 1.0}},
        }
    )


def best_of(readers: dict, repeats: int) -> dict[str, float]:
    """Fastest of ``repeats`` timed calls of each reader, after one untimed warm-up call each;
    the readers take turns, so a load spike on the shared machine hits all of them alike."""
    for fn in readers.values():
        fn()
    best = dict.fromkeys(readers, float("inf"))
    for _ in range(repeats):
        for name, fn in readers.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def iterate_datasets(ds) -> int:
    n = 0
    for batch in ds.iter(batch_size=BATCH):
        w = batch["weights"]  # (B, P) float32 tensor
        n += w.shape[0]
    return n


def iterate_memmap(m: np.ndarray) -> int:
    n = 0
    for i in range(0, m.shape[0], BATCH):
        w = torch.from_numpy(np.array(m[i : i + BATCH]))  # copied out of the page cache
        n += w.shape[0]
    return n


def write_variant(table: pa.Table, folder: Path, encoding: str | None) -> int:
    """Write ``table`` with the build's writer (``None``: its per-file choice); total bytes."""
    shutil.rmtree(folder, ignore_errors=True)
    paths = build.write_parquet_files(folder, "c", "train", table, weights_encoding=encoding)
    return sum((folder / p).stat().st_size for p in paths)


def streamed(folder: Path):
    files = sorted(str(p) for p in folder.rglob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)
    return ds.select_columns(["weights"]).with_format("torch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("/tmp/zoo_load_bench"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder, config, table = build_zoo(args.out, args.seeds)
    flat = table["weights"].combine_chunks().values.to_numpy().reshape(table.num_rows, -1)
    n, p = flat.shape
    npy = args.out / "weights.npy"
    np.save(npy, flat)
    memmap = np.load(npy, mmap_mode="r")  # (N, P) float32, mapped once like datasets' table
    variants = {
        "per file (zoo build)": None,
        "BYTE_STREAM_SPLIT": "BYTE_STREAM_SPLIT",
        "PLAIN": "PLAIN",
    }
    sizes = {n: write_variant(table, args.out / f"variant_{e}", e) for n, e in variants.items()}
    cache = args.out / "hf_cache"
    shutil.rmtree(cache, ignore_errors=True)
    t0 = time.perf_counter()
    ds = datasets.load_dataset(str(folder), config, split="train", cache_dir=str(cache))
    prepare = time.perf_counter() - t0
    torch_ds = ds.with_format("torch", columns=["weights"])
    readers = {
        "raw .npy memmap (reference)": lambda: iterate_memmap(memmap),
        "load_dataset().with_format('torch')": lambda: iterate_datasets(torch_ds),
        "zoo.iter_weights(load_dataset())": lambda: sum(len(w) for w in zoo.iter_weights(ds)),
    }
    for name, e in variants.items():
        stream = streamed(args.out / f"variant_{e}")
        readers[f"streaming=True, {name}"] = lambda s=stream: iterate_datasets(s)
    stream = streamed(args.out / "variant_None")
    readers["zoo.iter_weights(streaming=True)"] = lambda: sum(map(len, zoo.iter_weights(stream)))
    timings = best_of(readers, args.repeats)
    report(n, p, n * p * 4, timings, prepare, sizes, table)


def build_zoo(out: Path, seeds: int) -> tuple[Path, str, pa.Table]:
    """Train and build the benchmark zoo (or reuse it); its folder, config and table."""
    t0 = time.perf_counter()
    folder = zoo.run(bench_recipe(out / "zoo", seeds), ExecOptions(workers=0))
    print(f"zoo: {folder} ({time.perf_counter() - t0:.0f} s to train/build or reuse)")
    config = next(iter(json.loads((folder / "layout.json").read_text())))
    files = sorted((folder / "data" / config).glob("train-*.parquet"))
    return folder, config, pa.concat_tables(pq.read_table(f) for f in files)


def report(n, p, raw, timings, prepare, sizes, table) -> None:
    ref = timings["raw .npy memmap (reference)"]
    print(
        f"\n{n} rows x {p} float32 weights = {raw / 2**20:.1f} MiB raw; batches of {BATCH}; "
        f"1 thread; warm page cache; best of repeats"
    )
    print(f"\n{'reader':40s} {'GB/s':>8s} {'vs memmap':>10s}")
    for name, t in timings.items():
        print(f"{name:40s} {raw / t / 1e9:8.2f} {ref / t:10.2f}")
    print(f"{'(prepare: first load_dataset, Parquet -> Arrow cache)':56s} {prepare:.2f} s")
    print(f"\n{'Parquet + zstd (all columns), weights':40s} {'bytes':>12s} {'of raw f32':>10s}")
    for name, size in sizes.items():
        print(f"{name:40s} {size:12,d} {size / raw:10.3f}")
    meta = table.drop_columns(["weights"]).nbytes
    print(f"(the other {table.num_columns - 1} columns: {meta / 2**20:.1f} MiB uncompressed)")


if __name__ == "__main__":
    main()
