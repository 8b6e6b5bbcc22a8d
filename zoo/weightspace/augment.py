"""Weight-space augmentations: seeded transforms on batches of rows (flat weights + a layout).

A transform is a frozen, round-tripping value that maps ``(B, P)`` float32 rows (and, for mixup,
their target columns) to new ones; it never writes into its inputs. Three kinds (issue 8):

- **exact symmetries**, under which the network computes the same function: :class:`Permute`
  (hidden units and conv channels, from the layout's permutation spec; every activation),
  :class:`SignFlip` (odd activations: ``tanh``, ``sine``) and :class:`Rescale` (positive
  per-unit factors; positively homogeneous activations: ``relu``, ``leaky_relu``);
- **perturbations**: :class:`Noise` (Gaussian, scaled per layer by the weights' std),
  :class:`Dropout`, :class:`Erase` (random erasing of a window), :class:`Prune` (magnitude);
  they perturb parameters only: a layout's buffers (BatchNorm running statistics) pass through;
- :class:`Mixup` of each row with another row of the batch: weights only, weights + target
  columns, or aligned first (Git Re-Basin weight matching, :mod:`zoo.weightspace.align`).

:data:`AUGMENTATIONS` names every transform (``Transform.from_dict`` reads it). :func:`augment`
runs a chain on a ``(B, P)`` batch (a permutation and the rescalings after it in one pass).

An :class:`Augmenter` chains transforms for one layout and seed. It is the function for
``dataset.with_transform(aug)`` and ``dataset.map(aug, batched=True)``, and ``aug.collate`` is
a ``DataLoader`` collate function. Call ``k`` of an augmenter draws from a generator seeded by
``SeedSequence([seed, streams.AUGMENT, worker, k])`` (``worker`` is 0 in the main process, else
the ``DataLoader`` worker's torch seed), so the same seed and the same sequence of calls give
the same rows, and workers draw different ones in every epoch.

Example:
    >>> import torch
    >>> from zoo.nn.architectures import build_model
    >>> net, layout = build_model({"arch": "mlp", "width": 8, "depth": 1, "activation": "tanh"},
    ...                           (4,), 3)
    >>> aug = Augmenter(layout, [Permute(), SignFlip(), Noise(sigma=0.01)], seed=0)
    >>> batch = aug({"weights": torch.zeros(5, layout.num_params).tolist(), "test_acc": [0.5] * 5})
    >>> batch["weights"].shape, batch["test_acc"]
    (torch.Size([5, 67]), [0.5, 0.5, 0.5, 0.5, 0.5])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info

from zoo import streams
from zoo.errors import AugmentError
from zoo.layout import Layout, permute_rows, random_permutations
from zoo.streams import torch_generator
from zoo.weightspace.align import align

ODD = ("tanh", "sine")  # f(-z) = -f(z): flipping a unit's in- and out-weights keeps the function
HOMOGENEOUS = ("relu", "leaky_relu")  # f(a z) = a f(z) for a > 0
# Groups whose units pass a max-pool before the activation: max(-z) = -min(z), so a sign flip
# there changes the function (tests/test_augment.py checks this table against the modules).
MAXPOOL_BEFORE_ACTIVATION = {"cnn_s": ("P0", "P1")}
# Architectures with normalization layers and residual sums (issue 15): a unit's scale or sign
# does not pass through a norm or a sum unchanged, so permutations are their only exact symmetry.
PERMUTATIONS_ONLY = ("resnet", "transformer")


def _check_scaling(name: str, layout: Layout) -> None:
    arch = layout.model.get("arch")
    if arch in PERMUTATIONS_ONLY:
        raise AugmentError(
            f"{name} is not a symmetry of {arch!r}: its normalization layers and residual sums "
            "do not pass a unit's scale or sign through; use permute (heads and residual stream "
            "included) instead"
        )


def _keep_buffers(new: torch.Tensor, old: torch.Tensor, layout: Layout) -> torch.Tensor:
    """``new`` with the entries of the layout's buffers (BatchNorm running statistics) taken
    from ``old``: perturbations act on parameters only."""
    if not layout.buffers:
        return new
    new = new.clone()
    for name, off, n in zip(layout.names, layout.offsets, layout.sizes, strict=True):
        if name in layout.buffers:
            new[:, off : off + n] = old[:, off : off + n]
    return new


@dataclass(frozen=True)
class Rows:
    """A batch: ``weights`` ``(B, P)`` float32 and target columns ``name -> (B,)`` float64."""

    weights: torch.Tensor
    targets: dict[str, torch.Tensor] = field(default_factory=dict)


def _uniform(shape: tuple[int, ...], gen: torch.Generator, low=0.0, high=1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise AugmentError(f"{name} = {value} is outside [{low}, {high}]")


def _check_interval(name: str, pair: tuple[float, float], low: float, high: float) -> None:
    if len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
        raise AugmentError(f"{name} = {pair} must be (lo, hi) with {low} <= lo <= hi <= {high}")


@dataclass(frozen=True)
class Transform:
    """Base of the transforms: a frozen, round-tripping value with a registry ``name``."""

    name: ClassVar[str] = ""

    def check(self, layout: Layout) -> None:
        """Raise :class:`AugmentError` if the transform does not apply to ``layout``."""

    def __call__(self, rows: Rows, layout: Layout, gen: torch.Generator) -> Rows:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {
            "name": self.name,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()},
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Transform:
        """The transform a :meth:`to_dict` output describes."""
        if d.get("name") not in AUGMENTATIONS:
            raise AugmentError(
                f"unknown augmentation {d.get('name')!r}; the registry has {sorted(AUGMENTATIONS)}"
            )
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k != "name"}
        return AUGMENTATIONS[d["name"]](**kwargs)


@dataclass(frozen=True)
class Symmetry(Transform):
    """An exact symmetry: a random permutation and/or per-unit factors for each row.

    ``augment`` applies a permutation and the rescalings that follow it in one pass.
    """

    def draw(self, layout: Layout, b: int, gen: torch.Generator) -> tuple[dict, dict]:
        """``(perms, factors)``: group -> ``(B, n)`` permutations and unit factors."""
        raise NotImplementedError

    def __call__(self, rows: Rows, layout: Layout, gen: torch.Generator) -> Rows:
        perms, factors = self.draw(layout, rows.weights.shape[0], gen)
        return Rows(permute_rows(rows.weights, layout, perms, factors), rows.targets)


@dataclass(frozen=True)
class Permute(Symmetry):
    """Each row's hidden units (conv channels, residual stream, attention heads) permuted at
    random, group by group (blocked groups as whole blocks: :func:`random_permutations`)."""

    name: ClassVar[str] = "permute"

    def draw(self, layout: Layout, b: int, gen: torch.Generator) -> tuple[dict, dict]:
        return random_permutations(layout.perm_spec, b, gen), {}  # group -> (B, n)


def sign_flip_groups(layout: Layout) -> list[str]:
    """Groups whose units may flip sign exactly (all but those max-pooled before activation)."""
    pooled = MAXPOOL_BEFORE_ACTIVATION.get(layout.model.get("arch"), ())
    return [g for g in sorted(layout.perm_spec.sizes) if g not in pooled]


@dataclass(frozen=True)
class SignFlip(Symmetry):
    """Each hidden unit's in- and out-weights negated with probability ``p`` (odd activations)."""

    name: ClassVar[str] = "sign_flip"
    p: float = 0.5

    def __post_init__(self):
        _check_range("sign_flip.p", self.p, 0.0, 1.0)

    def check(self, layout: Layout) -> None:
        _check_scaling("sign_flip", layout)
        if layout.activation not in ODD:
            raise AugmentError(
                f"sign_flip is a symmetry only of odd activations {ODD}; this layout uses "
                f"{layout.activation!r}: use rescale (relu, leaky_relu) or permute instead"
            )

    def draw(self, layout: Layout, b: int, gen: torch.Generator) -> tuple[dict, dict]:
        sizes = layout.perm_spec.sizes
        return {}, {
            g: torch.where(torch.rand(b, sizes[g], generator=gen) < self.p, -1.0, 1.0)
            for g in sign_flip_groups(layout)
        }


