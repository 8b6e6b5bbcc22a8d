"""Do the phases matter downstream? The three studies on the phase recipe, per phase.

Builds (or resumes) ``pipelines/teacher_mlp_phases.yaml`` into ``--out`` (under /tmp, not the
repository): training, the landscape stage and the phase labels of rule yang2021-zoo-v2; then
runs ``zoo study`` averaging, pruning and transfer on it (resumable), rebuilds the dataset and
reads the published study configs back with ``datasets.load_dataset``. Prints the zoo's phase
coverage, then per study and effect one row per phase: the mean effect ± its standard deviation
across cells (cells), and whether the phases differ: a permutation test of the one-way ANOVA F
of the cell effects (``--permutations`` shuffles of the phase labels across cells) and η², the
share of the spread between cells that the phases explain. Cells are the units throughout
(an effect is first averaged over a cell's seeds and checkpoints).

Run:      python benchmarks/phase_studies.py              # the recipe's default size
Quick:    python benchmarks/phase_studies.py --quick      # 3 x 3 grid, 3 seeds, 6 epochs
Override: python benchmarks/phase_studies.py --set seeds=8 --set studies.transfer.epochs=4
Expect:   a coverage line, one markdown table per study, stage timings; the verdict line per
          effect says "phases differ" where p < 0.05 (not corrected for the six effects).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import datasets
import torch

from zoo.dist.options import ExecOptions
from zoo.dist.pipeline import run, study
from zoo.recipe import load_recipe
from zoo.stages.build import build_dataset
from zoo.stages.build.phasecard import coverage_summary, render_effects
from zoo.stages.landscape.coverage import phase_coverage
from zoo.stages.study import KINDS, study_stage
from zoo.stages.study.effects import study_effects

RECIPE = Path(__file__).parent.parent / "pipelines" / "teacher_mlp_phases.yaml"
QUICK = [
    "grid={model.width: [4, 64, 1024], train.batch_size: [8, 128, 2048]}",
    "seeds=3",
    "train.epochs=6",
    "checkpoints.epochs=[0, 6]",
    "studies.pruning.sparsities=[0.5, 0.9]",
]


def timed(label: str, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    print(f"{label}: {time.perf_counter() - start:.0f} s")
    return out


def rows_of(folder: Path, config: str) -> list[dict]:
    splits = datasets.load_dataset(str(folder), config).values()
    return [
        r
        for ds in splits
        for r in ds.remove_columns([c for c in ds.column_names if c == "weights"]).to_list()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="The three studies on the phase recipe.")
    parser.add_argument("--out", type=Path, default=Path("/tmp/zoo_phase_studies/phases"))
    parser.add_argument("--set", action="append", default=[], help="recipe override (repeatable)")
    parser.add_argument("--quick", action="store_true", help="a 3 x 3 grid, 3 seeds, 6 epochs")
    parser.add_argument("--workers", type=int, default=None, help="Dask workers (recipe's)")
    parser.add_argument("--permutations", type=int, default=9999)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out.with_name(args.out.name + "_quick") if args.quick else args.out
    recipe = load_recipe(RECIPE, [*(QUICK if args.quick else []), *args.set, f"output.dir={out}"])
    options = ExecOptions.from_recipe(recipe.execution, workers=args.workers)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{options.workers} worker(s) x 1 thread; zoo in {out}"
    )
    folder = timed("train + landscape + build (resumed where it existed)", run, recipe, options)
    for kind in KINDS:
        summary = timed(f"study {kind}", study, recipe, kind, options)
        if summary.failed:
            raise SystemExit(
                f"study {kind}: {len(summary.failed)} batches failed: "
                f"{next(iter(summary.failed.values()))}"
            )
    timed("build with the studies", build_dataset, recipe, out)
    weights = [r for c in _configs(folder) for r in rows_of(folder, c)]
    cov = phase_coverage(weights)
    print("\n" + (coverage_summary(cov) if cov else "no phase labels"))
    for kind in KINDS:
        rows = rows_of(folder, study_stage(kind))
        effects = study_effects(kind, rows, permutations=args.permutations)
        print(
            f"\n### {kind} ({len(rows)} rows; effect per phase: mean ± std across cells (cells))\n"
        )
        print(render_effects(effects))
        for e in effects:
            word = "phases differ" if e.p_value < 0.05 else "no detected difference"
            print(f"{kind} {e.column}: {word} (p {e.p_value:.4f}, η² {e.eta2:.2f})")


def _configs(folder: Path) -> list[str]:
    return list(json.loads((folder / "layout.json").read_text()))


if __name__ == "__main__":
    main()
