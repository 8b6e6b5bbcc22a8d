"""Landscape throughput: Hessian top eigenvalue + trace, batched across a population vs one
model at a time (how existing zoos do it), with the same estimator settings, side by side.

Run:   python benchmarks/landscape_throughput.py            (MLP and CNN-s, n = 8, 64)
       python benchmarks/landscape_throughput.py --quick    (n = 8 only)
Also prints the cost of the landscape stage relative to training the same population at the
default recipe settings (Lanczos 20 iterations, 20 trace probes, 2x128 probe examples), with the
stage's default graph size (``landscape.hessian.models_per_graph: null``: 1 model for MLPs, 4
for CNNs), chosen from what this script measures on CPU. Both modes stop each model on its own
criterion and drop stopped models from the graph.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from zoo.layout import unflatten
from zoo.nn.architectures import build_model
from zoo.recipe import expand_recipe, recipe_from_dict
from zoo.stages.landscape.hessian import PopulationHVP, hutchinson_trace, lanczos_top, rademacher
from zoo.stages.plan import plan_batches
from zoo.stages.train import PopulationTrainer
from zoo.tasks import Task

ARCHS = {
    "mlp": ({"arch": "mlp", "width": 64, "depth": 2, "activation": "relu"}, "MLP 784-64-64-10"),
    "cnn_s": ({"arch": "cnn_s", "activation": "relu"}, "CNN-s"),
}
SETTINGS = {"iterations": 20, "tol": 1e-3, "probes": 20, "trace_tol": 5e-2, "top_k": 1}


def random_task(n_train: int) -> Task:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n_train, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n_train,), generator=g)
    return Task("random28", x, y, x[:512].clone(), y[:512].clone(), 10)


def population(cfg: dict, n: int) -> torch.Tensor:
    mods = [build_model(cfg, (1, 28, 28), 10)[0] for _ in range(n)]
    return torch.stack([torch.cat([v.reshape(-1) for v in m.state_dict().values()]) for m in mods])


def estimate(module, layout, flat: torch.Tensor, x, y) -> float:
    """Seconds for top eigenvalue + trace of every model in ``flat`` (one graph)."""
    start = time.perf_counter()
    m, p = flat.shape
    hvp = PopulationHVP(module, unflatten(flat, layout), x, y)
    starts = torch.randn(m, p, generator=torch.Generator().manual_seed(0))
    lanczos_top(hvp, p, m, starts, SETTINGS["top_k"], SETTINGS["iterations"], SETTINGS["tol"])
    probes = rademacher(torch.Generator().manual_seed(1), SETTINGS["probes"] * m, p, flat.dtype)
    hutchinson_trace(hvp, probes.view(SETTINGS["probes"], m, p), SETTINGS["trace_tol"])
    return time.perf_counter() - start


def batched(module, layout, flat, x, y, chunk: int) -> float:
    return sum(
        estimate(module, layout, flat[i : i + chunk], x, y) for i in range(0, len(flat), chunk)
    )


def one_by_one(module, layout, flat, x, y) -> float:
    return sum(estimate(module, layout, flat[i : i + 1], x, y) for i in range(len(flat)))


def train_seconds(cfg: dict, n: int, task: Task, epochs: int) -> float:
    recipe = recipe_from_dict(
        {
            "schema_version": 1,
            "task": {"name": "digits"},
            "model": cfg,
            "train": {
                "optimizer": "sgd",
                "lr": 0.01,
                "momentum": 0.9,
                "batch_size": 64,
                "epochs": epochs,
            },
            "seeds": n,
        }
    )
    (batch,) = plan_batches(expand_recipe(recipe), n)
    trainer = PopulationTrainer(batch, task=task)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        trainer.train_epoch(epoch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 8 only")
    parser.add_argument("--sizes", default="8,64")
    parser.add_argument(
        "--train-examples",
        type=int,
        default=6400,
        help="training set for the cost ratio (100 steps of 64 per epoch)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [8] if args.quick else [int(s) for s in args.sizes.split(",")]
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread; "
        f"settings {SETTINGS}, probe 2x128 examples"
    )
    task = random_task(args.train_examples)
    x, y = task.x_train[:256], task.y_train[:256]
    print("\n| arch | n | batched s | one-by-one s | ratio | stage default / training (1 epoch) |")
    print("|---|---|---|---|---|---|")
    for key, (cfg, label) in ARCHS.items():
        module, layout = build_model(cfg, (1, 28, 28), 10)
        chunk = 16 if key == "mlp" else 4
        for n in sizes:
            flat = population(cfg, n)
            t_batched = batched(module, layout, flat, x, y, chunk)
            t_loop = one_by_one(module, layout, flat, x, y)
            t_train = train_seconds(cfg, n, task, epochs=1)
            t_stage = t_loop if key == "mlp" else t_batched
            print(
                f"| {label} | {n} | {t_batched:.2f} | {t_loop:.2f} | {t_loop / t_batched:.2f}x "
                f"| {t_stage / t_train:.2f} |"
            )
    print(
        "\ntargets (2 CPU cores, n=64): batched >= 2x for the MLP, >= 1.2x for CNN-s. The last "
        "column is the time of the stage's default graph size over one training "
        "epoch of the same population on "
        f"{args.train_examples} examples; multiply the epoch count of a recipe to compare."
    )


if __name__ == "__main__":
    main()
