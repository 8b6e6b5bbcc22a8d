"""Classification from weights (issue 14): predict a class label (an INR's image class) from a
network's weights, the benchmark of the permutation-equivariant weight-space networks
(DWSNets, NFN) on MNIST / Fashion-MNIST INRs.

The same three kinds of baselines as :mod:`zoo.weightspace.learn`, scored by test accuracy:

1. weight statistics (per tensor: mean, variance, 1/25/50/75/99 percentiles; invariant to
   every permutation) -> logistic regression and gradient-boosted trees;
2. weight-space networks (:mod:`zoo.weightspace.nets`: an MLP on flat weights; DeepSets over
   neurons, invariant by construction) trained with cross-entropy, without and with each
   augmentation (mixup mixes the one-hot labels: soft targets), ``repeats`` seeds each;
3. all of it with 1 view or k views per signal in the training split (``views``: the first
   seeds), the question of Shamsian et al. 2024 ("Improved generalization of weight space
   networks via augmentations"): do augmentations recover the gain of more views?

Splits are by signal: the zoo's own where it was built with ``output.split_by: task.index``,
else by a hash of ``task__index`` (``group``); at one epoch (``epoch="last"``: the fitted
networks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from zoo import streams
from zoo.errors import ZooError
from zoo.store.dataset import dataset_folder
from zoo.streams import torch_generator
from zoo.weightspace.augment import Transform, augment
from zoo.weightspace.learn import (
    DEFAULT_AUGMENTATIONS,
    LearnReport,
    Progress,
    Score,
    ZooSplits,
    at_epoch,
    augmentation_sets,
    check_choices,
    first_views,
    layer_statistics,
    load_splits,
    regroup,
)
from zoo.weightspace.nets import NETS, Encoder, make_net


def class_labels(data: ZooSplits, target: str) -> tuple[dict[str, np.ndarray], int]:
    """Each split's labels as int64 ``0 .. K-1`` and ``K`` (from the train and test values)."""
    cols = data.columns
    if target not in cols["train"]:
        raise ZooError(f"{data.config}: no column {target!r} to classify; e.g. label")
    values = np.concatenate([cols["train"][target], cols["test"][target]])
    classes = np.unique(values)
    return {s: np.searchsorted(classes, cols[s][target]) for s in ("train", "test")}, len(classes)


def fit_statistics(data: ZooSplits, target: str, *, seed: int = 0) -> list[Score]:
    """Part 1: logistic regression and boosted trees on :func:`layer_statistics`."""
    x = {s: layer_statistics(data.weights[s], data.layout).numpy() for s in ("train", "test")}
    y, _ = class_labels(data, target)
    models = {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
        "gbt": GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=seed),
    }
    out = []
    for name, model in models.items():
        model.fit(x["train"], y["train"])
        acc = float(np.mean(model.predict(x["test"]) == y["test"]))
        out.append(_score("statistics", target, name, "none", data, [acc]))
    return out


def _score(part: str, target: str, model: str, aug: str, data: ZooSplits, accs) -> Score:
    views = int(data.columns["train"]["seed"].max()) + 1 if len(data.weights["train"]) else 0
    n_train, n_test = len(data.weights["train"]), len(data.weights["test"])
    std = float(np.std(accs, ddof=1)) if len(accs) > 1 else None
    return Score(
        part,
        target,
        model,
        aug,
        None,
        None,
        float(np.mean(accs)),
        n_train,
        n_test,
        repeats=len(accs),
        accuracy_std=std,
        views=views,
    )


def train_weight_classifier(
    data: ZooSplits,
    target: str,
    kind: str,
    transforms: Sequence[Transform],
    *,
    epochs: int = 60,
    seed: int = 0,
    batch_size: int = 32,
) -> np.ndarray:
    """Train one weight-space net with cross-entropy on ``train`` (augmenting each minibatch,
    mixup on one-hot labels); return its class predictions on ``test``."""
    gen, aug_gen = torch_generator(seed, streams.LEARN, 1), torch_generator(seed, streams.LEARN, 2)
    labels, k = class_labels(data, target)
    w = data.weights["train"]
    onehot = torch.nn.functional.one_hot(torch.as_tensor(labels["train"]), k).double()  # (N, K)
    names = class_columns(target, k)
    encode = Encoder(kind, data.layout, w)
    net = make_net(kind, data.layout, gen, outputs=k)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        for idx in torch.randperm(len(w), generator=gen).split(batch_size):
            soft = {n: onehot[idx, c] for c, n in enumerate(names)}
            rows = augment(w[idx], data.layout, transforms, seed=aug_gen, targets=soft)
            target_probs = torch.stack([rows.targets[n] for n in names], 1).float()  # (B, K)
            logp = torch.log_softmax(net(encode(rows.weights)), dim=1)
            loss = -(target_probs * logp).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return net.eval()(encode(data.weights["test"])).argmax(1).numpy()


