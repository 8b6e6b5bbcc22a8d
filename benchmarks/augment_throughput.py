"""Augmentation throughput: rows/s of each weight-space transform, and the cost of the default
augmentation pipeline in a torch DataLoader epoch, side by side with plain loading.

Rows are CNN-s weight vectors (2,464 parameters, freshly initialized, tanh and relu layouts),
in batches of 256, one thread (``torch.set_num_threads(1)``). Each transform is timed as the
best of ``--repeat`` runs over ``--batches`` batches.

DataLoader epoch: a real CNN-s zoo (built in seconds into a temporary folder under /tmp, every
column a zoo row has, read back with ``datasets.load_dataset``) tiled to ``--rows`` rows, in
torch format, ``batch_size=256``, shuffled by a seeded generator, ``num_workers=0``; one epoch
with the default collate against one with ``Augmenter(layout).collate`` (the default
pipeline: the layout's exact symmetries, here permutations and sign flips). Twice: with every
column of a zoo row (what ``load_dataset`` gives), and with only ``weights``, ``test_acc``
and ``epoch`` selected, where plain loading is much cheaper and the ratio is harder to meet.
Target (issue 8): slowdown <= 1.3x on CPU.

Allocator: each transform allocates a few MB per batch; glibc serves blocks that large with
fresh ``mmap`` pages, and page faults are slow on some VMs (2-4x on the dev box). To see the
transforms without that cost, run with ``MALLOC_MMAP_THRESHOLD_=268435456
MALLOC_TRIM_THRESHOLD_=268435456`` (or jemalloc/tcmalloc); the script changes nothing itself.

Run:      python benchmarks/augment_throughput.py
Quick:    python benchmarks/augment_throughput.py --quick
Expect:   a markdown table of rows/s per transform, then the DataLoader table and a PASS/MISS
          line (never a non-zero exit on a miss). Check `uptime` first: other work skews it.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import datasets
import torch
from torch.utils.data import DataLoader

from zoo.dist.pipeline import run
from zoo.layout import Layout, flatten
from zoo.nn.architectures import build_model
from zoo.recipe import recipe_from_dict
from zoo.store.dataset import load_layout
from zoo.weightspace.augment import (
    Augmenter,
    Dropout,
    Erase,
    Mixup,
    Noise,
    Permute,
    Prune,
    Rescale,
    SignFlip,
    augment,
    default_augmentations,
)

BATCH = 256
TARGET = 1.3


def cnn_s_rows(n: int, activation: str) -> tuple[torch.Tensor, object]:
    """``n`` freshly initialized CNN-s models as rows ``(n, 2464)``."""
    torch.manual_seed(0)
    cfg = {"arch": "cnn_s", "activation": activation}
    _, layout = build_model(cfg, (1, 28, 28), 10)
    rows = [flatten(build_model(cfg, (1, 28, 28), 10)[0].state_dict(), layout) for _ in range(n)]
    return torch.stack(rows), layout


def rows_per_second(rows, layout, transforms, batches: int, repeat: int) -> float:
    targets = {"test_acc": torch.rand(rows.shape[0], dtype=torch.float64)}
    best = float("inf")
    for r in range(repeat):
        start = time.perf_counter()
        for b in range(batches):
            augment(rows, layout, transforms, seed=r * batches + b, targets=targets)
        best = min(best, time.perf_counter() - start)
    return rows.shape[0] * batches / best


def transform_table(batches: int, repeat: int) -> None:
    tanh_rows, tanh = cnn_s_rows(BATCH, "tanh")
    relu_rows, relu = cnn_s_rows(BATCH, "relu")
    cases = [
        ("permute", tanh, [Permute()]),
        ("sign_flip (tanh)", tanh, [SignFlip()]),
        ("rescale (relu)", relu, [Rescale()]),
        ("noise", tanh, [Noise(0.05)]),
        ("dropout", tanh, [Dropout(0.05)]),
        ("erase", tanh, [Erase()]),
        ("prune (row)", tanh, [Prune()]),
        ("prune (per layer)", tanh, [Prune(per_layer=True)]),
        ("mixup (weights)", tanh, [Mixup(0.2)]),
        ("mixup (weights + targets)", tanh, [Mixup(0.2, targets=("test_acc",))]),
        ("mixup (aligned)", tanh, [Mixup(0.2, aligned=True)]),
        ("default pipeline (tanh)", tanh, default_augmentations(tanh)),
        ("default pipeline (relu)", relu, default_augmentations(relu)),
    ]
    print(f"\n### Transforms on batches of {BATCH} CNN-s rows (2,464 params), 1 thread\n")
    print("| transform | rows/s | ms / batch |")
    print("|---|---:|---:|")
    for name, layout, chain in cases:
        rows = tanh_rows if layout is tanh else relu_rows
        slow = any(getattr(t, "aligned", False) for t in chain)
        rate = rows_per_second(rows, layout, chain, 1 if slow else batches, 1 if slow else repeat)
        print(f"| {name} | {rate:,.0f} | {1000 * BATCH / rate:.2f} |")


def zoo_dataset(n_rows: int, workdir: Path) -> tuple[datasets.Dataset, Layout]:
    """A real CNN-s zoo split (every column a zoo row has), tiled to ``n_rows`` rows.

    Built with ``zoo.run`` on 256 Fashion-MNIST images (or random 28x28 images where the
    idx files are missing), 1 epoch, so it takes seconds; the rows' weights are what loading
    costs, not how well they were trained.
    """
    recipe = recipe_from_dict(
        {
            "schema_version": 1,
            "name": "bench_cnn_s",
            "task": {"name": "fashion_mnist", "n_train": 256, "n_test": 256},
            "model": {"arch": "cnn_s", "activation": "tanh"},
            "train": {"optimizer": "adam", "lr": 0.001, "batch_size": 64, "epochs": 1},
            "seeds": 16,
            "checkpoints": {"epochs": [0, 1]},
            "execution": {"workers": 0},
            "output": {"dir": str(workdir / "zoo")},
        }
    )
    folder = run(recipe)
    parts = list(datasets.load_dataset(str(folder)).values())
    ds = datasets.concatenate_datasets(parts)
    ds = datasets.concatenate_datasets([ds] * -(-n_rows // len(ds))).select(range(n_rows))
    return ds.flatten_indices(), load_layout(folder)


def loader_epoch(ds, collate, seed: int = 0) -> float:
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(ds, batch_size=BATCH, shuffle=True, generator=gen, collate_fn=collate)
    start = time.perf_counter()
    for batch in loader:
        assert batch["weights"].shape[1] == 2464
    return time.perf_counter() - start


def loader_rows(ds, layout, repeat: int) -> dict[str, float]:
    """Seconds of one epoch per way of loading (best of ``repeat``)."""
    noisy = [*default_augmentations(layout), Noise(0.05)]
    cases = {
        "plain (default collate)": None,
        "Augmenter collate, no transforms": Augmenter(layout, [], seed=0).collate,
        "Augmenter collate, default pipeline": Augmenter(layout, seed=0).collate,
        "Augmenter collate, default + noise 0.05": Augmenter(layout, noisy, seed=0).collate,
    }
    return {name: min(loader_epoch(ds, c) for _ in range(repeat)) for name, c in cases.items()}


def loader_table(n_rows: int, repeat: int) -> dict[str, float]:
    """Both tables: every column of a zoo row, and only weights + two metric columns."""
    slowdown = {}
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        full, layout = zoo_dataset(n_rows, Path(tmp))
        narrow = full.select_columns(["weights", "test_acc", "epoch"])
        for label, ds in (("every column", full), ("weights, test_acc, epoch", narrow)):
            times = loader_rows(ds.with_format("torch"), layout, repeat)
            print(
                f"\n### One DataLoader epoch: {n_rows} CNN-s zoo rows, {label} "
                f"({len(ds.column_names)} columns); batch {BATCH}, shuffled, torch format, "
                f"num_workers=0, 1 thread, best of {repeat}\n"
            )
            print("| loading | epoch s | rows/s | vs plain |")
            print("|---|---:|---:|---:|")
            plain = times["plain (default collate)"]
            for name, sec in times.items():
                print(f"| {name} | {sec:.3f} | {n_rows / sec:,.0f} | {sec / plain:.2f}x |")
            slowdown[label] = times["Augmenter collate, default pipeline"] / plain
    return slowdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches and repeats")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=8192, help="rows of the DataLoader epoch")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.repeat, args.rows = 5, 2, 2048
    torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"datasets {datasets.__version__}"
    )
    transform_table(args.batches, args.repeat)
    for label, ratio in loader_table(args.rows, args.repeat).items():
        verdict = "PASS" if ratio <= TARGET else "MISS"
        print(
            f"{verdict}: default pipeline slows a DataLoader epoch ({label}) {ratio:.2f}x "
            f"(target <= {TARGET}x)"
        )


if __name__ == "__main__":
    main()
