"""Weight-space augmentations: seeded transforms on batches of rows (flat weights + a layout).

The transforms are values of :mod:`zoo.transforms` (issue 8): **exact symmetries**
(:class:`Permute`, :class:`SignFlip`, :class:`Rescale`), **perturbations** (:class:`Noise`,
:class:`Dropout`, :class:`Erase`, :class:`Prune`) and :class:`Mixup`; this module re-exports
them all, so ``from zoo.augment import Noise`` is the way to import them. Here they are applied:
:func:`augment` runs a chain on a ``(B, P)`` batch (a permutation and the rescalings after it
in one pass), never writing into its inputs.

An :class:`Augmenter` chains transforms for one layout and seed. It is the function for
``dataset.with_transform(aug)`` and ``dataset.map(aug, batched=True)``, and ``aug.collate`` is
a ``DataLoader`` collate function. Call ``k`` of an augmenter draws from a generator seeded by
``SeedSequence([seed, STREAM_AUGMENT, worker, k])`` (``worker`` is 0 in the main process, else
the ``DataLoader`` worker's torch seed), so the same seed and the same sequence of calls give
the same rows, and workers draw different ones in every epoch.

Example:
    >>> import torch
    >>> from zoo.models import build_model
    >>> net, layout = build_model({"arch": "mlp", "width": 8, "depth": 1, "activation": "tanh"},
    ...                           (4,), 3)
    >>> aug = Augmenter(layout, [Permute(), SignFlip(), Noise(sigma=0.01)], seed=0)
    >>> batch = aug({"weights": torch.zeros(5, layout.num_params).tolist(), "test_acc": [0.5] * 5})
    >>> batch["weights"].shape, batch["test_acc"]
    (torch.Size([5, 67]), [0.5, 0.5, 0.5, 0.5, 0.5])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info

from .errors import AugmentError
from .layout import Layout, permute_rows
from .transforms import (
    AUGMENTATIONS,
    HOMOGENEOUS,
    MAXPOOL_BEFORE_ACTIVATION,
    ODD,
    Dropout,
    Erase,
    Mixup,
    Noise,
    Permute,
    Prune,
    Rescale,
    Rows,
    SignFlip,
    Symmetry,
    Transform,
    exact_symmetries,
    sign_flip_groups,
)  # fmt: skip

__all__ = [  # the names of zoo.transforms are re-exported: import them from here
    "AUGMENTATIONS", "HOMOGENEOUS", "MAXPOOL_BEFORE_ACTIVATION", "ODD", "STREAM_AUGMENT",
    "Augmenter", "Dropout", "Erase", "Mixup", "Noise", "Permute", "Prune", "Rescale", "Rows",
    "SignFlip", "Symmetry", "Transform", "as_weights", "augment", "default_augmentations",
    "exact_symmetries", "generator_for", "sign_flip_groups",
]  # fmt: skip

STREAM_AUGMENT = 31


def default_augmentations(layout: Layout) -> list[Transform]:
    """The default pipeline: the exact symmetries of the layout. They never change what a row
    computes, so its metric columns stay true; add perturbations (noise, dropout, erasing,
    mixup) explicitly where a task benefits (``benchmarks/downstream.py`` measures them)."""
    return exact_symmetries(layout)


# --- applying a chain: tensors, datasets batches, DataLoader collate ----------------------------


def generator_for(seed: int, *keys: int) -> torch.Generator:
    """A torch generator seeded by ``SeedSequence([seed, STREAM_AUGMENT, *keys])``."""
    state = np.random.SeedSequence([seed, STREAM_AUGMENT, *keys]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


def as_weights(values: Any, layout: Layout) -> torch.Tensor:
    """A batch's weight column (tensor, array, list of rows) as a ``(B, P)`` float32 tensor."""
    if isinstance(values, torch.Tensor):
        out = values.to(torch.float32)
    elif isinstance(values, Sequence) and values and isinstance(values[0], torch.Tensor):
        out = torch.stack(list(values)).to(torch.float32)
    else:
        out = torch.from_numpy(np.asarray(values, dtype=np.float32))
    if out.dim() != 2 or out.shape[1] != layout.num_params:
        raise AugmentError(
            f"weights of shape {tuple(out.shape)} do not fit the layout ({layout.num_params} "
            f"parameters): augmentations take batches of rows (B, {layout.num_params}); for one "
            f"row use weights[None]"
        )
    return out