@dataclass(frozen=True)
class Rescale(Symmetry):
    """Each hidden unit's in-weights times ``a``, out-weights over ``a``, ``a`` log-uniform in
    ``[low, high]`` (positively homogeneous activations)."""

    name: ClassVar[str] = "rescale"
    low: float = 0.5
    high: float = 2.0

    def __post_init__(self):
        if not 0 < self.low <= self.high:
            raise AugmentError(f"rescale needs 0 < low <= high; got {self.low}, {self.high}")

    def check(self, layout: Layout) -> None:
        _check_scaling("rescale", layout)
        if layout.activation not in HOMOGENEOUS:
            raise AugmentError(
                f"rescale is a symmetry only of positively homogeneous activations {HOMOGENEOUS}; "
                f"this layout uses {layout.activation!r}: use sign_flip (tanh) or permute instead"
            )

    def draw(self, layout: Layout, b: int, gen: torch.Generator) -> tuple[dict, dict]:
        lo, hi = np.log(self.low), np.log(self.high)
        return {}, {
            g: _uniform((b, n), gen, lo, hi).exp()
            for g, n in sorted(layout.perm_spec.sizes.items())
        }


@dataclass(frozen=True)
class Noise(Transform):
    """Gaussian noise, ``sigma`` times the std of each parameter tensor of the row."""

    name: ClassVar[str] = "noise"
    sigma: float = 0.05

    def __post_init__(self):
        _check_range("noise.sigma", self.sigma, 0.0, float("inf"))

    def __call__(self, rows: Rows, layout: Layout, gen: torch.Generator) -> Rows:
        w = rows.weights
        eps = torch.randn(w.shape, generator=gen)  # (B, P), scaled in place per tensor
        for name, off, n in zip(layout.names, layout.offsets, layout.sizes, strict=True):
            std = w[:, off : off + n].std(1, keepdim=True, correction=0)  # (B, 1)
            eps[:, off : off + n] *= 0.0 if name in layout.buffers else self.sigma * std
        return Rows(w + eps, rows.targets)


