"""Build throughput and memory: the streaming build (one part per train batch) against the
in-memory build it replaced (benchmarks/build_reference.py), on synthetic stores.

A store is made quickly, without training: a teacher_student MLP recipe (784 inputs, width 64,
4 classes: 50,500 parameters, 202 KB a checkpoint) whose population batches are written by the
store's own writer (``zoo.stages.train.write_train_shards``) with random weights and metrics.

1. A small store (``--small-mb``): the reference and the streaming build side by side, rows and
   weights compared bit for bit; time, MB/s of store read, peak memory.
2. A large store (``--gb``, 10 GB by default): the streaming build alone (the reference would need
   about 5x the store in memory): time, MB/s, peak memory above the interpreter, and its ratio to
   the store's size.
3. The same build from scratch with 1 and 2 Dask workers (``zoo build --workers N``).
4. The large store grown by 5% (more seeds): the rebuild's rewritten bytes against the whole.

Every build runs in a child process that reports its own peak RSS (and its Dask workers'), so
the figures are not the parent's. Targets (issue 18): peak memory independent of the store's
size (<= 1 GB above the interpreter at 10 GB), >= 100 MB/s per worker, 2 workers >= 1.6x one,
a grown-by-5% zoo rewrites <= 10% of its bytes.

Run alone on an idle machine:  python benchmarks/build_throughput.py [--quick] [--gb 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

P_INPUTS, WIDTH, CLASSES, EPOCHS = 784, 64, 4, 9  # 10 checkpoints a run (epochs 0..9)


def recipe_for(out: Path, cells: int, seeds: int):
    """``cells`` learning rates x ``seeds`` seeds of the benchmark's MLP."""
    from zoo.recipe import recipe_from_dict

    return recipe_from_dict(
        {
            "schema_version": 1,
            "name": "build_bench",
            "task": {"name": "teacher_student", "input_dim": P_INPUTS, "n_classes": CLASSES},
            "model": {"arch": "mlp", "width": WIDTH, "depth": 1, "activation": "relu"},
            "train": {"optimizer": "sgd", "lr": 0.1, "batch_size": 64, "epochs": EPOCHS},
            "grid": {"train.lr": [round(0.001 * (i + 1), 6) for i in range(cells)]},
            "seeds": seeds,
            "checkpoints": {"every": 1},
            "execution": {"workers": 0, "population_size": 64, "batch_memory_mb": 100000},
            "output": {"dir": str(out)},
        }
    )


def write_store(recipe) -> int:
    """Random weights and metrics for every batch the store lacks, through the store's writer;
    returns the store's bytes."""
    from zoo.nn.architectures import build_model
    from zoo.stages.plan import plan
    from zoo.stages.train import TrainResult, write_train_shards
    from zoo.store.manifest import Manifest
    from zoo.tasks import load_task

    out = recipe.out_dir
    manifest = Manifest(out)
    stored = manifest.stored_checkpoints("train")
    task = load_task(recipe.resolved["task"])
    _, layout = build_model(recipe.resolved["model"], task.input_shape, task.n_classes)
    rng = np.random.default_rng(0)
    for batch in plan(recipe, stored).batches:
        result = TrainResult(layout)
        for run in batch.runs:
            for epoch in run.checkpoints:
                ckpt = f"{run.run_id}-e{epoch:04d}"
                result.weights[ckpt] = _tensor(rng.standard_normal(layout.num_params, np.float32))
                loss, acc = rng.random(2)
                result.rows.append(
                    {
                        "checkpoint_id": ckpt,
                        "run_id": run.run_id,
                        "cell_id": run.cell_id,
                        "batch_id": batch.batch_id,
                        "epoch": epoch,
                        "step": epoch * 16,
                        "status": "ok",
                        "diverged_epoch": None,
                        "train_loss": float(loss),
                        "train_acc": float(acc),
                        "test_loss": float(loss),
                        "test_acc": float(acc),
                    }
                )
        manifest.append(write_train_shards(out, batch, result))
    return sum(r.bytes for r in manifest.records("train"))


