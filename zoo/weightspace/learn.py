"""Downstream baselines on a built zoo: predict a model's properties from its weights.

Splits are the zoo's own (by a hash of ``run_id``, so no run is in two splits): models fit on
``train`` and are scored on ``test``. Three parts (issue 8):

1. **Weight statistics** (Unterthiner et al. 2020): per parameter tensor, the mean, variance
   and 1/25/50/75/99 percentiles -> ridge (CV'd L2) and gradient-boosted trees -> R² and
   Kendall τ for each target (test accuracy, generalization gap, epoch).
2. **Phase label** -> logistic regression and boosted trees on the same features -> accuracy,
   if the zoo has a ``phase`` column (else a note says so).
3. **Weight-space networks** (:mod:`zoo.weightspace.nets`), trained without and with each
   augmentation of :mod:`zoo.weightspace.augment`: an MLP on the flat (standardized) weights, and a
   DeepSets network over neurons, invariant to every permutation of the spec by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from scipy.stats import kendalltau
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from zoo import streams
from zoo.errors import ZooError
from zoo.layout import Layout
from zoo.naming import split_of, value_position
from zoo.store.dataset import dataset_folder, load_layout
from zoo.streams import torch_generator
from zoo.weightspace.augment import (
    Dropout,
    Erase,
    Mixup,
    Noise,
    Prune,
    Transform,
    augment,
    default_augmentations,
    exact_symmetries,
)
from zoo.weightspace.nets import NETS, Encoder, make_net

QUANTILES = (0.01, 0.25, 0.50, 0.75, 0.99)
STATISTICS = ("mean", "var", *(f"q{round(q * 100):02d}" for q in QUANTILES))
TARGETS = ("test_acc", "gen_gap_acc", "epoch")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Score:
    """One fitted model's score on the test split (mean and std over ``repeats`` seeds)."""

    part: str  # statistics | phase | weight_net
    target: str
    model: str
    augmentation: str
    r2: float | None
    tau: float | None
    accuracy: float | None
    n_train: int
    n_test: int
    repeats: int = 1
    r2_std: float | None = None
    tau_std: float | None = None
    accuracy_std: float | None = None
    views: int | None = None  # training rows per signal (signal zoos; None: every row)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Score:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass(frozen=True)