def class_columns(target: str, k: int) -> tuple[str, ...]:
    """Names of the one-hot columns of ``k`` classes (what mixup mixes)."""
    return tuple(f"{target}={c}" for c in range(k))


def fit_weight_classifiers(
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
    """Part 2: each net without and with each augmentation (those that apply to the layout),
    ``repeats`` seeds each; accuracy means and standard deviations over the seeds."""
    check_choices(nets, augmentations)
    labels, k = class_labels(data, target)
    sets = augmentation_sets(data.layout, class_columns(target, k))
    out = []
    for kind in nets:
        for name in (a for a in augmentations if a in sets):
            accs = [
                float(
                    np.mean(
                        train_weight_classifier(
                            data, target, kind, sets[name], epochs=epochs, seed=seed + r
                        )
                        == labels["test"]
                    )
                )
                for r in range(repeats)
            ]
            out.append(_score("weight_net", target, kind, name, data, accs))
            if progress:
                progress(f"{target} {kind} {name}")
    return out


SIGNAL_KEY = "task__index"


def leaks(data: ZooSplits, column: str = SIGNAL_KEY) -> bool:
    """Whether some value of ``column`` (a signal) has rows in both train and test."""
    cols = data.columns
    if column not in cols["train"]:
        return False
    return bool(set(cols["train"][column].tolist()) & set(cols["test"][column].tolist()))


def prepare(
    folder: str | Path,
    config: str | None = None,
    *,
    group: str | None = "auto",
    epoch: int | str | None = "last",
    views: int | None = None,
) -> tuple[ZooSplits, str | None]:
    """The rows a classification run uses: one epoch, split by ``group``, the first ``views``
    views in training (``None`` for each: the zoo's rows and splits as they are). ``"auto"``:
    the zoo's splits where they keep every view of a signal together (``output.split_by:
    task.index``), else split by ``task__index``. Returns the rows and the column split by."""
    data = load_splits(folder, config)
    data = at_epoch(data, epoch) if epoch is not None else data
    if group == "auto":
        group = SIGNAL_KEY if leaks(data) else None
    data = regroup(data, group) if group else data
    return (first_views(data, views) if views else data), group


def learn_classes(
    folder: str | Path,
    target: str = "label",
    *,
    config: str | None = None,
    nets: Sequence[str] = NETS,
    augmentations: Sequence[str] = DEFAULT_AUGMENTATIONS,
    epochs: int = 60,
    repeats: int = 1,
    seed: int = 0,
    group: str | None = "auto",
    epoch: int | str | None = "last",
    views: Sequence[int | None] = (None,),
    progress: Progress | None = None,
) -> LearnReport:
    """Predict ``target`` (a class label) from weights: statistics baselines and weight-space
    nets with and without augmentations, for each number of training ``views`` per signal
    (``None``: every view). Scores carry ``views``; accuracy is on the held-out signals.

    Example (the INR benchmark: 1 vs 2 views, exact symmetries and mixup)::

        learn_classes("out/fashion_siren_views", "label", views=(1, None),
                      augmentations=("none", "permute", "sign_flip", "mixup"), repeats=3)
    """
    check_choices(nets, augmentations)
    scores, notes = [], []
    for v in views:
        data, grouped = prepare(folder, config, group=group, epoch=epoch, views=v)
        if not len(data.weights["train"]) or not len(data.weights["test"]):
            raise ZooError(f"{folder}: no rows left in train or test after selecting; grow it")
        scores += fit_statistics(data, target, seed=seed)
        scores += fit_weight_classifiers(
            data,
            target,
            nets=nets,
            augmentations=augmentations,
            epochs=epochs,
            repeats=repeats,
            seed=seed,
            progress=progress,
        )
    if grouped:
        notes.append(f"split by {grouped}: every value in one split (80/20 by hash)")
    return LearnReport(str(dataset_folder(folder)), data.config, tuple(scores), tuple(notes))
