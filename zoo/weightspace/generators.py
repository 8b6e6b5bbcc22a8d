"""Evaluating weight generators on a zoo: performance, novelty, diversity, and baselines.

A generator trained on a zoo's training split is judged on the same terms as three baselines
the command produces itself (so like is compared with like):

- ``noise``: training checkpoints plus Gaussian noise scaled (per layer, by the layer's weight
  RMS) so that the baseline's median novelty matches the generator's;
- ``average``: the average of k training checkpoints after aligning them to the first;
- ``gaussian``: per-coordinate Gaussian samples fitted on the aligned training split.

Novelty is the relative L2 distance ``‖θ_g − θ_n‖ / ‖θ_n‖`` to the nearest training
checkpoint *after aligning θ_g to it* (weight matching modulo hidden-unit permutations). The
nearest neighbour search prefilters with a permutation-invariant signature (each layer's sorted
per-unit incoming-weight norms) and aligns only the ``candidates`` closest by signature. A model
is a near-replica when its novelty is at most ``replica_threshold`` (default 0.05: 5 % of the
weight norm; permuted copies score ≈ 0, an independently trained seed of these zoos ≈ 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zoo import streams
from zoo.errors import GeneratorError
from zoo.layout import Layout, unflatten, weight_matrices
from zoo.nn.architectures import build_model_from_layout
from zoo.nn.population import forward_population
from zoo.store.dataset import dataset_folder, load_layout
from zoo.streams import torch_generator
from zoo.weightspace.align import align


@dataclass(frozen=True)
class EvalSettings:
    replica_threshold: float = 0.05
    candidates: int = 5
    average_k: int = 4
    baselines: tuple[str, ...] = ("noise", "average", "gaussian")
    seed: int = 0

    def to_dict(self) -> dict:
        return {**self.__dict__, "baselines": list(self.baselines)}


@dataclass
class Scores:
    """Per-model scores of one source (the generator or a baseline)."""

    source: str
    test_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    novelty: list[float] = field(default_factory=list)
    nearest: list[str] = field(default_factory=list)
    agreement: list[float] = field(default_factory=list)
    error_iou: list[float] = field(default_factory=list)
    diversity: float = math.nan

    def summary(self, threshold: float) -> dict:
        nov = np.array(self.novelty)
        return {
            "source": self.source,
            "models": len(self.novelty),
            "test_acc_mean": float(np.mean(self.test_acc)),
            "test_acc_max": float(np.max(self.test_acc)),
            "novelty_median": float(np.median(nov)),
            "replica_share": float(np.mean(nov <= threshold)),
            "agreement_mean": float(np.mean(self.agreement)),
            "error_iou_mean": float(np.nanmean(self.error_iou)) if self.error_iou else math.nan,
            "diversity": self.diversity,
        }

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# --- inputs ------------------------------------------------------------------------------------


def check_weights(weights: torch.Tensor, layout: Layout, where: str) -> torch.Tensor:
    """``(N, P)`` float32 weights, or a :class:`GeneratorError` naming the bad row."""
    if weights.dim() != 2 or weights.shape[1] != layout.num_params:
        raise GeneratorError(
            f"{where}: generated weights have shape {tuple(weights.shape)}; the zoo's layout "
            f"needs (N, {layout.num_params}) (config {layout.model.get('arch')})"
        )
    bad = (~torch.isfinite(weights).all(1)).nonzero().flatten().tolist()
    if bad:
        raise GeneratorError(f"{where}: row {bad[0]} has NaN/inf weights ({len(bad)} rows do)")
    return weights.float()


def read_generated(path: str | Path, layout: Layout) -> torch.Tensor:
    """Read generated weights: Parquet/dataset folder with a ``weights`` column, or safetensors
    with a ``weights`` tensor ``(N, P)`` or tensors named ``<i>/<parameter>``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if "weights" in tensors:
            return check_weights(tensors["weights"], layout, str(path))
        rows = sorted({k.split("/")[0] for k in tensors}, key=lambda s: (len(s), s))
        stacked = [torch.cat([tensors[f"{r}/{n}"].reshape(-1) for n in layout.names]) for r in rows]
        return check_weights(torch.stack(stacked), layout, str(path))
    import datasets

    files = [str(p) for p in sorted(path.rglob("*.parquet"))] if path.is_dir() else [str(path)]
    if not files:
        raise GeneratorError(f"{path}: no Parquet files with a `weights` column")
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    if "weights" not in ds.column_names:
        raise GeneratorError(f"{path}: no `weights` column (columns: {ds.column_names})")
    return check_weights(ds.with_format("torch")["weights"][:], layout, str(path))


