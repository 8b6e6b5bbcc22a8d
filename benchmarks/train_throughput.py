"""Training throughput: the population trainer against a plain per-model loop, side by side.

Model-steps/s = models x optimizer steps / wall second: batch 64 per model, each model its own
minibatches, SGD with momentum 0.9. Both sides train the same runs (same init, same data
order, same tensors) for the same number of steps per model:

- population: ``PopulationTrainer.train_epoch`` on a training set of ``steps x 64`` random
  examples, so one epoch is exactly ``steps`` real steps (gather ``x_train[idx]`` with ``idx``
  ``(M, B)``, ``loss_and_grads``, ``optimizer.step``);
- loop: one ``nn.Module`` + ``torch.optim.SGD`` after another, each gathering its minibatch by
  index from the same tensors; CNNs in channels_last (module and inputs), which the notes
  measured at 1.13-1.35x for the loop, so the ratio stays honest.

Settings: ``1 proc x 1 thread`` (both in this process, ``torch.set_num_threads(1)``) and
``2 procs x 1 thread`` (spawned workers started before timing, each training half of the
models, released together by a barrier; the wall time is that of the slowest). With CUDA, a
third setting trains on the GPU (population in one chunk unless ``--chunk-size``).

Architectures: MLP 784-64-64-10 and CNN-s on random 28x28 images; the ResNet (width 8, 2
stages of 1 block, BatchNorm) on the same images; the transformer (width 32, 4 heads, 1 layer,
MLP 128, untied) on random token sequences of 16 over 32 symbols, next-token loss at every
position (issue 15).

SIREN = {"arch": "siren", "width": 32, "depth": 2, "w0": 30.0}
MODELS = {
    "mlp": {"arch": "mlp", "width": 64, "depth": 2},
    "cnn_s": {"arch": "cnn_s"},
    "siren28": SIREN,
    "siren8": SIREN,
Override: python benchmarks/train_throughput.py --arch cnn_s --sizes 64 --chunk-size 8
          python benchmarks/train_throughput.py --arch siren --sizes 256
Expect:   a markdown table, then one PASS/MISS line per target (never a non-zero exit on a miss).
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing as mp
import os
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch.nn import functional as F

from zoo.nn.inits import init_model
from zoo.nn.objectives import OBJECTIVES
from zoo.recipe import RunConfig, expand_recipe, recipe_from_dict
from zoo.stages.plan import default_chunk, plan_batches
from zoo.stages.train import PopulationTrainer, data_order, make_torch_optimizer
from zoo.tasks import Signal, Task
from zoo.tasks.signals import coordinate_grid

BATCH = 64
WARMUP_STEPS = 3
SIREN = {"arch": "siren", "width": 32, "depth": 2, "w0": 30.0}
MODELS = {
    "mlp": {"arch": "mlp", "width": 64, "depth": 2},
    "cnn_s": {"arch": "cnn_s"},
    "resnet": {"arch": "resnet", "width": 8, "stages": 2, "blocks": 1, "norm": "batch"},
    "transformer": {"arch": "transformer", "width": 32, "heads": 4, "layers": 1},
    "siren28": SIREN,
    "siren8": SIREN,
}
LABELS = {
    "mlp": "MLP 784-64-64-10",
    "cnn_s": "CNN-s",
    "resnet": "ResNet w8 2x1 BN",
    "transformer": "Transformer d32 h4 L1, T=16",
    "siren28": "SIREN 2x32, 28x28 grid",
    "siren8": "SIREN 2x32, 8x8 grid",
}
SHORT = {
    "mlp": "MLP",
    "cnn_s": "CNN-s",
    "resnet": "ResNet",
    "transformer": "Transformer",
    "siren28": "SIREN 28x28",
    "siren8": "SIREN 8x8",
}
# the SIREN zoo (issue 14): grid of each arch, and the recipe steps per INR (one per epoch)
SIGNALS = {"siren28": (28, 28), "siren8": (8, 8)}
RECIPE_STEPS = {"siren28": 200, "siren8": 100}  # fashion_siren_views, digits_siren_views
SCALED_INRS, SCALED_STEPS = 70_000, 500  # fashion_siren_views --scale
SIGNAL_SIZES, QUICK_SIGNAL_SIZES = [64, 256, 1024], [64, 256]
SIGNAL_TARGET, SIGNAL_TARGET_N = 5.0, 256  # population / loop, 1 proc
GPU_SIGNAL_TARGET, GPU_SIGNAL_N = 100.0, 4096
# population / loop at n=64, in both CPU settings (the transformer's from issue 15; the ResNet
# has none: reported only)
TARGETS = {"mlp": 2.0, "cnn_s": 1.5, "transformer": 1.3}
TARGET_N = 64
DEFAULT_ARCHS = ("mlp", "cnn_s", "siren28", "siren8")  # --arch all adds ResNet, transformer
TOKENS, VOCAB = 16, 32  # the transformer's sequences
# Model-steps per measurement (~1-3 s on one core of the 2-core dev box), and the steps-per-model
# bounds; big populations get fewer steps per model so the whole run stays near 5 minutes.
# Two processes get twice the steps, so each of them still runs ~1-3 s.
BUDGET = {"mlp": 5000, "cnn_s": 800, "resnet": 300, "transformer": 1500, "siren28": 3000}
BUDGET |= {"siren8": 8000}
QUICK_BUDGET = {"mlp": 2000, "cnn_s": 500, "resnet": 150, "transformer": 600, "siren28": 1500}
QUICK_BUDGET |= {"siren8": 4000}
STEP_BOUNDS = (5, 400)
QUICK_STEP_BOUNDS = (5, 150)
CUDA_EXTRA_N = 512
ONE, TWO, GPU = "1 proc x 1 thread", "2 procs x 1 thread", "cuda"


@dataclass(frozen=True)
class Job:
    """One side of one measurement: train models ``lo:hi`` of an ``n``-model population."""

    side: str  # "population" or "loop"
    arch: str
    n: int
    lo: int
    hi: int
    steps: int
    device: str = "cpu"
    chunk: int | None = None


# --- what is trained ---------------------------------------------------------------------------


def make_runs(arch: str, n: int) -> list[RunConfig]:
    """``n`` runs of one architecture that differ only by seed (SGD, momentum 0.9)."""
    recipe = recipe_from_dict(
        {
            "schema_version": 1,
            "name": "bench",
            "task": {"name": "char_lm" if arch == "transformer" else "fashion_mnist"},
            "model": MODELS[arch],
            "train": {
                "optimizer": "sgd",
                "lr": 0.01,
                "momentum": 0.9,
                "batch_size": BATCH,
                "epochs": 1,
            },
            "seeds": n,
        }
    )
    return expand_recipe(recipe)


def make_task(n_train: int, arch: str = "mlp") -> Task:
    """Random 28x28 one-channel images with 10 classes (random token sequences over ``VOCAB``
    symbols for the transformer): speed does not depend on the data."""
    g = torch.Generator().manual_seed(0)
    if arch == "transformer":
        x = torch.randint(0, VOCAB, (n_train + BATCH, TOKENS), generator=g)
        y = torch.randint(0, VOCAB, (n_train + BATCH, TOKENS), generator=g)
        n_classes = VOCAB
    else:
        x = torch.rand(n_train + BATCH, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (n_train + BATCH,), generator=g)
        n_classes = 10
    return Task(
        "bench",
        x[:n_train].clone(),
        y[:n_train].clone(),
        x[n_train:].clone(),
        y[n_train:].clone(),
        n_classes,
    )


def steps_per_model(arch: str, n: int, quick: bool) -> int:
    budget = (QUICK_BUDGET if quick else BUDGET)[arch]
    lo, hi = QUICK_STEP_BOUNDS if quick else STEP_BOUNDS
    return max(lo, min(hi, math.ceil(budget / n)))


# --- the two sides -----------------------------------------------------------------------------


def prepare_population(job: Job, task: Task, runs: list[RunConfig]) -> Callable[[], None]:
    """Build the trainer, warm it up on the same code path, return one timed epoch."""
    batch = plan_batches(runs, len(runs))[0]
    trainer = PopulationTrainer(batch, device=job.device, chunk_size=job.chunk, task=task)
    full = trainer.x_train, trainer.y_train
    # warm-up: train_epoch itself on the first few minibatches only (epoch 0: its own order)
    trainer.x_train, trainer.y_train = (
        full[0][: WARMUP_STEPS * BATCH],
        full[1][: WARMUP_STEPS * BATCH],
    )
    trainer.train_epoch(0)
    trainer.x_train, trainer.y_train = full
    return lambda: trainer.train_epoch(1)


def loop_steps(model, x: torch.Tensor, y: torch.Tensor, epoch: int, steps: int) -> None:
    """``steps`` plain training steps of one model on its own minibatches, gathered by index."""
    seed, module, opt, memory_format = model
    order = data_order(seed, epoch, len(x)).to(x.device)
    loss_of = OBJECTIVES["classification"].module_loss  # per position for the transformer
    for s in range(steps):
        idx = order[s * BATCH : (s + 1) * BATCH]
        xb = x[idx].contiguous(memory_format=memory_format)  # (B, C, H, W) or (B, T)
        loss = loss_of(module(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def prepare_loop(job: Job, task: Task, runs: list[RunConfig]) -> Callable[[], None]:
    """Build every model and optimizer, warm up on the first, return the timed loop."""
    fmt = torch.channels_last if job.arch in ("cnn_s", "resnet") else torch.contiguous_format
    x = task.x_train.to(job.device).contiguous(memory_format=fmt)
    y = task.y_train.to(job.device)
    models = []
    for run in runs:
        module = init_model(run, task)[0].to(job.device, memory_format=fmt)
        models.append((run.seed, module, make_torch_optimizer(run, module.parameters()), fmt))
    loop_steps(models[0], x, y, 0, WARMUP_STEPS)  # kernels, allocator, oneDNN primitives

    def timed() -> None:
        for model in models:
            loop_steps(model, x, y, 1, job.steps)

    return timed


# --- the SIREN zoo (issue 14): per-model targets on one shared grid ------------------------------


def signal_runs(arch: str, n: int) -> list[RunConfig]:
    """``n`` SIREN runs, one image each (``task.index``), full-batch Adam: one step per epoch."""
    recipe = recipe_from_dict(
        {
            "schema_version": 1,
            "name": "bench",
            "task": {"name": "inr_image", "source": "digits"},
            "model": SIREN,
            "init": {"scheme": "siren", "bias": "uniform"},
            "train": {"optimizer": "adam", "lr": 1e-3, "batch_size": 1024, "epochs": 1},
            "grid": {"task.index": {"range": [0, n]}},
        }
    )
    return expand_recipe(recipe)


def signal_tasks(arch: str, runs: list[RunConfig]) -> list[Task]:
    """One task per run on the arch's grid, random values in [-1, 1] (speed does not depend on
    the pixels): what the trainer would load for each image."""
    shape = SIGNALS[arch]
    coords = coordinate_grid(shape)
    tasks = []
    for run in runs:
        g = torch.Generator().manual_seed(run.task["index"])
        y = torch.rand(len(coords), 1, generator=g) * 2 - 1
        signal = Signal(shape, coords, y, {})
        tasks.append(Task("bench", coords, y, coords, y, 1, "regression", signal=signal))
    return tasks


def prepare_signal_population(job: Job, tasks: list[Task], runs: list[RunConfig]):
    """The population trainer on the runs' own targets; warm-up steps, then ``steps`` epochs."""
    batch = plan_batches(runs, len(runs))[0]
    trainer = PopulationTrainer(batch, device=job.device, chunk_size=job.chunk, tasks=tasks)
    for epoch in range(WARMUP_STEPS):
        trainer.train_epoch(epoch + 1)

    def timed() -> None:
        for epoch in range(job.steps):
            trainer.train_epoch(WARMUP_STEPS + epoch + 1)

    return timed


