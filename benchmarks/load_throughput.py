"""Reading a zoo: weights against a raw float32 memmap, a shuffled DataLoader epoch per format,
and filtered loading (a tenth of a multi-file zoo) against load-everything-then-filter.

Three sections, each measured side by side in one run, one thread, warm page cache:

1. ``sequential``: a trained cnn_small-on-digits zoo (``--seeds``, resumable under ``--out``)
   read in batches of 256 by ``load_dataset().with_format("torch")``, by what ``zoo.load``
   returns (``ZooDataset.iter``), by ``zoo.iter_weights`` and by ``streaming=True``, against
   the same (N, P) matrix as a ``.npy`` memmap; and the Parquet size against the raw float32
   bytes (the build's per-file encoding choice, all ``BYTE_STREAM_SPLIT``, all ``PLAIN``).
2. ``dataloader``: one epoch of ``DataLoader(dataset, batch_size=256, shuffle=True)`` as users
   write it, over a synthetic zoo of ``--rows`` rows of 4,968 float32 weights (10 files, written
   by the build's Parquet writer, read through ``load_dataset``): the torch and numpy formats,
   the arrow format with a batch sampler, and ``zoo.load`` (weights + a target, and every
   column), against a raw memmap read one row a ``__getitem__`` (how a user writes a memmap
   dataset) and one gather a batch (``__getitems__``: the floor). Target (issue 17): zoo.load
   >= 0.5 of the memmap's batched gather, over 100,000 rows.
3. ``filtered``: the rows of the last of 10 epochs (a tenth) of the same zoo: the bytes
   ``zoo.load(where="epoch == 9")`` reads against the files' size (target <= 0.2), and its time
   against reading every file then filtering (pyarrow) and ``load_dataset`` then ``filter``;
   then the same from an in-process fake Hub (``tests/fakehub.py``; HTTP range requests), the
   bytes it sent counted by the fake.

Run:    python benchmarks/load_throughput.py [--rows 100000] [--seeds 500] [--section NAME]
Quick:  python benchmarks/load_throughput.py --quick     # 2,400 rows, 20 seeds: under a minute
Expect: markdown tables with ratios and PASS/MISS lines (never a non-zero exit on a miss); the
        full run writes about 2 GB under --out (default /tmp/zoo_load_bench).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

import zoo
from zoo.dist.options import ExecOptions
from zoo.hub.query import ZooFiles, read_filtered
from zoo.naming import LAYOUT_FILE
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


def best_of(readers: dict, repeats: int, once: set = frozenset()) -> dict[str, float]:
    """Fastest of ``repeats`` timed calls of each reader, after one untimed warm-up call each;
    the readers take turns, so a load spike on the shared machine hits all of them alike.
    Readers in ``once`` (the slow references) are timed once, without a warm-up."""
    for name, fn in readers.items():
        if name not in once:
            fn()
    best = dict.fromkeys(readers, float("inf"))
    for i in range(repeats):
        for name, fn in readers.items():
            if name in once and i:
                continue
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


def sequential(args) -> None:
    """Section 1: a split's weights in order, against a raw memmap; Parquet sizes."""
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
    fast, _ = zoo.load(folder, config, split="train")
    fast = fast.with_format("torch", columns=["weights"])
    readers = {
        "raw .npy memmap (reference)": lambda: iterate_memmap(memmap),
        "load_dataset().with_format('torch')": lambda: iterate_datasets(torch_ds),
        "zoo.load() (ZooDataset).iter()": lambda: iterate_datasets(fast),
        "zoo.iter_weights(load_dataset())": lambda: sum(len(w) for w in zoo.iter_weights(ds)),
    }
    for name, e in variants.items():
        stream = streamed(args.out / f"variant_{e}")
        readers[f"streaming=True, {name}"] = lambda s=stream: iterate_datasets(s)
    stream = streamed(args.out / "variant_None")
    readers["zoo.iter_weights(streaming=True)"] = lambda: sum(map(len, zoo.iter_weights(stream)))
    timings = best_of(readers, args.repeats)
    report(n, p, n * p * 4, timings, prepare, sizes, table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("/tmp/zoo_load_bench"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the synthetic zoo")
    parser.add_argument("--quick", action="store_true", help="small zoos, 2 repeats")
    parser.add_argument(
        "--section", choices=["all", *SECTIONS], default="all", help="run one section"
    )
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.rows, args.repeats = 20, 2_560, 2
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, fn in SECTIONS.items():
        if args.section in ("all", name):
            print(f"\n## {name}\n")
            fn(args)


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


# --- section 2: a DataLoader epoch with shuffling ---------------------------------------------

BATCHES, PARAMS = 10, 4968  # synthetic zoo: 10 files (train batches), cnn_small-sized rows


def helpers():
    """``tests/zoofiles.py`` (the synthetic zoo) and ``tests/fakehub.py`` (the in-process fake
    Hub), imported from the repository root (site-packages may hold another ``tests``)."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests import fakehub, zoofiles

    return zoofiles, fakehub


def config() -> str:
    return helpers()[0].CONFIG


def synthetic(args, name: str) -> Path:
    """The synthetic zoo of ``args.rows`` rows (10 epochs x runs x files), written once."""
    folder = args.out / f"{name}_{args.rows}"
    if not (folder / LAYOUT_FILE).is_file():
        runs = max(4, args.rows // (10 * BATCHES) // 4 * 4)
        shutil.rmtree(folder, ignore_errors=True)
        helpers()[0].synthetic_zoo(folder, batches=BATCHES, runs=runs, epochs=10, params=PARAMS)
    return folder


class MemmapRows(torch.utils.data.Dataset):
    """The reference: a raw (N, P) float32 memmap as a map-style dataset, one row a call."""

    def __init__(self, memmap: np.ndarray, targets: np.ndarray):
        self.memmap, self.targets = memmap, targets

    def __len__(self) -> int:
        return len(self.memmap)

    def __getitem__(self, i: int) -> dict:
        return {"weights": torch.from_numpy(np.array(self.memmap[i])), "test_acc": self.targets[i]}


class MemmapBatches(MemmapRows):
    """The floor: the same memmap, a DataLoader's batch gathered in one fancy index."""

    def __getitems__(self, rows: list[int]) -> list[dict]:
        block = torch.from_numpy(self.memmap[np.asarray(rows)])
        pairs = zip(block, self.targets[rows], strict=True)
        return [{"weights": w, "test_acc": t} for w, t in pairs]


def epoch(dataset, collate=None, sampler=None) -> int:
    """One shuffled epoch, batches of 256 (``sampler``: a batch sampler, batch_size=None)."""
    generator = torch.Generator().manual_seed(0)
    if sampler is not None:
        loader = DataLoader(dataset, batch_size=None, sampler=sampler, collate_fn=collate)
    else:
        kwargs = {"collate_fn": collate} if collate else {}
        loader = DataLoader(dataset, BATCH, shuffle=True, generator=generator, **kwargs)
    n = 0
    for batch in loader:
        assert batch["weights"].dtype == torch.float32
        n += len(batch["weights"])
    return n


def arrow_to_torch(table) -> dict:
    """What a user who knows Arrow writes: the weights column to a (B, P) tensor."""
    column = table["weights"].combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
    return {
        "weights": torch.from_numpy(flat.copy()),
        "test_acc": torch.tensor(table["test_acc"].to_numpy(), dtype=torch.float32),
    }


def dataloader(args) -> None:
    """Section 2: one DataLoader epoch with shuffling, as users write it, per format."""
    folder = synthetic(args, "dataloader")
    ds = datasets.load_dataset(str(folder), config(), split="train", cache_dir=str(args.out / "c"))
    pair = ["weights", "test_acc"]
    flat = torch.cat(list(zoo.iter_weights(ds, 4096))).numpy()  # (N, P)
    np.save(args.out / "dl.npy", flat)
    memmap = np.load(args.out / "dl.npy", mmap_mode="r")
    targets = np.asarray(ds["test_acc"][:], dtype=np.float32)
    del flat
    fast, _ = zoo.load(folder, config(), split="train")
    fast_pair = fast.with_format("torch", columns=pair)
    batches = BatchSampler(RandomSampler(ds), BATCH, drop_last=False)
    readers = {
        "raw memmap, one row a __getitem__ (reference)": lambda: epoch(MemmapRows(memmap, targets)),
        "raw memmap, one gather a batch (floor)": lambda: epoch(MemmapBatches(memmap, targets)),
        "with_format('torch', columns=[weights, test_acc])": lambda: epoch(
            ds.with_format("torch", columns=pair)
        ),
        "with_format('numpy', columns=[weights, test_acc])": lambda: epoch(
            ds.with_format("numpy", columns=pair)
        ),
        "with_format('arrow') + batch sampler": lambda: epoch(
            ds.with_format("arrow", columns=pair), arrow_to_torch, batches
        ),
        "zoo.load() with_format(columns=[weights, test_acc])": lambda: epoch(fast_pair),
        "zoo.load(), every column": lambda: epoch(fast),
    }
    slow = {k for k in readers if "'torch'" in k or "'numpy'" in k}
    timings = best_of(readers, args.repeats, once=slow)
    rows = timings["raw memmap, one row a __getitem__ (reference)"]
    floor = timings["raw memmap, one gather a batch (floor)"]
    print(f"{len(ds):,} rows x {PARAMS} float32, batches of {BATCH}, shuffled, 1 thread\n")
    print("| reader | s/epoch | vs memmap, a row a call | vs memmap, a gather a batch |")
    print("|---|---|---|---|")
    for name, t in timings.items():
        print(f"| {name} | {t:.2f} | {rows / t:.2f} | {floor / t:.2f} |")
    best = floor / timings["zoo.load() with_format(columns=[weights, test_acc])"]
    mark = "PASS" if best >= 0.5 else "MISS"
    print(f"\n{mark}: zoo.load in a DataLoader, {best:.2f} of the memmap's batched gather (>= 0.5)")


# --- section 3: filtered loading ------------------------------------------------------------


def filtered(args) -> None:
    """Section 3: a tenth of a multi-file zoo (its last epoch), bytes and time, locally."""
    folder = synthetic(args, "dataloader")
    where = "epoch == 9"
    _, stats = read_filtered(ZooFiles.local(folder), config(), ["train"], where)
    readers = {
        "zoo.load(where=)": lambda: len(zoo.load(folder, config(), "train", where=where)[0]),
        "read every file, then filter (pyarrow)": lambda: (
            read_all(folder).filter(pc.field("epoch") == 9).num_rows
        ),
        "load_dataset(), then filter(input_columns=[epoch])": lambda: len(
            datasets_then_filter(folder, args.out / "filter_cache")
        ),
    }
    timings = best_of(readers, args.repeats, once=set(readers) - {"zoo.load(where=)"})
    print_filtered(stats, timings, "local folder")
    hub_filtered(folder if args.quick else synthetic_small(args), where, args.out / "hub_cache")


def read_all(folder: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(f) for f in sorted(folder.rglob("*.parquet")))


def datasets_then_filter(folder: Path, cache: Path):
    shutil.rmtree(cache, ignore_errors=True)  # load everything: the Arrow cache is made anew
    ds = datasets.load_dataset(str(folder), config(), split="train", cache_dir=str(cache))
    keep = lambda epochs: [e == 9 for e in epochs]  # noqa: E731
    return ds.filter(keep, input_columns=["epoch"], batched=True)


def print_filtered(stats, timings: dict, where: str) -> None:
    print(
        f"{where}: {stats.files} files, {stats.bytes_total / 2**20:.1f} MiB; rows of epoch 9 "
        f"(a tenth): read {stats.bytes_read / 2**20:.2f} MiB = {stats.fraction:.3f} of the bytes "
        f"({stats.row_groups_read}/{stats.row_groups} row groups, {stats.requests} reads)\n"
    )
    ref = timings["zoo.load(where=)"]
    print("| reader | s | vs zoo.load(where=) |\n|---|---|---|")
    for name, t in timings.items():
        print(
            f"| {name} | {t:.2f} | {t / ref:.1f}x slower |"
            if t != ref
            else f"| {name} | {t:.2f} | 1 |"
        )
    mark = "PASS" if stats.fraction <= 0.2 else "MISS"
    print(f"\n{mark}: a tenth of the zoo reads {stats.fraction:.3f} of its bytes (<= 0.2)")


def synthetic_small(args) -> Path:
    small = argparse.Namespace(**{**vars(args), "rows": 10_000})
    return synthetic(small, "hub")


def hub_filtered(folder: Path, where: str, cache: Path) -> None:
    """The same through the in-process fake Hub (tests/fakehub.py): the HTTP bytes it served
    to ``zoo.load(where=)``, and the time of that against downloading every file with
    ``datasets.load_dataset`` and then filtering."""
    import huggingface_hub
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils._http import default_client_factory

    fake = helpers()[1].FakeHub({"hf_bench": ("bench", "write")})
    shutil.rmtree(cache, ignore_errors=True)
    constants.HF_HUB_DISABLE_XET, constants.HF_HUB_CACHE = True, str(cache / "hub")
    huggingface_hub.set_client_factory(fake.client)
    try:
        api = HfApi(token="hf_bench")
        api.create_repo("bench/zoo", repo_type="dataset")
        api.upload_folder(folder_path=folder, repo_id="bench/zoo", repo_type="dataset")
        total = sum(f.stat().st_size for f in folder.rglob("*.parquet"))
        fake.served.clear()
        t0 = time.perf_counter()
        ds, _ = zoo.load("bench/zoo", config(), "train", where=where, token="hf_bench")
        seconds = time.perf_counter() - t0
        sent = sum(n for path, n in fake.served if path.endswith(".parquet"))
        t0 = time.perf_counter()
        everything = datasets.load_dataset(
            "bench/zoo",
            config(),
            split="train",
            cache_dir=str(cache / "datasets"),
            token="hf_bench",
        )
        everything.filter(lambda e: [x == 9 for x in e], input_columns=["epoch"], batched=True)
        download = time.perf_counter() - t0
    finally:
        huggingface_hub.set_client_factory(default_client_factory)
    print(
        f"\nHub (in-process fake, range requests): zoo.load(where=) {len(ds):,} rows in "
        f"{seconds:.2f} s, the Hub sent {sent / 2**20:.2f} of {total / 2**20:.1f} MiB of Parquet "
        f"= {sent / total:.3f}; load_dataset() then filter: {download:.2f} s"
    )


SECTIONS = {"sequential": sequential, "dataloader": dataloader, "filtered": filtered}


if __name__ == "__main__":
    main()
