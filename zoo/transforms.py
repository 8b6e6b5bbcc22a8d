"""Weight-space transforms: frozen, round-tripping values that map a batch of rows to new rows.

A transform maps ``(B, P)`` float32 rows (and, for mixup, their target columns) to new ones;
it never writes into its inputs. Three kinds (issue 8):

- **exact symmetries**, under which the network computes the same function: :class:`Permute`
  (hidden units and conv channels, from the layout's permutation spec; every activation),
  :class:`SignFlip` (odd activations: ``tanh``) and :class:`Rescale` (positive per-unit factors;
  positively homogeneous activations: ``relu``, ``leaky_relu``);
- **perturbations**: :class:`Noise` (Gaussian, scaled per layer by the weights' std),
  :class:`Dropout`, :class:`Erase` (random erasing of a window), :class:`Prune` (magnitude);
- :class:`Mixup` of each row with another row of the batch: weights only, weights + target
  columns, or aligned first (Git Re-Basin weight matching, :mod:`zoo.align`).

:data:`AUGMENTATIONS` names every transform (``Transform.from_dict`` reads it). Transforms draw
from the generator they are given; :mod:`zoo.augment` seeds it, chains transforms over batches,
``datasets`` and ``DataLoader``, and re-exports every name of this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch

from .align import align
from .errors import AugmentError
from .layout import Layout, permute_rows

ODD = ("tanh",)  # f(-z) = -f(z): flipping a unit's in- and out-weights keeps the function
HOMOGENEOUS = ("relu", "leaky_relu")  # f(a z) = a f(z) for a > 0
# Groups whose units pass a max-pool before the activation: max(-z) = -min(z), so a sign flip
# there changes the function (tests/test_augment.py checks this table against the modules).
MAXPOOL_BEFORE_ACTIVATION = {"cnn_s": ("P0", "P1")}


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
        return {"name": self.name, **{k: list(v) if isinstance(v, tuple) else v
                                      for k, v in values.items()}}  # fmt: skip

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
    """Each row's hidden units (conv channels) permuted at random, group by group."""

    name: ClassVar[str] = "permute"

    def draw(self, layout: Layout, b: int, gen: torch.Generator) -> tuple[dict, dict]:
        perms = {g: torch.rand(b, n, generator=gen).argsort(dim=1)  # (B, n)
                 for g, n in sorted(layout.perm_spec.sizes.items())}  # fmt: skip
        return perms, {}


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
        if layout.activation not in ODD:
            raise AugmentError(
                f"sign_flip is a symmetry only of odd activations {ODD}; this layout uses "
                f"{layout.activation!r}: use rescale (relu, leaky_relu) or permute instead"
            )

    def draw(self, layout: Layout, b: int, gen: torch.Generator) -> tuple[dict, dict]:
        sizes = layout.perm_spec.sizes
        return {}, {g: torch.where(torch.rand(b, sizes[g], generator=gen) < self.p, -1.0, 1.0)
                    for g in sign_flip_groups(layout)}  # fmt: skip


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
        if layout.activation not in HOMOGENEOUS:
            raise AugmentError(
                f"rescale is a symmetry only of positively homogeneous activations {HOMOGENEOUS}; "
                f"this layout uses {layout.activation!r}: use sign_flip (tanh) or permute instead"
            )

    def draw(self, layout: Layout, b: int, gen: torch.Generator) -> tuple[dict, dict]:
        lo, hi = np.log(self.low), np.log(self.high)
        return {}, {g: _uniform((b, n), gen, lo, hi).exp()
                    for g, n in sorted(layout.perm_spec.sizes.items())}  # fmt: skip


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
        for off, n in zip(layout.offsets, layout.sizes, strict=True):
            std = w[:, off : off + n].std(1, keepdim=True, correction=0)  # (B, 1)
            eps[:, off : off + n] *= self.sigma * std
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
        return Rows(rows.weights * keep * scale, rows.targets)


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
        return Rows(rows.weights.masked_fill(mask, self.value), rows.targets)


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
        spans = (zip(layout.offsets, layout.sizes, strict=True) if self.per_layer
                 else [(0, w.shape[1])])  # fmt: skip
        mags = w.detach().abs().numpy()
        keep = np.ones(w.shape, dtype=bool)
        for off, n in spans:
            k = np.floor(frac * n).astype(np.int64)  # entries to zero in each row
            part = mags[:, off : off + n]
            # numpy's sort: ~30x faster than torch.sort on CPU for (256, 2464)
            kth = np.take_along_axis(np.sort(part, axis=1), np.maximum(k - 1, 0)[:, None], 1)
            keep[:, off : off + n] = (part > kth) | (k[:, None] == 0)
        return Rows(w * torch.from_numpy(keep), rows.targets)


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
    activations, positive rescaling for positively homogeneous ones."""
    out: list[Transform] = [Permute()]
    if layout.activation in ODD:
        out.append(SignFlip())
    if layout.activation in HOMOGENEOUS:
        out.append(Rescale())
    return out
