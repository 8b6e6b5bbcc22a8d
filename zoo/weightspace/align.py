"""Alignment of hidden units between models, and the linear-interpolation loss barrier.

Two networks that differ only by a permutation of hidden units compute the same function, yet
their weight vectors lie far apart. Aligning one to the other (choosing the permutation of every
group of the :class:`~zoo.layout.PermutationSpec` that brings it closest to a reference) makes
averaging, interpolation and mixup meaningful.

- **Weight matching** (Ainsworth, Hayase, Srinivasa 2023, "Git Re-Basin", Alg. 1): maximize
  ``sum_params <W_ref, pi(W)>`` over the permutations ``pi`` of all groups, by coordinate descent:
  one group at a time is a linear assignment problem (the others fixed), solved exactly with
  :func:`scipy.optimize.linear_sum_assignment`; sweeps visit the groups in a seeded random order
  until a sweep changes nothing.
- **Activation matching**: with probe inputs, match each group's units by the correlation of
  their activations (one assignment per group; no sweeps needed).
- **Loss barrier**: ``max_t L((1-t) a + t b) - (L(a) + L(b)) / 2`` along the straight line
  (:func:`loss_barrier`), and before and after aligning ``b`` to ``a`` (:func:`barrier_metrics`).

Inputs are flat rows and a layout (as in :mod:`zoo.weightspace.augment`); modules are built only
to run the network for activations and losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from zoo import streams
from zoo.errors import AugmentError
from zoo.layout import Layout, apply_permutation, permute_rows, unflatten, unit_rows
from zoo.nn.architectures import build_model_from_layout
from zoo.nn.population import forward_population
from zoo.streams import numpy_rng

IMPROVEMENT_TOL = 1e-12  # a new assignment must beat the old one by this much (Git Re-Basin's)


@dataclass(frozen=True)
class Alignment:
    """Rows aligned to a reference.

    Attributes:
        weights: ``(B, P)`` (or ``(P,)`` for one row) the rows with their units permuted.
        perms: group -> ``(B, n)`` (or ``(n,)``) the permutation applied to each row
            (``aligned[unit i] = row[unit perms[i]]``, as in :func:`zoo.layout.apply_permutation`).
        sweeps: coordinate-descent sweeps each row took (0 for activation matching).
    """

    weights: torch.Tensor
    perms: dict[str, torch.Tensor]
    sweeps: tuple[int, ...]


@dataclass(frozen=True)
class Barrier:
    """The loss along the straight line between two models.

    Attributes:
        barrier: :func:`barrier_height` of ``losses``: ``max_t L(t) - (L(0) + L(1)) / 2``.
        ts: interpolation points, 0 to 1.
        losses: mean cross-entropy at each point.
    """

    barrier: float
    ts: tuple[float, ...]
    losses: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"barrier": self.barrier, "ts": list(self.ts), "losses": list(self.losses)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Barrier:
        return cls(float(d["barrier"]), tuple(d["ts"]), tuple(d["losses"]))


# --- weight matching --------------------------------------------------------------------------


def _group_cost(
    ref: dict[str, torch.Tensor],
    row: dict[str, torch.Tensor],
    layout: Layout,
    group: str,
    perms: dict[str, torch.Tensor],
) -> torch.Tensor:
    """``C[i, j] = sum <ref unit i, row unit j>`` over the axes ``group`` acts on, with every other
    group of ``row`` already permuted by ``perms``. Returns ``(n, n)`` float64."""
    spec = layout.perm_spec
    others = {g: p for g, p in perms.items() if g != group}
    n = spec.sizes[group]
    cost = torch.zeros(n, n, dtype=torch.float64)
    for name, axis in spec.perm_to_axes[group]:
        moved = apply_permutation({name: row[name]}, spec, others)[name]
        r = spec.repeat(name, axis)
        cost += unit_rows(ref[name], axis, r) @ unit_rows(moved, axis, r).T
    return cost


def _assign(cost: torch.Tensor) -> torch.Tensor:
    """The permutation maximizing ``sum_i cost[i, perm[i]]`` (exact linear assignment)."""
    # imported here: scipy.optimize takes ~0.5 s to import, and `import zoo` should not pay it
    from scipy.optimize import linear_sum_assignment

    _, cols = linear_sum_assignment(cost.numpy(), maximize=True)
    return torch.as_tensor(cols, dtype=torch.long)


def match_weights(
    weights: torch.Tensor,
    reference: torch.Tensor,
    layout: Layout,
    *,
    seed: int = 0,
    max_sweeps: int = 100,
) -> tuple[dict[str, torch.Tensor], int]:
    """Git Re-Basin weight matching of one row to a reference.

    Args:
        weights: ``(P,)`` the row to permute.
        reference: ``(P,)`` the row to match.
        layout: their layout (its permutation spec names the groups).
        seed: seeds the random order of the groups in each sweep.
        max_sweeps: stop after this many sweeps even if the last one changed something.
    Returns:
        ``(perms, sweeps)``: group -> ``(n,)`` LongTensor, and the number of sweeps run.
    """
    spec = layout.perm_spec
    ref = unflatten(reference.detach().double(), layout)
    row = unflatten(weights.detach().double(), layout)
    perms = {g: torch.arange(n) for g, n in spec.sizes.items()}
    rng = numpy_rng(seed, streams.ALIGN_ORDER)
    groups = sorted(spec.sizes)
    for sweep in range(1, max_sweeps + 1):
        changed = False
        for k in rng.permutation(len(groups)):  # 1. visit the groups in a random order
            group = groups[k]
            cost = _group_cost(ref, row, layout, group, perms)  # 2. others fixed: an LAP
            new = _assign(cost)
            idx = torch.arange(len(new))
            if cost[idx, new].sum() > cost[idx, perms[group]].sum() + IMPROVEMENT_TOL:
                perms[group], changed = new, True
        if not changed:  # 3. until a whole sweep changes nothing
            return perms, sweep
    return perms, max_sweeps


# --- activation matching ----------------------------------------------------------------------


def hidden_activations(
    module: nn.Sequential, x: torch.Tensor
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Output of each hidden weight layer, before and after its activation (and pooling).

    Args:
        module: a zoo architecture (``nn.Sequential`` of convs, linears and elementwise layers).
        x: ``(N, *input_shape)`` probe inputs.
    Returns:
        layer name -> ``(pre, post)``, each ``(N, units, …)``; the readout is not included.
    """
    out, last, pre, h = {}, None, None, x
    with torch.no_grad():
        for name, layer in module.named_children():
            if isinstance(layer, nn.Conv2d | nn.Linear | nn.Flatten):
                if last is not None:
                    out[last] = (pre, h)
                last = None if isinstance(layer, nn.Flatten) else name
            h = layer(h)
            pre = h if isinstance(layer, nn.Conv2d | nn.Linear) else pre
    return out