def augment(
    weights: Any, layout: Layout, transforms: Sequence[Transform], *,
    seed: int | torch.Generator = 0, targets: dict[str, Any] | None = None,
) -> Rows:  # fmt: skip
    """Apply a chain of transforms to a batch of rows; the same seed gives the same rows.

    Args:
        weights: ``(B, P)`` rows (tensor, array or list of rows); never modified.
        layout: the rows' layout.
        transforms: applied in order.
        seed: an int (seeds a generator) or a ``torch.Generator`` (advanced).
        targets: column name -> ``(B,)`` values, for mixup with targets.
    Returns:
        the new :class:`Rows`.
    """
    gen = seed if isinstance(seed, torch.Generator) else generator_for(seed)
    cols = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in (targets or {}).items()}
    rows = Rows(as_weights(weights, layout), cols)
    pending: tuple[dict, dict] | None = None  # a permutation + the rescalings after it
    for t in transforms:
        t.check(layout)
        if isinstance(t, Symmetry):
            perms, factors = t.draw(layout, rows.weights.shape[0], gen)
            if pending is not None and not perms:  # fuse: one pass over the weights
                before = pending[1]
                merged = {g: before[g] * f if g in before else f for g, f in factors.items()}
                pending = (pending[0], {**before, **merged})
                continue
            rows = _flush(rows, layout, pending)
            pending = (perms, factors)
        else:
            rows = t(_flush(rows, layout, pending), layout, gen)
            pending = None
    return _flush(rows, layout, pending)


def _flush(rows: Rows, layout: Layout, pending: tuple[dict, dict] | None) -> Rows:
    if pending is None:
        return rows
    return Rows(permute_rows(rows.weights, layout, *pending), rows.targets)


def _collate_column(values: list) -> Any:
    try:
        return default_collate(values)
    except (TypeError, RuntimeError):  # None (e.g. diverged_epoch) or ragged values: keep a list
        return values


class Augmenter:
    """A seeded chain of transforms for one layout, for ``datasets`` and ``DataLoader``.

    ``ds.with_transform(aug)`` and ``ds.map(aug, batched=True)`` call it on batch dicts;
    ``DataLoader(ds.with_format("torch"), batch_size=256, collate_fn=aug.collate)`` collates
    rows then augments them. The weight column comes back as a ``(B, P)`` float32 tensor, mixed
    target columns as ``(B,)`` float64 tensors, other columns unchanged.

    Args:
        layout: the rows' layout (``zoo.load_layout(folder, config)``).
        transforms: the chain; ``None`` is :func:`default_augmentations`.
        seed: call ``k`` draws from ``generator_for(seed, worker, k)`` (see the module doc).
        column: the weight column.
    """

    def __init__(
        self, layout: Layout, transforms: Sequence[Transform] | None = None, *, seed: int = 0,
        column: str = "weights",
    ):  # fmt: skip
        self.layout = layout
        chain = default_augmentations(layout) if transforms is None else transforms
        self.transforms = tuple(chain)
        for t in self.transforms:
            t.check(layout)
        self.seed, self.column, self.calls = int(seed), column, 0

    @property
    def target_columns(self) -> tuple[str, ...]:
        """Columns the chain mixes (mixup ``targets``)."""
        return tuple(dict.fromkeys(c for t in self.transforms for c in getattr(t, "targets", ())))

    def next_generator(self) -> torch.Generator:
        """The generator of the next call. In a ``DataLoader`` worker, the key is the worker's
        torch seed (new for every epoch, fixed by the loader's ``generator``): the worker's
        copy of the call count restarts at each epoch, its seed does not repeat."""
        info = get_worker_info()
        gen = generator_for(self.seed, 0 if info is None else info.seed + 1, self.calls)
        self.calls += 1
        return gen

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Augment a batch dict (``{column: values}``); returns a new dict."""
        missing = [c for c in (self.column, *self.target_columns) if c not in batch]
        if missing:
            raise AugmentError(
                f"the batch has no column(s) {missing} (it has {sorted(batch)}); keep them when "
                f"selecting columns, or pass column=... to Augmenter"
            )
        targets = {c: batch[c] for c in self.target_columns}
        rows = augment(batch[self.column], self.layout, self.transforms,
                       seed=self.next_generator(), targets=targets)  # fmt: skip
        return {**batch, self.column: rows.weights, **rows.targets}

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """A ``DataLoader`` ``collate_fn``: rows -> one augmented batch dict."""
        batch = {k: _collate_column([r[k] for r in rows]) for k in rows[0] if k != self.column}
        batch[self.column] = as_weights([r[self.column] for r in rows], self.layout)
        return self(batch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout.to_dict(),
            "transforms": [t.to_dict() for t in self.transforms],
            "seed": self.seed,
            "column": self.column,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Augmenter:
        transforms = [Transform.from_dict(t) for t in d["transforms"]]
        return cls(Layout.from_dict(d["layout"]), transforms, seed=d["seed"], column=d["column"])