@dataclass(frozen=True)
class Dropout(Transform):
    """Each weight zeroed with probability ``p`` (times ``1/(1-p)`` if ``rescale``)."""

    name: ClassVar[str] = "dropout"
    p: float = 0.05
    rescale: bool = False

    def __post_init__(self):
        _check_range("dropout.p", self.p, 0.0, 0.999)

    def __call__(self, rows: Rows, layout: Layout, gen: torch.Generator) -> Rows:
        keep = torch.rand(rows.weights.shape, generator=gen) >= self.p
        scale = 1.0 / (1.0 - self.p) if self.rescale else 1.0
        return Rows(_keep_buffers(rows.weights * keep * scale, rows.weights, layout), rows.targets)


@dataclass(frozen=True)
class Erase(Transform):
    """With probability ``p``, a window covering a fraction in ``scale`` of the row set to
    ``value`` (random erasing on the flat vector, as in Schürholt et al. 2021)."""

    name: ClassVar[str] = "erase"
    p: float = 0.5
    scale: tuple[float, float] = (0.02, 0.33)
    value: float = 0.0

    def __post_init__(self):
        _check_range("erase.p", self.p, 0.0, 1.0)
        _check_interval("erase.scale", self.scale, 0.0, 1.0)

    def __call__(self, rows: Rows, layout: Layout, gen: torch.Generator) -> Rows:
        b, p = rows.weights.shape
        hit = torch.rand(b, generator=gen) < self.p  # (B,)
        length = (_uniform((b,), gen, *self.scale) * p).round().long()
        start = (torch.rand(b, generator=gen) * (p - length + 1)).long()
        pos = torch.arange(p)
        mask = hit[:, None] & (pos >= start[:, None]) & (pos < (start + length)[:, None])
        erased = rows.weights.masked_fill(mask, self.value)
        return Rows(_keep_buffers(erased, rows.weights, layout), rows.targets)


@dataclass(frozen=True)
class Prune(Transform):
    """The smallest-magnitude fraction of the weights zeroed (magnitude pruning at a per-row
    quantile), the fraction uniform in ``amount`` per row; per parameter tensor if
    ``per_layer``, else over the whole row. Ties at the threshold are zeroed together."""

    name: ClassVar[str] = "prune"
    amount: tuple[float, float] = (0.0, 0.5)
    per_layer: bool = False

    def __post_init__(self):
        _check_interval("prune.amount", self.amount, 0.0, 1.0)

    def __call__(self, rows: Rows, layout: Layout, gen: torch.Generator) -> Rows:
        w = rows.weights
        frac = _uniform((w.shape[0],), gen, *self.amount).numpy()  # (B,)
        spans = (
            zip(layout.offsets, layout.sizes, strict=True) if self.per_layer else [(0, w.shape[1])]
        )
        mags = w.detach().abs().numpy()
        keep = np.ones(w.shape, dtype=bool)
        for off, n in spans:
            k = np.floor(frac * n).astype(np.int64)  # entries to zero in each row
            part = mags[:, off : off + n]
            # numpy's sort: ~30x faster than torch.sort on CPU for (256, 2464)
            kth = np.take_along_axis(np.sort(part, axis=1), np.maximum(k - 1, 0)[:, None], 1)
            keep[:, off : off + n] = (part > kth) | (k[:, None] == 0)
        return Rows(_keep_buffers(w * torch.from_numpy(keep), w, layout), rows.targets)