def _standardized_units(act: torch.Tensor) -> torch.Tensor:
    """``(N, n, …)`` -> ``(n, N*…)`` float64, each unit centered and scaled to unit norm."""
    units = act.movedim(1, 0).reshape(act.shape[1], -1).double()
    units = units - units.mean(dim=1, keepdim=True)
    return units / units.norm(dim=1, keepdim=True).clamp_min(1e-12)


def match_activations(
    weights: torch.Tensor, reference: torch.Tensor, layout: Layout, probe: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Match each group's units by the correlation of their activations on probe inputs
    (post-activation plus pre-activation correlation, so dead ReLU units are matched too).

    Args:
        weights: ``(P,)`` the row to permute.
        reference: ``(P,)`` the row to match.
        layout: their layout.
        probe: ``(N, *input_shape)`` inputs both networks see.
    Returns:
        group -> ``(n,)`` LongTensor, as :func:`match_weights`.
    """
    acts = []
    for flat in (reference, weights):
        module = build_model_from_layout(layout)
        module.load_state_dict(unflatten(flat.detach().float(), layout))
        acts.append(hidden_activations(module.eval(), probe))
    perms = {}
    for group, entries in layout.perm_spec.perm_to_axes.items():
        name = next(n for n, axis in entries if axis == 0 and n.endswith(".weight"))
        layer = name.removesuffix(".weight")
        # post-activation correlation (Git Re-Basin), plus the pre-activation one, which still
        # tells apart units the activation silences on every probe (dead ReLUs)
        corr = sum(
            _standardized_units(a) @ _standardized_units(b).T
            for a, b in zip(acts[0][layer], acts[1][layer], strict=True)
        )
        perms[group] = _assign(corr)
    return perms


def align(
    weights: torch.Tensor,
    reference: torch.Tensor,
    layout: Layout,
    *,
    probe: torch.Tensor | None = None,
    seed: int = 0,
    max_sweeps: int = 100,
) -> Alignment:
    """Permute the hidden units of each row to match a reference (or one reference per row).

    Args:
        weights: ``(B, P)`` rows, or ``(P,)`` one row.
        reference: ``(P,)`` one reference for all rows, or ``(B, P)`` one per row.
        layout: their layout.
        probe: ``(N, *input_shape)`` inputs: match activations instead of weights.
        seed: seeds the sweep order of weight matching (row b uses ``seed + b``).
        max_sweeps: the most coordinate-descent sweeps per row.
    Returns:
        an :class:`Alignment`; aligning a permuted copy gives back the reference exactly.

    Example:
        >>> from zoo.models import build_model
        >>> from zoo.layout import flatten
        >>> net, lay = build_model({"arch": "mlp", "width": 6, "depth": 2, "activation": "tanh"},
        ...                        (5,), 3)
        >>> theta = flatten(net.state_dict(), lay)
        >>> shuffled = permute_rows(theta[None], lay, {"P0": torch.tensor([[2, 0, 1, 5, 4, 3]])})
        >>> torch.equal(align(shuffled[0], theta, lay).weights, theta)
        True
    """
    single = weights.dim() == 1
    rows = weights.reshape(-1, weights.shape[-1])
    refs = reference.reshape(-1, reference.shape[-1]).expand(rows.shape[0], -1)
    if rows.shape[-1] != layout.num_params or refs.shape != rows.shape:
        raise AugmentError(
            f"align: rows {tuple(weights.shape)} and reference {tuple(reference.shape)} do not "
            f"fit the layout ({layout.num_params} parameters); pass (B, P) rows and a (P,) or "
            f"(B, P) reference"
        )
    found, sweeps = [], []
    for b in range(rows.shape[0]):
        if probe is None:
            perms, n = match_weights(rows[b], refs[b], layout, seed=seed + b, max_sweeps=max_sweeps)
        else:
            perms, n = match_activations(rows[b], refs[b], layout, probe), 0
        found.append(perms)
        sweeps.append(n)
    perms = {g: torch.stack([p[g] for p in found]) for g in layout.perm_spec.sizes}  # (B, n)
    aligned = permute_rows(rows, layout, perms)
    if single:
        return Alignment(aligned[0], {g: p[0] for g, p in perms.items()}, tuple(sweeps))
    return Alignment(aligned, perms, tuple(sweeps))


# --- loss barrier -----------------------------------------------------------------------------


def loss_barrier(
    weights_a: torch.Tensor,
    weights_b: torch.Tensor,
    layout: Layout,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    points: int = 11,
) -> Barrier:
    """The linear-interpolation loss barrier between two rows, all points in one population pass.

    Args:
        weights_a: ``(P,)`` the model at ``t = 0``.
        weights_b: ``(P,)`` the model at ``t = 1``.
        layout: their layout.
        x: ``(N, *input_shape)`` inputs (e.g. a task's test set).
        y: ``(N,)`` labels.
        points: interpolation points, ends included.
    Returns:
        a :class:`Barrier`.
    """
    ts = torch.linspace(0, 1, points)
    a, b = weights_a.detach().float(), weights_b.detach().float()
    line = a + ts[:, None] * (b - a)  # (T, P); b == a gives exactly a at every t
    module = build_model_from_layout(layout)
    with torch.no_grad():
        logits = forward_population(module, unflatten(line, layout), x.expand(points, *x.shape))
        flat_logits = logits.reshape(-1, logits.shape[-1])  # (T*N, C)
        ce = F.cross_entropy(flat_logits, y.repeat(points), reduction="none")
    losses = ce.reshape(points, -1).double().mean(dim=1)  # (T,)
    return Barrier(float(barrier_height(losses)), tuple(ts.tolist()), tuple(losses.tolist()))


def barrier_height(losses: torch.Tensor) -> torch.Tensor:
    """The loss barrier of paths sampled at ``losses: (..., T)`` (ends included): the highest
    loss on the path minus the mean of its two ends, ``max_t L(t) - (L(0) + L(1)) / 2`` (Frankle
    et al. 2020; Ainsworth et al. 2023). 0 for a flat path; the landscape's ``barrier_mean`` is
    this, averaged over seed pairs.

    Example:
        >>> barrier_height(torch.tensor([1.0, 3.0, 2.0])).item()
        1.5
    """
    return losses.max(-1).values - (losses[..., 0] + losses[..., -1]) / 2


def barrier_metrics(
    weights_a: torch.Tensor,
    weights_b: torch.Tensor,
    layout: Layout,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    probe: torch.Tensor | None = None,
    seed: int = 0,
    points: int = 11,
) -> dict[str, float]:
    """The loss barrier between two models before and after aligning ``b`` to ``a``.

    Returns:
        ``{"barrier_loss": …, "barrier_loss_aligned": …}``, the landscape-metric columns.
    """
    aligned = align(weights_b, weights_a, layout, probe=probe, seed=seed).weights
    return {
        "barrier_loss": loss_barrier(weights_a, weights_b, layout, x, y, points=points).barrier,
        "barrier_loss_aligned": loss_barrier(
            weights_a, aligned, layout, x, y, points=points
        ).barrier,
    }