# --- the measurements ---------------------------------------------------------------------------


@torch.no_grad()
def predictions(layout: Layout, weights: torch.Tensor, x: torch.Tensor, batch: int = 64):
    """Test logits argmax ``(N, T)`` and mean losses/accuracies are computed by the caller."""
    module = build_model_from_layout(layout)
    out = []
    for i in range(0, len(weights), batch):
        params = unflatten(weights[i : i + batch], layout)
        m = len(weights[i : i + batch])
        out.append(forward_population(module, params, x.expand(m, *x.shape)))
    return torch.cat(out)  # (N, T, C)


def performance(logits: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
    n, t, c = logits.shape
    ce = torch.nn.functional.cross_entropy(logits.reshape(n * t, c), y.repeat(n), reduction="none")
    acc = (logits.argmax(-1) == y).double().mean(1)
    return acc.tolist(), ce.view(n, t).mean(1).tolist()


def signature(weights: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Permutation-invariant signature ``(N, S)``: each weight matrix's sorted per-unit norms."""
    params = unflatten(weights, layout)
    parts = []
    for name in weight_matrices(layout):
        w = params[name].reshape(len(weights), params[name].shape[1], -1)  # (N, out, in…)
        parts.append(w.norm(dim=2).sort(dim=1).values)
    return torch.cat(parts, 1)


def relative_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).norm(dim=-1) / b.norm(dim=-1).clamp_min(1e-12)


def nearest_after_alignment(gen, train, layout: Layout, candidates: int, seed: int):
    """For each generated row: (novelty, index of the nearest training row, aligned row)."""
    sig_g, sig_t = signature(gen, layout), signature(train, layout)
    top = torch.cdist(sig_g, sig_t).topk(min(candidates, len(train)), largest=False).indices
    novelty, nearest, aligned = [], [], []
    for i in range(len(gen)):
        cand = train[top[i]]  # (k, P)
        al = align(gen[i].expand(len(cand), -1), cand, layout, seed=seed).weights
        dist = relative_distance(al, cand)
        j = int(dist.argmin())
        novelty.append(float(dist[j]))
        nearest.append(int(top[i, j]))
        aligned.append(al[j])
    return novelty, nearest, torch.stack(aligned)


def diversity(weights: torch.Tensor, layout: Layout, seed: int) -> float:
    """Mean pairwise relative distance after aligning every row to the first (a common frame)."""
    if len(weights) < 2:
        return math.nan
    al = align(weights, weights[0], layout, seed=seed).weights
    d = torch.cdist(al, al) / al.norm(dim=1).mean()
    n = len(al)
    return float(d.sum() / (n * (n - 1)))


# --- baselines ----------------------------------------------------------------------------------


def noise_baseline(train, layout: Layout, n: int, scale: float, seed: int) -> torch.Tensor:
    """Training rows plus Gaussian noise, per layer σ = ``scale`` × the layer's weight RMS, so
    the relative distance to the source row is about ``scale``."""
    g = torch_generator(seed, streams.GENERATOR_NOISE)
    rows = train[torch.randint(0, len(train), (n,), generator=g)]
    out = rows.clone()
    for off, size in zip(layout.offsets, layout.sizes, strict=True):
        block = rows[:, off : off + size]
        rms = block.pow(2).mean(1, keepdim=True).sqrt()
        out[:, off : off + size] += scale * rms * torch.randn(block.shape, generator=g)
    return out


def average_baseline(train, layout: Layout, n: int, k: int, seed: int) -> torch.Tensor:
    """Averages of k random training rows aligned to the first of them."""
    g = torch_generator(seed, streams.GENERATOR_AVERAGE)
    out = []
    for _ in range(n):
        pick = train[torch.randperm(len(train), generator=g)[:k]]
        out.append(align(pick, pick[0], layout, seed=seed).weights.mean(0))
    return torch.stack(out)


def gaussian_baseline(train, layout: Layout, n: int, seed: int) -> torch.Tensor:
    """Per-coordinate Gaussian fitted on the training rows aligned to a common reference."""
    al = align(train, train[0], layout, seed=seed).weights
    mean, std = al.mean(0), al.std(0) if len(al) > 1 else torch.zeros_like(al[0])
    return mean + std * torch.randn(
        (n, al.shape[1]), generator=torch_generator(seed, streams.GENERATOR_GAUSSIAN)
    )


# --- the evaluation -------------------------------------------------------------------------------


@dataclass
class Reference:
    """What generated models are compared against: the zoo's training rows and test data."""

    layout: Layout
    train: torch.Tensor  # (N, P) training-split checkpoints
    train_ids: list[str]
    holdout: torch.Tensor  # (H, P) test-split checkpoints (for the diversity reference)
    x_test: torch.Tensor
    y_test: torch.Tensor


def score(source: str, weights, ref: Reference, settings: EvalSettings, train_logits) -> Scores:
    """Every per-model measurement of one source."""
    logits = predictions(ref.layout, weights, ref.x_test)
    acc, loss = performance(logits, ref.y_test)
    novelty, nearest, _ = nearest_after_alignment(
        weights, ref.train, ref.layout, settings.candidates, settings.seed
    )
    pred, ref_pred = logits.argmax(-1), train_logits.argmax(-1)[nearest]
    agreement = (pred == ref_pred).double().mean(1).tolist()
    err, ref_err = pred != ref.y_test, ref_pred != ref.y_test
    union = (err | ref_err).sum(1).double()
    iou = torch.where(union > 0, (err & ref_err).sum(1) / union.clamp_min(1), torch.nan)
    return Scores(
        source,
        acc,
        loss,
        novelty,
        [ref.train_ids[j] for j in nearest],
        agreement,
        iou.tolist(),
        diversity(weights, ref.layout, settings.seed),
    )


def evaluate(generated: torch.Tensor, ref: Reference, settings: EvalSettings | None = None):
    """Score generated weights and the baselines on the same held-out data.

    Returns:
        ``{source: Scores}`` with ``generator`` first, then each baseline, plus ``holdout``
        (the zoo's own test-split checkpoints, the yardstick for diversity and accuracy).
    """
    settings = settings or EvalSettings()
    gen = check_weights(generated, ref.layout, "generated")
    train_logits = predictions(ref.layout, ref.train, ref.x_test)
    out = {"generator": score("generator", gen, ref, settings, train_logits)}
    n, scale = len(gen), float(np.median(out["generator"].novelty))
    made = {
        "noise": lambda: noise_baseline(ref.train, ref.layout, n, scale, settings.seed),
        "average": lambda: average_baseline(
            ref.train, ref.layout, n, settings.average_k, settings.seed
        ),
        "gaussian": lambda: gaussian_baseline(ref.train, ref.layout, n, settings.seed),
    }
    for name in settings.baselines:
        out[name] = score(name, made[name](), ref, settings, train_logits)
    if len(ref.holdout):
        out["holdout"] = score("holdout", ref.holdout, ref, settings, train_logits)
    return out


def load_reference(folder: str | Path, config: str | None = None, epochs: str = "last"):
    """The training and test-split checkpoints of a built zoo (status ``ok``) and its test data.

    Args:
        folder: a dataset folder built by ``zoo build`` (or pulled with ``zoo pull``).
        config: the architecture config (needed when the zoo has several).
        epochs: ``last`` (the final checkpoints, what generators are usually trained on) or
            ``all``.
    """
    import datasets

    from zoo.tasks import load_task

    folder = dataset_folder(folder)
    layout = load_layout(folder, config)
    splits = datasets.load_dataset(str(folder), config)
    if "train" not in splits:
        raise GeneratorError(f"{folder}: no train split (splits: {sorted(splits)})")

    def rows(split: str):
        if split not in splits:
            return torch.zeros(0, layout.num_params), [], None
        ds = splits[split].filter(lambda r: r["status"] == "ok")
        if epochs == "last":
            last = max(ds["epoch"])
            ds = ds.filter(lambda r: r["epoch"] == last)
        return ds.with_format("torch")["weights"][:], list(ds["checkpoint_id"]), ds

    train, ids, ds = rows("train")
    holdout, _, _ = rows("test")
    first = ds[0]
    task = load_task({k[len("task__") :]: v for k, v in first.items() if k.startswith("task__")})
    return Reference(layout, train.float(), ids, holdout.float(), task.x_test, task.y_test)


def report(results: dict[str, Scores], settings: EvalSettings) -> dict:
    """The JSON report: settings, a summary per source, and every model's scores."""
    return {
        "settings": settings.to_dict(),
        "summary": [s.summary(settings.replica_threshold) for s in results.values()],
        "models": {name: s.to_dict() for name, s in results.items()},
    }


def plot_scatter(results: dict[str, Scores], path: Path) -> Path:
    """Accuracy vs novelty of generated models, baselines and held-out checkpoints (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for name, s in results.items():
        ax.scatter(s.novelty, s.test_acc, label=name, s=18, alpha=0.75)
    ax.set_xlabel("novelty: relative L2 to the nearest training checkpoint after alignment")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    ax.set_title("generated models vs baselines", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