@dataclass(frozen=True)
class Mixup(Transform):
    """Each row mixed with another row of the batch: ``lam * w + (1 - lam) * w_other``,
    ``lam ~ Beta(alpha, alpha)`` per row; the ``targets`` columns mixed with the same ``lam``;
    with ``aligned``, the other row is first permuted to match the row (weight matching)."""

    name: ClassVar[str] = "mixup"
    alpha: float = 0.2
    targets: tuple[str, ...] = ()
    aligned: bool = False

    def __post_init__(self):
        _check_range("mixup.alpha", self.alpha, 1e-6, float("inf"))

    def __call__(self, rows: Rows, layout: Layout, gen: torch.Generator) -> Rows:
        w = rows.weights
        missing = [t for t in self.targets if t not in rows.targets]
        if missing:
            raise AugmentError(
                f"mixup targets {missing} are not in the batch (columns: {sorted(rows.targets)}); "
                f"keep those columns in the dataset, or mix weights only with targets=()"
            )
        other = torch.randperm(w.shape[0], generator=gen)
        seed = int(torch.randint(2**62, (1,), generator=gen))
        lam = torch.as_tensor(np.random.default_rng(seed).beta(self.alpha, self.alpha, w.shape[0]))
        partner = w[other]
        if self.aligned:
            partner = align(partner, w, layout, seed=seed).weights
        mixed = lam[:, None].float() * w + (1 - lam[:, None].float()) * partner
        targets = dict(rows.targets)
        for t in self.targets:
            targets[t] = lam * rows.targets[t] + (1 - lam) * rows.targets[t][other]
        return Rows(mixed, targets)


AUGMENTATIONS: dict[str, type[Transform]] = {
    t.name: t for t in (Permute, SignFlip, Rescale, Noise, Dropout, Erase, Prune, Mixup)
}


def exact_symmetries(layout: Layout) -> list[Transform]:
    """The exact symmetries of a layout's activation: permutations always, sign flips for odd
    activations, positive rescaling for positively homogeneous ones (permutations only for
    networks with normalization layers and residual sums, :data:`PERMUTATIONS_ONLY`, and for a
    config whose rows differ in their activation: its layout has none)."""
    out: list[Transform] = [Permute()]
    if layout.model.get("arch") in PERMUTATIONS_ONLY:
        return out
    if layout.activation in ODD:
        out.append(SignFlip())
    if layout.activation in HOMOGENEOUS:
        out.append(Rescale())
    return out


def default_augmentations(layout: Layout) -> list[Transform]:
    """The default pipeline: the exact symmetries of the layout. They never change what a row
    computes, so its metric columns stay true; add perturbations (noise, dropout, erasing,
    mixup) explicitly where a task benefits (``benchmarks/downstream.py`` measures them)."""
    return exact_symmetries(layout)


# --- applying a chain: tensors, datasets batches, DataLoader collate ----------------------------


def generator_for(seed: int, *keys: int) -> torch.Generator:
    """A torch generator seeded by ``SeedSequence([seed, streams.AUGMENT, *keys])``."""
    return torch_generator(seed, streams.AUGMENT, *keys)


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
    weights: Any,
    layout: Layout,
    transforms: Sequence[Transform],
    *,
    seed: int | torch.Generator = 0,
    targets: dict[str, Any] | None = None,
) -> Rows:
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
        self,
        layout: Layout,
        transforms: Sequence[Transform] | None = None,
        *,
        seed: int = 0,
        column: str = "weights",
    ):
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
        rows = augment(
            batch[self.column],
            self.layout,
            self.transforms,
            seed=self.next_generator(),
            targets=targets,
        )
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