def _tensor(a: np.ndarray):
    import torch

    return torch.from_numpy(a)


# --- a build in a child process, with its peak memory --------------------------------------------


def child(args) -> None:
    """Run one build here and print a JSON line: seconds, peak RSS of this process and of its
    Dask workers, the interpreter's RSS before the build."""
    import psutil
    import torch

    torch.set_num_threads(1)
    from zoo.dist.options import ExecOptions
    from zoo.dist.pipeline import build
    from zoo.stages.build import build_dataset

    recipe = recipe_for(Path(args.out), args.cells, args.seeds)
    me = psutil.Process()
    base = me.memory_info().rss
    peaks = {"driver": base, "workers": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            peaks["driver"] = max(peaks["driver"], me.memory_info().rss)
            kids = [p.memory_info().rss for p in me.children(recursive=True) if p.is_running()]
            peaks["workers"] = max([peaks["workers"], *kids])
            time.sleep(0.05)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    start = time.perf_counter()
    if args.reference:
        sys.path.insert(0, str(Path(__file__).parent))
        from build_reference import reference_build

        reference_build(recipe, Path(args.out), Path(args.out) / "reference")
    elif args.workers:
        build(recipe, ExecOptions(workers=args.workers))
    else:
        build_dataset(recipe, recipe.out_dir)
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    print(json.dumps({"seconds": seconds, "base": base, **peaks}))


def run_child(out: Path, cells: int, seeds: int, reference=False, workers=0) -> dict:
    cmd = [sys.executable, __file__, "--child", "--out", str(out)]
    cmd += ["--cells", str(cells), "--seeds", str(seeds)]
    cmd += ["--workers", str(workers)] + (["--reference"] if reference else [])
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    if done.returncode:
        raise SystemExit(f"build failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def forget_build(out: Path) -> None:
    """Delete the dataset folder and its build records: the next build starts from scratch."""
    from zoo.store.manifest import Manifest

    shutil.rmtree(out / "dataset", ignore_errors=True)
    manifest = Manifest(out)
    manifest.drop(r.path for r in manifest.records("build"))


def same_rows(out: Path) -> tuple[int, bool]:
    """Rows of the streaming build and the reference: equal, weights bit for bit? (The
    ``metadata`` config, every row again without weights, is the new build's addition.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zoo.naming import METADATA_CONFIG

    files = sorted((out / "dataset/data").rglob("*.parquet"))
    new = pa.concat_tables(pq.read_table(p) for p in files if METADATA_CONFIG not in p.parts)
    ref = pa.concat_tables(pq.read_table(p) for p in sorted((out / "reference").glob("*.parquet")))
    new, ref = new.sort_by("checkpoint_id"), ref.sort_by("checkpoint_id")
    columns = [c for c in ref.column_names if c in new.column_names]
    equal = new.num_rows == ref.num_rows and all(
        new[c].combine_chunks().equals(ref[c].combine_chunks().cast(new[c].type)) for c in columns
    )
    return new.num_rows, equal


def loads_with_datasets(folder: Path, checkpoints: int) -> str:
    """``datasets.load_dataset`` on the large dataset: every config and split streamed (a full
    load would first copy it into an Arrow cache); rows counted from the Parquet footers."""
    import datasets
    import pyarrow.parquet as pq

    configs = datasets.get_dataset_config_names(str(folder))
    rows, firsts = 0, []
    for config in configs:
        for split in datasets.get_dataset_split_names(str(folder), config):
            ds = datasets.load_dataset(str(folder), config, split=split, streaming=True)
            firsts.append(len(next(iter(ds)).get("weights") or []))
    files = [p for p in (folder / "data").rglob("*.parquet") if "metadata" not in p.parts]
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
    return (
        f"load_dataset: configs {configs}, a first row streamed from each split (weights of "
        f"{sorted(set(firsts))} floats); {rows:,} rows in the data files for {checkpoints:,} "
        f"checkpoints: {'equal' if rows == checkpoints else 'DIFFERENT'}"
    )


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 MB and 1 GB stores")
    parser.add_argument("--gb", type=float, default=10.0, help="size of the large store")
    parser.add_argument("--small-mb", type=float, default=500.0, help="size of the small store")
    parser.add_argument("--out", default="/tmp/zoo_build_bench")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cells", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seeds", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    import torch

    torch.set_num_threads(1)
    if args.quick:
        args.gb, args.small_mb = 1.0, 200.0
    per_run = 10 * (P_INPUTS * WIDTH + WIDTH + WIDTH * CLASSES + CLASSES) * 4
    root = Path(args.out)
    lines = [
        "| store | build | seconds | MB/s | peak RSS above interpreter | / store |",
        "|---|---|---|---|---|---|",
    ]

    # 1. small store: reference vs streaming
    seeds = 100
    small_cells = max(1, int(args.small_mb * 2**20 // per_run) // seeds)
    small = root / "small"
    shutil.rmtree(small, ignore_errors=True)
    size = write_store(recipe_for(small, small_cells, seeds))
    for name, kw in (("in-memory (before)", {"reference": True}), ("streaming", {})):
        r = run_child(small, small_cells, seeds, **kw)
        above = max(r["driver"], r["workers"]) - r["base"]
        lines.append(
            f"| {mb(size)} | {name} | {r['seconds']:.1f} | "
            f"{size / 2**20 / r['seconds']:.0f} | {mb(above)} | {above / size:.2f} |"
        )
    rows, equal = same_rows(small)
    print(
        f"small store: {rows:,} rows; streaming == in-memory (rows, weights bit for bit): {equal}"
    )

    # 2. large store: streaming alone, in this process's child, then 1 vs 2 workers
    cells = max(1, int(args.gb * 2**30 // per_run) // seeds)
    large = root / "large"
    shutil.rmtree(large, ignore_errors=True)
    t0 = time.perf_counter()
    size = write_store(recipe_for(large, cells, seeds))
    large_runs = cells * seeds
    written = time.perf_counter() - t0
    print(f"large store: {mb(size)}, {large_runs * 10:,} checkpoints (written in {written:.0f} s)")
    speeds = {}
    for workers in (0, 1, 2):
        forget_build(large)
        r = run_child(large, cells, seeds, workers=workers)
        above = max(r["driver"], r["workers"]) - r["base"]
        speeds[workers] = size / r["seconds"]
        label = "streaming" if not workers else f"streaming, {workers} Dask worker(s)"
        lines.append(
            f"| {mb(size)} | {label} | {r['seconds']:.1f} | "
            f"{size / 2**20 / r['seconds']:.0f} | {mb(above)} | {above / size:.3f} |"
        )

    # 3. grow by 5%: more seeds
    before = {
        p: (p.stat().st_size, p.stat().st_mtime_ns)
        for p in (large / "dataset/data").rglob("*.parquet")
    }
    total = sum(s for s, _ in before.values())
    grown = int(seeds * 1.05)
    grown_runs = cells * grown
    write_store(recipe_for(large, cells, grown))
    r = run_child(large, cells, grown, workers=2)
    after = {
        p: (p.stat().st_size, p.stat().st_mtime_ns)
        for p in (large / "dataset/data").rglob("*.parquet")
    }
    rewritten = sum(s for p, (s, m) in after.items() if before.get(p) != (s, m))
    print("\n".join(lines))
    grown_total = sum(s for s, _ in after.values())
    print(
        f"\n2 workers / 1 worker: {speeds[2] / speeds[1]:.2f}x; grown by 5% "
        f"({grown_runs - large_runs} runs): rebuild {r['seconds']:.1f} s, rewrote "
        f"{mb(rewritten)} of {mb(grown_total)} ({rewritten / grown_total:.3f}); before: {mb(total)}"
    )
    print(loads_with_datasets(large / "dataset", grown_runs * 10), flush=True)
    # A stream left after its first row hangs the interpreter's exit on pyarrow 26 with datasets
    # 5.2 (apache/arrow#45214: datasets applies its workaround only for pyarrow <= 24).
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
