"""Do weight-space augmentations help? Weight-space nets on the shipped CNN-s zoo, trained
without and with each augmentation, side by side.

Builds (or resumes) ``pipelines/fashion_cnn_s_init_lr.yaml`` into ``--out`` (under /tmp, not
the repository), then, on its train/test splits (by run), trains an MLP on flat weights and a
DeepSets network over neurons (``zoo.learn``) to predict ``--target``, ``--repeats`` seeds per
cell, one thread. Prints the weight-statistics baselines for reference, then one row per
augmentation: mean ± std of R² and Kendall τ on the test split, and the change against no
augmentation, called "helps"/"hurts" only where it exceeds twice its standard error.

Run:      python benchmarks/downstream.py                  # the full zoo: ~6 min to train
Quick:    python benchmarks/downstream.py --quick          # 4 epochs, 4k images, fewer net epochs
Override: python benchmarks/downstream.py --set seeds=6 --set train.epochs=5 --target epoch
Expect:   two markdown tables and one verdict line per net and augmentation. Needs the
          Fashion-MNIST idx files (/usr/share/datasets/fashion-mnist or --set task.path=...).
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import torch

from zoo.dist.pipeline import run
from zoo.recipe import load_recipe
from zoo.weightspace.learn import augmentation_sets, fit_statistics, fit_weight_nets, load_splits

RECIPE = Path(__file__).parent.parent / "pipelines" / "fashion_cnn_s_init_lr.yaml"
QUICK = ["train.epochs=4", "checkpoints.epochs=[0,1,2,4]", "task.n_train=4000", "task.n_test=1000"]
SETS = (
    "none",
    "permute",
    "sign_flip",
    "rescale",
    "noise",
    "dropout",
    "erase",
    "prune",
    "mixup",
    "mixup_aligned",
    "default",
)


def build(out: Path, overrides: list[str]) -> Path:
    recipe = load_recipe(RECIPE, [*overrides, f"output.dir={out}"])
    start = time.perf_counter()
    folder = run(recipe)
    print(f"zoo: {folder} ({time.perf_counter() - start:.0f} s, resumed where it existed)")
    return folder


def fmt(mean, std) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def verdict(score, base, repeats: int) -> str:
    """'helps' / 'hurts' where the change in R² exceeds twice its standard error."""
    if score.r2 is None or base.r2 is None:
        return "undefined"
    diff = score.r2 - base.r2
    se = math.sqrt(((score.r2_std or 0) ** 2 + (base.r2_std or 0) ** 2) / repeats)
    word = "helps" if diff > 2 * se else "hurts" if diff < -2 * se else "no clear effect"
    return f"{word} (ΔR² {diff:+.3f}, 2·se {2 * se:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description="Do weight-space augmentations help?")
    parser.add_argument("--out", type=Path, default=Path("/tmp/zoo_downstream/fashion_cnn_s"))
    parser.add_argument("--set", action="append", default=[], help="recipe override (repeatable)")
    parser.add_argument("--quick", action="store_true", help="a smaller zoo and shorter training")
    parser.add_argument("--target", default="test_acc")
    parser.add_argument("--repeats", type=int, default=3, help="seeds per net and augmentation")
    parser.add_argument("--epochs", type=int, default=60, help="epochs per weight-space net")
    parser.add_argument("--augment", action="append", help=f"sets to compare (default {SETS})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = [*(QUICK if args.quick else []), *args.set]
    out = args.out.with_name(args.out.name + "_quick") if args.quick else args.out
    epochs = min(args.epochs, 30) if args.quick else args.epochs
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread")
    data = load_splits(build(out, overrides))
    print(f"rows: { {s: len(w) for s, w in data.weights.items()} } (splits by run)\n")
    print(f"### Weight statistics -> {args.target} (reference)\n")
    print("| model | R² | Kendall τ |\n|---|---:|---:|")
    for s in fit_statistics(data, args.target):
        print(f"| {s.model} | {fmt(s.r2, None)} | {fmt(s.tau, None)} |")
    sets = [a for a in (args.augment or SETS) if a in augmentation_sets(data.layout, args.target)]
    start = time.perf_counter()
    scores = fit_weight_nets(
        data, args.target, augmentations=sets, epochs=epochs, repeats=args.repeats
    )
    print(
        f"\n### Weight-space nets -> {args.target}: {epochs} epochs, {args.repeats} seeds "
        f"each, test split ({time.perf_counter() - start:.0f} s)\n"
    )
    print("| augmentation | MLP R² | MLP τ | DeepSets R² | DeepSets τ |")
    print("|---|---:|---:|---:|---:|")
    by = {(s.model, s.augmentation): s for s in scores}
    for name in sets:
        m, d = by[("mlp", name)], by[("deepsets", name)]
        print(
            f"| {name} | {fmt(m.r2, m.r2_std)} | {fmt(m.tau, m.tau_std)} | "
            f"{fmt(d.r2, d.r2_std)} | {fmt(d.tau, d.tau_std)} |"
        )
    print()
    for net in ("mlp", "deepsets"):
        for name in sets[1:]:
            print(f"{net} + {name}: {verdict(by[(net, name)], by[(net, 'none')], args.repeats)}")


if __name__ == "__main__":
    main()