class LearnReport:
    """Every score of a :func:`learn` call, plus notes (e.g. "no phase column")."""

    folder: str
    config: str
    scores: tuple[Score, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "config": self.config,
            "notes": list(self.notes),
            "scores": [s.to_dict() for s in self.scores],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LearnReport:
        scores = tuple(Score.from_dict(s) for s in d["scores"])
        return cls(d["folder"], d["config"], scores, tuple(d.get("notes", ())))


@dataclass(frozen=True, eq=False)
class ZooSplits:
    """The usable rows (status ok, finite weights) of one config, per split."""

    layout: Layout
    config: str
    weights: dict[str, torch.Tensor]  # split -> (N, P) float32
    columns: dict[str, dict[str, np.ndarray]]  # split -> column -> (N,)


def load_splits(folder: str | Path, config: str | None = None) -> ZooSplits:
    """Read a built zoo (``OUT`` or ``OUT/dataset``) into tensors, dropping diverged rows.

    Raises:
        ZooError: when there is no ``train`` or ``test`` split with rows.
    """
    folder = dataset_folder(folder)
    layout = load_layout(folder, config)
    config = config or next(iter(datasets.get_dataset_config_names(str(folder))))
    weights, columns = {}, {}
    for split, ds in datasets.load_dataset(str(folder), config).items():
        w = torch.as_tensor(np.asarray(ds.with_format("numpy")["weights"]), dtype=torch.float32)
        cols = ds.remove_columns("weights").to_pandas()
        ok = (cols["status"] == "ok").to_numpy() & torch.isfinite(w).all(dim=1).numpy()
        weights[split] = w[torch.as_tensor(ok)]
        columns[split] = {k: cols[k].to_numpy()[ok] for k in cols.columns}
    missing = [s for s in ("train", "test") if len(weights.get(s, ())) == 0]
    if missing:
        raise ZooError(
            f"{folder} ({config}) has no usable rows in split(s) {missing} (splits: "
            f"{ {s: len(w) for s, w in weights.items()} }); splits are by run: train more seeds "
            f"(--set seeds=...) so that every split gets runs"
        )
    return ZooSplits(layout, config, weights, columns)


def select_rows(data: ZooSplits, keep: dict[str, np.ndarray]) -> ZooSplits:
    """The rows of each split where ``keep[split]`` (a boolean mask) is true."""
    weights = {s: w[torch.as_tensor(keep[s])] for s, w in data.weights.items()}
    columns = {s: {k: v[keep[s]] for k, v in c.items()} for s, c in data.columns.items()}
    return ZooSplits(data.layout, data.config, weights, columns)


def at_epoch(data: ZooSplits, epoch: int | str) -> ZooSplits:
    """Only the checkpoints at ``epoch`` (``"last"``: the largest epoch of the zoo), e.g. the
    fitted networks of a signal zoo."""
    if epoch == "last":
        epoch = max(int(c["epoch"].max()) for c in data.columns.values() if len(c["epoch"]))
    return select_rows(data, {s: c["epoch"] == int(epoch) for s, c in data.columns.items()})


def regroup(data: ZooSplits, column: str, test_fraction: float = 0.2) -> ZooSplits:
    """Train and test splits by a hash of ``column`` instead of the zoo's own: every row that
    shares its value (every view of one image: ``task__index``) lands in one split. The
    zoo's splits are pooled first (``output.split_by`` makes this unnecessary at build time).
    """
    pooled = {
        k: np.concatenate([c[k] for c in data.columns.values()]) for k in data.columns["train"]
    }
    if column not in pooled:
        raise ZooError(f"{data.config}: no column {column!r} to split by; e.g. task__index")
    weights = torch.cat(list(data.weights.values()))
    fractions = {"train": 1.0 - test_fraction, "test": test_fraction}
    # the build's rule for output.split_by: a value's position frac(golden ratio * value)
    split = np.array([split_of(value_position(_plain(v)), fractions) for v in pooled[column]])
    return ZooSplits(
        data.layout,
        data.config,
        {s: weights[torch.as_tensor(split == s)] for s in fractions},
        {s: {k: v[split == s] for k, v in pooled.items()} for s in fractions},
    )


def _plain(value):
    """A numpy scalar as the Python value it holds (``value_position`` takes ints as ints)."""
    return value.item() if isinstance(value, np.generic) else value


def first_views(data: ZooSplits, views: int) -> ZooSplits:
    """Training rows of the first ``views`` seeds only (1 view vs k views per signal); the
    test split keeps every row."""
    keep = {s: np.ones(len(c["seed"]), dtype=bool) for s, c in data.columns.items()}
    keep["train"] = data.columns["train"]["seed"] < views
    return select_rows(data, keep)


# --- 1. and 2.: weight statistics -------------------------------------------------------------


def layer_statistics(weights: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Per parameter tensor: mean, variance, and the 1/25/50/75/99 percentiles.

    Args:
        weights: ``(B, P)`` rows.
        layout: their layout.
    Returns:
        ``(B, 7 * len(layout.names))``, in layout order, :data:`STATISTICS` within a tensor.
    """
    q = torch.tensor(QUANTILES, dtype=torch.float64)
    parts = []
    for off, n in zip(layout.offsets, layout.sizes, strict=True):
        w = weights[:, off : off + n].double()  # (B, n)
        quantiles = torch.quantile(w, q, dim=1).T  # (B, 5)
        parts.append(
            torch.cat([w.mean(1, keepdim=True), w.var(1, correction=0)[:, None], quantiles], dim=1)
        )
    return torch.cat(parts, dim=1)


def _clean(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float | None, ...]:
    """``(R², Kendall τ)``; ``None`` where undefined (constant truth or predictions)."""
    if len(y_true) < 2 or np.ptp(y_true) == 0:
        return None, None
    tau = kendalltau(y_true, y_pred).statistic
    return _clean(r2_score(y_true, y_pred)), _clean(tau)


def _target(data: ZooSplits, split: str, target: str) -> np.ndarray:
    cols = data.columns[split]
    if target not in cols:
        numeric = sorted(k for k, v in cols.items() if np.issubdtype(v.dtype, np.number))
        raise ZooError(
            f"{data.config}: no column {target!r} to predict; numeric columns: {numeric}"
        )
    return cols[target].astype(np.float64)


def fit_statistics(data: ZooSplits, target: str, *, seed: int = 0) -> list[Score]:
    """Part 1: ridge and gradient-boosted trees on :func:`layer_statistics`."""
    x = {s: layer_statistics(data.weights[s], data.layout).numpy() for s in ("train", "test")}
    y = {s: _target(data, s, target) for s in ("train", "test")}
    keep = {s: np.isfinite(y[s]) for s in y}
    models = {
        "ridge": make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))),
        "gbt": GradientBoostingRegressor(
            n_estimators=200, max_depth=3, learning_rate=0.05, subsample=0.8, random_state=seed
        ),
    }
    out = []
    for name, model in models.items():
        model.fit(x["train"][keep["train"]], y["train"][keep["train"]])
        r2, tau = regression_scores(y["test"][keep["test"]], model.predict(x["test"][keep["test"]]))
        out.append(
            Score(
                "statistics",
                target,
                name,
                "none",
                r2,
                tau,
                None,
                int(keep["train"].sum()),
                int(keep["test"].sum()),
            )
        )
    return out


def classify_phase(data: ZooSplits, *, seed: int = 0) -> list[Score]:
    """Part 2: the ``phase`` label from weight statistics -> test accuracy (needs the column)."""
    x = {s: layer_statistics(data.weights[s], data.layout).numpy() for s in ("train", "test")}
    y = {s: data.columns[s]["phase"].astype(str) for s in ("train", "test")}
    if len(set(y["train"])) < 2:
        only = sorted(set(y["train"]))
        acc = float(np.mean(y["test"] == only[0]))
        return [
            Score(
                "phase",
                "phase",
                "constant",
                "none",
                None,
                None,
                acc,
                len(y["train"]),
                len(y["test"]),
            )
        ]
    models = {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "gbt": GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=seed),
    }
    out = []
    for name, model in models.items():
        model.fit(x["train"], y["train"])
        acc = float(np.mean(model.predict(x["test"]) == y["test"]))
        out.append(
            Score("phase", "phase", name, "none", None, None, acc, len(y["train"]), len(y["test"]))
        )
    return out


# --- 3.: weight-space networks, trained with augmentations ------------------------------------


def train_weight_net(
    data: ZooSplits,
    target: str,
    kind: str,
    transforms: Sequence[Transform],
    *,
    epochs: int = 60,
    seed: int = 0,
    batch_size: int = 32,
) -> np.ndarray:
    """Train one weight-space net on ``train`` (augmenting each minibatch); predict ``test``.

    Returns:
        ``(N_test,)`` predictions of ``target``.
    """
    # init and minibatch order from one stream, augmentations from another: with and without
    # an augmentation, a net starts the same and sees the same minibatches
    gen, aug_gen = torch_generator(seed, streams.LEARN, 1), torch_generator(seed, streams.LEARN, 2)
    w, y = data.weights["train"], torch.as_tensor(_target(data, "train", target))
    mu, sd = y.mean(), y.std().clamp_min(1e-8)
    encode = Encoder(kind, data.layout, w)
    net = make_net(kind, data.layout, gen)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        for idx in torch.randperm(len(w), generator=gen).split(batch_size):
            rows = augment(w[idx], data.layout, transforms, seed=aug_gen, targets={target: y[idx]})
            loss = (net(encode(rows.weights)) - (rows.targets[target] - mu) / sd).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return (net.eval()(encode(data.weights["test"])).double() * sd + mu).numpy()


def augmentation_sets(layout: Layout, target: str | tuple[str, ...]) -> dict[str, list[Transform]]:
    """Name -> transforms compared in part 3: none, each exact symmetry, each perturbation,
    mixup of weights and target (a classifier's one-hot columns: a tuple), aligned mixup
    (slow: one weight matching per row), the default pipeline."""
    mixed = (target,) if isinstance(target, str) else tuple(target)
    sets: dict[str, list[Transform]] = {"none": []}
    sets.update({t.name: [t] for t in exact_symmetries(layout)})
    sets.update(
        noise=[Noise(0.05)],
        dropout=[Dropout(0.05)],
        erase=[Erase()],
        prune=[Prune((0.0, 0.3))],
        mixup=[Mixup(0.2, targets=mixed)],
        mixup_aligned=[Mixup(0.2, targets=mixed, aligned=True)],
        default=default_augmentations(layout),
    )
    return sets


DEFAULT_AUGMENTATIONS = (
    "none",
    "permute",
    "sign_flip",
    "rescale",
    "noise",
    "dropout",
    "erase",
    "mixup",
    "default",
)
SET_NAMES = (*DEFAULT_AUGMENTATIONS, "prune", "mixup_aligned")


def check_choices(nets: Sequence[str], augmentations: Sequence[str]) -> None:
    """Raise :class:`ZooError` naming unknown nets or augmentation sets, before any work."""
    bad = [n for n in nets if n not in NETS] + [a for a in augmentations if a not in SET_NAMES]
    if bad:
        raise ZooError(
            f"unknown net(s) or augmentation set(s) {bad}: nets are {list(NETS)}, "
            f"augmentation sets {list(SET_NAMES)}"
        )


def fit_weight_nets(
    data: ZooSplits,
    target: str,
    *,
    nets: Sequence[str] = NETS,
    augmentations: Sequence[str] = DEFAULT_AUGMENTATIONS,
    epochs: int = 60,
    repeats: int = 1,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[Score]:
    """Part 3: each net without and with each augmentation (those that apply to the layout),
    ``repeats`` seeds each; scores are means over the seeds."""
    check_choices(nets, augmentations)
    sets = augmentation_sets(data.layout, target)
    y_test = _target(data, "test", target)
    out = []
    for kind in nets:
        for name in (a for a in augmentations if a in sets):  # e.g. no sign_flip for relu
            runs = [
                regression_scores(
                    y_test,
                    train_weight_net(data, target, kind, sets[name], epochs=epochs, seed=seed + r),
                )
                for r in range(repeats)
            ]
            r2s, taus = zip(*runs, strict=True)
            out.append(
                Score(
                    "weight_net",
                    target,
                    kind,
                    name,
                    _mean(r2s),
                    _mean(taus),
                    None,
                    len(data.weights["train"]),
                    len(y_test),
                    repeats,
                    _std(r2s),
                    _std(taus),
                )
            )
            if progress:
                progress(f"{target} {kind} {name}")
    return out


def _mean(xs) -> float | None:
    return None if any(x is None for x in xs) else float(np.mean(xs))


def _std(xs) -> float | None:
    return None if any(x is None for x in xs) or len(xs) < 2 else float(np.std(xs, ddof=1))


def learn(
    folder: str | Path,
    targets: Sequence[str] = ("test_acc",),
    *,
    config: str | None = None,
    nets: Sequence[str] = NETS,
    augmentations: Sequence[str] = DEFAULT_AUGMENTATIONS,
    epochs: int = 60,
    repeats: int = 1,
    seed: int = 0,
    progress: Progress | None = None,
) -> LearnReport:
    """Run the baselines of a built zoo.

    Args:
        folder: the zoo's output folder (or its ``dataset`` folder).
        targets: columns to predict, e.g. :data:`TARGETS`.
        config: the config (architecture) to use; ``None`` if the zoo has one.
        nets: weight-space nets of part 3 (``()`` skips part 3).
        augmentations: augmentation sets of part 3 (:func:`augmentation_sets` names).
        epochs: training epochs of each weight-space net.
        repeats: seeds per weight-space net (scores are means; stds reported).
        seed: base seed of everything random.
        progress: called with a short label after each fitted net.
    Returns:
        a :class:`LearnReport`.
    """
    check_choices(nets, augmentations)
    data = load_splits(folder, config)
    scores, notes = [], []
    skipped = (
        [a for a in augmentations if a not in augmentation_sets(data.layout, "")] if nets else []
    )
    if skipped:
        notes.append(f"{skipped} skipped: not a symmetry of {data.layout.activation!r} networks")
    for target in targets:
        scores += fit_statistics(data, target, seed=seed)
    if "phase" in data.columns["train"]:
        scores += classify_phase(data, seed=seed)
    else:
        notes.append("no phase column: phase classification skipped (landscape metrics add it)")
    for target in targets:
        scores += fit_weight_nets(
            data,
            target,
            nets=nets,
            augmentations=augmentations,
            epochs=epochs,
            repeats=repeats,
            seed=seed,
            progress=progress,
        )
    return LearnReport(str(dataset_folder(folder)), data.config, tuple(scores), tuple(notes))