def prepare_signal_loop(job: Job, tasks: list[Task], runs: list[RunConfig]):
    """One ``nn.Module`` + ``torch.optim.Adam`` per image, full batch on the same grid."""
    x = tasks[0].x_train.to(job.device)
    models = []
    for run, task in zip(runs, tasks, strict=True):
        module = init_model(run, task)[0].to(job.device)
        opt = make_torch_optimizer(run, module.parameters())
        models.append((module, opt, task.y_train.to(job.device)))

    def fit(model, steps: int) -> None:
        module, opt, y = model
        for _ in range(steps):
            loss = F.mse_loss(module(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    fit(models[0], WARMUP_STEPS)

    def timed() -> None:
        for model in models:
            fit(model, job.steps)

    return timed


def prepare_job(job: Job) -> Callable[[], None]:
    """Build one side of a measurement (models, data, warm-up); return its timed work."""
    if job.arch in SIGNALS:
        runs = signal_runs(job.arch, job.n)[job.lo : job.hi]
        side = prepare_signal_population if job.side == "population" else prepare_signal_loop
        return side(job, signal_tasks(job.arch, runs), runs)
    task = make_task(job.steps * BATCH, job.arch)
    runs = make_runs(job.arch, job.n)[job.lo : job.hi]
    prepare = prepare_population if job.side == "population" else prepare_loop
    return prepare(job, task, runs)


def time_job(job: Job, barrier=None) -> tuple[float, float]:
    """Prepare ``job``, wait at ``barrier`` (if any), run it: ``(start, end)`` monotonic s."""
    work = prepare_job(job)
    cuda = job.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    if barrier is not None:
        barrier.wait()
    start = time.perf_counter()  # CLOCK_MONOTONIC on Linux: comparable across processes
    work()
    if cuda:
        torch.cuda.synchronize()
    end = time.perf_counter()
    del work
    gc.collect()
    return start, end


# --- two worker processes ----------------------------------------------------------------------


def single_thread() -> None:
    """One intra-op and (where still settable) one inter-op thread in this process."""
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already fixed once parallel work ran; intra-op is what matters
        pass


def worker_main(jobs, results, barrier) -> None:
    """A spawned worker: one thread, runs jobs until it gets ``None``."""
    single_thread()
    while (job := jobs.get()) is not None:
        try:
            results.put(("ok", time_job(job, barrier)))
        except Exception:  # report it; the parent stops the benchmark
            barrier.abort()
            results.put(("error", traceback.format_exc()))


class WorkerPair:
    """Two spawned single-thread workers, started once and reused for every measurement."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.barrier = ctx.Barrier(2)
        self.queues = [ctx.Queue() for _ in range(2)]
        self.procs = [
            ctx.Process(target=worker_main, args=(q, self.results, self.barrier), daemon=True)
            for q in self.queues
        ]
        for p in self.procs:
            p.start()

    def run(self, jobs: list[Job]) -> float:
        """Run one job per worker, released together; wall seconds until the last one ends."""
        for q, job in zip(self.queues, jobs, strict=True):
            q.put(job)
        got = [self.results.get() for _ in jobs]
        errors = [text for status, text in got if status == "error"]
        if errors:
            raise RuntimeError("a worker failed:\n" + "\n".join(errors))
        return max(end for _, (_, end) in got) - min(start for _, (start, _) in got)

    def close(self) -> None:
        for q in self.queues:
            q.put(None)
        for p in self.procs:
            p.join(timeout=30)


# --- measurements ------------------------------------------------------------------------------


@dataclass
class Row:
    arch: str
    setting: str
    n: int
    steps: int
    chunk: int
    pop_seconds: float
    loop_seconds: float

    @property
    def pop_rate(self) -> float:
        """Population model-steps/s."""
        return self.n * self.steps / self.pop_seconds

    @property
    def loop_rate(self) -> float:
        """Loop model-steps/s."""
        return self.n * self.steps / self.loop_seconds

    @property
    def ratio(self) -> float:
        return self.pop_rate / self.loop_rate

    def markdown(self) -> str:
        pop, loop = self.pop_rate, self.loop_rate
        return (
            f"| {LABELS[self.arch]} | {self.setting} | {self.n} | {pop:,.0f} | {loop:,.0f} | "
            f"{self.ratio:.2f}x | {self.chunk} | {self.steps} |"
        )


def measure(job: Job, setting: str, workers: WorkerPair | None, repeat: int) -> float:
    """Best wall seconds of ``repeat`` runs of ``job`` (split over the two workers for TWO)."""
    best = math.inf
    for _ in range(repeat):
        if setting == TWO:
            half = (job.n + 1) // 2
            parts = [replace(job, lo=0, hi=half), replace(job, lo=half, hi=job.n)]
            seconds = workers.run(parts)
        else:
            start, end = time_job(job)
            seconds = end - start
        best = min(best, seconds)
    return best


def measure_row(arch: str, setting: str, n: int, args, workers: WorkerPair | None) -> Row:
    device = "cuda" if setting == GPU else "cpu"
    chunk = args.chunk_size or (n if device == "cuda" else default_chunk(MODELS[arch]))
    steps = steps_per_model(arch, n, args.quick) * (2 if setting == TWO else 1)
    job = Job("population", arch, n, 0, n, steps, device, chunk)
    pop = measure(job, setting, workers, args.repeat)
    loop = measure(replace(job, side="loop"), setting, workers, args.repeat)
    return Row(arch, setting, n, steps, min(chunk, n), pop, loop)


# --- report --------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return f"{names[0]} ({len(names)} logical CPUs)" if names else platform.processor()
    except OSError:
        return platform.processor() or "unknown"


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def print_header(args) -> None:
    print(f"torch {torch.__version__}, python {platform.python_version()}, {cpu_model()}")
    print(
        f"threads: torch.set_num_threads(1) in this process and in each worker "
        f"(get_num_threads={torch.get_num_threads()}, "
        f"interop={torch.get_num_interop_threads()})"
    )
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(
        f"cuda: {cuda}; batch {BATCH} per model, SGD momentum 0.9, warm-up {WARMUP_STEPS} "
        f"steps, best of {args.repeat}; loop CNNs and ResNets in channels_last; SIREN: full "
        "batch (one step per epoch), Adam, its own targets per model"
    )
    print(f"load average at start: {load()} (other work on the machine skews every figure)")
    print()
    print(
        "| arch | setting | n | population model-steps/s | loop model-steps/s | ratio "
        "| chunk | steps/model |"
    )
    print("|---|---|---|---|---|---|---|---|", flush=True)


def print_signal_targets(found: dict) -> None:
    """SIREN: >= 5x the loop at n=256 on one core; >= 100x at n=4096 on a GPU; the INRs/s of
    the whole machine (2 processes) and the hours of the 70,000-image zoo."""
    for arch in SIGNALS:
        row = found.get((arch, ONE, SIGNAL_TARGET_N))
        head = f"target: n={SIGNAL_TARGET_N} {SHORT[arch]} ratio >= {SIGNAL_TARGET} (1 proc)"
        if row is not None:
            verdict = "PASS" if row.ratio >= SIGNAL_TARGET else "MISS"
            print(f"{head}: measured {row.ratio:.2f} {verdict}")
        gpu = found.get((arch, GPU, GPU_SIGNAL_N))
        if gpu is not None:
            verdict = "PASS" if gpu.ratio >= GPU_SIGNAL_TARGET else "MISS"
            print(
                f"target: n={GPU_SIGNAL_N} {SHORT[arch]} cuda ratio >= {GPU_SIGNAL_TARGET}: "
                f"measured {gpu.ratio:.2f} {verdict}"
            )
        two = [r for (a, s, _), r in found.items() if a == arch and s == TWO]
        if two:
            best = max(two, key=lambda r: r.pop_rate)
            inrs = best.pop_rate / RECIPE_STEPS[arch]
            print(
                f"machine: {SHORT[arch]}, 2 procs, n={best.n}: {best.pop_rate:,.0f} model-steps/s"
                f" = {inrs:,.1f} INRs/s at {RECIPE_STEPS[arch]} steps each"
            )
            if arch == "siren28":
                hours = SCALED_INRS * SCALED_STEPS / best.pop_rate / 3600
                print(
                    f"machine: the {SCALED_INRS:,}-image Fashion-MNIST zoo ({SCALED_STEPS} steps "
                    f"each, --scale) takes about {hours:.1f} h of training on this machine"
                )


def print_targets(rows: list[Row]) -> None:
    print()
    found = {(r.arch, r.setting, r.n): r for r in rows}
    print_signal_targets(found)
    for arch, need in TARGETS.items():
        if not any(r.arch == arch for r in rows):
            continue
        for setting, short in ((ONE, "1 proc"), (TWO, "2 procs")):
            row = found.get((arch, setting, TARGET_N))
            head = f"target: n={TARGET_N} {SHORT[arch]} ratio >= {need} ({short})"
            if row is None:
                print(f"{head}: not measured")
            else:
                verdict = "PASS" if row.ratio >= need else "MISS"
                print(f"{head}: measured {row.ratio:.2f} {verdict}")
    for arch in SHORT:
        one, two = found.get((arch, ONE, TARGET_N)), found.get((arch, TWO, TARGET_N))
        if one and two:
            print(
                f"note: n={TARGET_N} {SHORT[arch]}: population 2 procs / 1 proc = "
                f"{two.pop_rate / one.pop_rate:.2f}x; population 2 procs / loop 1 proc = "
                f"{two.pop_rate / one.loop_rate:.2f}x"
            )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="n = 1, 8, 64 and fewer steps")
    arch_help = (
        "comma-separated, of mlp, cnn_s, resnet, transformer, siren28, siren8 (siren: both "
        "grids); all: every one"
    )
    p.add_argument("--arch", default=",".join(DEFAULT_ARCHS), help=arch_help)
    p.add_argument("--sizes", default=None, help="comma-separated population sizes")
    chunk_help = "models per forward/backward chunk (default: 16 MLP, 4 CNN; all on CUDA)"
    p.add_argument("--chunk-size", type=int, default=None, help=chunk_help)
    p.add_argument("--repeat", type=int, default=1, help="report the best of this many timings")
    p.add_argument("--no-cuda", action="store_true", help="skip the CUDA setting")
    args = p.parse_args(argv)
    default = "1,8,64" if args.quick else "1,8,64,256"
    args.signal_sizes = QUICK_SIGNAL_SIZES if args.quick else SIGNAL_SIZES
    if args.sizes:  # the given sizes for every arch
        args.signal_sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.sizes = [int(s) for s in (args.sizes or default).split(",") if s.strip()]
    aliases = {"all": list(MODELS), "siren": list(SIGNALS)}
    args.archs = [a for name in args.arch.split(",") for a in aliases.get(name, [name])]
    unknown = sorted(set(args.archs) - set(MODELS))
    if unknown:
        p.error(f"--arch: unknown {unknown}; choose from {sorted(MODELS)}, siren or all")
    return args


def plan(args) -> list[tuple[str, str, int]]:
    """(arch, setting, n) of every row, in print order; n=1 cannot be split over 2 processes."""
    settings = [ONE, TWO]
    if torch.cuda.is_available() and not args.no_cuda:
        settings.append(GPU)
    out = []
    for arch in args.archs:
        for setting in settings:
            signal = arch in SIGNALS
            extra = GPU_SIGNAL_N if signal else CUDA_EXTRA_N
            sizes = (args.signal_sizes if signal else args.sizes) + (
                [extra] if setting == GPU else []
            )
            out += [(arch, setting, n) for n in sorted(set(sizes)) if setting != TWO or n > 1]
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    single_thread()
    print_header(args)
    rows, workers = [], None
    try:
        for arch, setting, n in plan(args):
            if setting == TWO and workers is None:
                workers = WorkerPair()  # spawned once, before any timing, then reused
            rows.append(measure_row(arch, setting, n, args, workers))
            print(rows[-1].markdown(), flush=True)
    finally:
        if workers is not None:
            workers.close()
    print_targets(rows)
    print(f"load average at end: {load()}")


if __name__ == "__main__":
    main()
