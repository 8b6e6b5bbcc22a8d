"""How a flat weight vector maps to named tensors, and which axes share a hidden-unit permutation.

A :class:`Layout` is the contract between a row of a zoo (``weights``: a flat float32 vector)
and a network: parameter names in ``state_dict`` order, their shapes, their offsets, the model
config that rebuilds the module, and its :class:`PermutationSpec`.

The permutation spec is plain data (as in Git Re-Basin): ``axes[param]`` names, for each axis
of a parameter, the permutation group acting on it (or ``None``). ``perm_to_axes`` is derived.
Where a convolution's channels are flattened into a linear layer, each channel spans
``repeat`` consecutive inputs of that layer (``repeats[param][axis]``).

Residual networks and transformers (issue 15) need two more notions, both optional, so the
layouts of chain networks are byte-for-byte what they were:

- ``blocks[group] = (outer, size)``: the group's units come in consecutive blocks of ``size``
  (attention heads; the channel groups of a GroupNorm) that may only move as whole blocks, all
  blocks together by the permutation of ``outer``, while the units inside each block permute
  freely (each block on its own). Several groups may share one ``outer`` group: a head's
  query/key dimensions and its value/output dimensions move with the head, each pair permuted
  within the head on its own. :func:`compose_blocks` builds such a permutation.
- ``roles[group]``: what a group permutes, in words (``residual stream``, ``attention heads of
  layer 0``, ...), so that ``layout.json`` documents the symmetry without the code.

A layout may also hold **buffers** (BatchNorm's running statistics): state that is stored and
published with the weights (the flat vector holds them, in ``state_dict`` order) but is not
trained by gradient descent. ``Layout.buffers`` names them; :attr:`Layout.parameters` is the
rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from zoo.naming import short_hash


@dataclass(frozen=True)
class PermutationSpec:
    """Which axes of which parameters each hidden-unit permutation ``P0, P1, …`` acts on.

    Attributes:
        sizes: permutation name -> number of units it permutes.
        axes: parameter name -> one entry per axis: a permutation name or ``None``.
        repeats: parameter name -> one entry per axis: consecutive entries per unit (1 unless a
            conv channel is flattened into a linear input, where it is H*W).
    """

    sizes: dict[str, int]
    axes: dict[str, tuple[str | None, ...]]
    repeats: dict[str, tuple[int, ...]] = field(default_factory=dict)
    blocks: dict[str, tuple[str, int]] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        for group, (outer, size) in self.blocks.items():
            if outer not in self.sizes or group not in self.sizes:
                raise ValueError(
                    f"perm_spec.blocks[{group!r}] = ({outer!r}, {size}): both groups must be in "
                    f"perm_spec.sizes (it has {sorted(self.sizes)})"
                )
            if outer in self.blocks or self.sizes[group] != self.sizes[outer] * size:
                raise ValueError(
                    f"perm_spec.blocks[{group!r}]: {self.sizes[group]} units must be "
                    f"{self.sizes[outer]} blocks ({outer!r}, itself not blocked) of {size}"
                )

    @property
    def outer_groups(self) -> dict[str, list[str]]:
        """Outer group -> the blocked groups that move with it (derived from ``blocks``)."""
        out: dict[str, list[str]] = {}
        for group, (outer, _) in sorted(self.blocks.items()):
            out.setdefault(outer, []).append(group)
        return out

    @property
    def perm_to_axes(self) -> dict[str, list[tuple[str, int]]]:
        """Permutation name -> ``[(parameter, axis), …]`` it acts on (derived from ``axes``)."""
        out: dict[str, list[tuple[str, int]]] = {p: [] for p in self.sizes}
        for name, entries in self.axes.items():
            for axis, perm in enumerate(entries):
                if perm is not None:
                    out[perm].append((name, axis))
        return out

    def repeat(self, name: str, axis: int) -> int:
        return self.repeats.get(name, (1,) * len(self.axes[name]))[axis]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sizes": dict(self.sizes),
            "axes": {k: list(v) for k, v in self.axes.items()},
            "repeats": {k: list(v) for k, v in self.repeats.items()},
        }
        if self.blocks:  # absent for chain networks: their layout.json is unchanged
            out["blocks"] = {k: [outer, size] for k, (outer, size) in self.blocks.items()}
        if self.roles:
            out["roles"] = dict(self.roles)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PermutationSpec:
        return cls(
            sizes={k: int(v) for k, v in d["sizes"].items()},
            axes={k: tuple(v) for k, v in d["axes"].items()},
            repeats={k: tuple(int(r) for r in v) for k, v in d.get("repeats", {}).items()},
            blocks={k: (str(o), int(n)) for k, (o, n) in d.get("blocks", {}).items()},
            roles={k: str(v) for k, v in d.get("roles", {}).items()},
        )


def chain_spec(
    layers: list[tuple[str, int]], flatten_repeat: dict[int, int] | None = None
) -> PermutationSpec:
    """Spec of a chain of weight layers: the outputs of layer i and inputs of layer i+1 share P_i.

    ``layers`` is ``[(name, n_out), …]``; the last layer's outputs (the classes) are not permuted.
    ``flatten_repeat[i]`` is the H*W span of each channel where layer i+1 reads a flattened conv.

    Example:
        >>> chain_spec([("fc1", 4), ("out", 2)]).axes["out.weight"]
        (None, 'P0')
    """
    flatten_repeat = flatten_repeat or {}
    sizes, axes, repeats = {}, {}, {}
    for i, (name, n_out) in enumerate(layers):
        p_in = f"P{i - 1}" if i > 0 else None
        p_out = f"P{i}" if i < len(layers) - 1 else None
        if p_out:
            sizes[p_out] = n_out
        axes[f"{name}.weight"] = (p_out, p_in)
        axes[f"{name}.bias"] = (p_out,)
        if i > 0 and flatten_repeat.get(i - 1, 1) > 1:
            repeats[f"{name}.weight"] = (1, flatten_repeat[i - 1])
    return PermutationSpec(sizes=sizes, axes=axes, repeats=repeats)


@dataclass(frozen=True)
class Layout:
    """Names, shapes and offsets of a flat weight vector, plus what rebuilds the network.

    Attributes:
        names: parameter names, in ``state_dict`` order.
        shapes: one shape per name.
        model: the resolved model config plus ``input_shape`` and ``n_classes``: enough for
            :func:`zoo.nn.architectures.build_model` to rebuild the module.
        perm_spec: the hidden-unit symmetries of the network.
        buffers: the names that are buffers (BatchNorm running statistics): stored in the flat
            vector like parameters, but not trained by gradient descent.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    model: dict[str, Any]
    perm_spec: PermutationSpec
    buffers: tuple[str, ...] = ()

    @property
    def parameters(self) -> tuple[str, ...]:
        """The names that are trained parameters (all names but the buffers)."""
        return tuple(n for n in self.names if n not in self.buffers)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start of each parameter in the flat vector."""
        out, total = [], 0
        for n in self.sizes:
            out.append(total)
            total += n
        return tuple(out)

    @property
    def num_params(self) -> int:
        return sum(self.sizes)

    @property
    def activation(self) -> str:
        return self.model["activation"]

    @property
    def sha256(self) -> str:
        """A short hash of the layout: two shards with the same hash hold compatible vectors."""
        return short_hash(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "shapes": [list(s) for s in self.shapes],
            "offsets": list(self.offsets),
            "num_params": self.num_params,
            "model": dict(self.model),
            "perm_spec": self.perm_spec.to_dict(),
        } | ({"buffers": list(self.buffers)} if self.buffers else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layout:
        return cls(
            names=tuple(d["names"]),
            shapes=tuple(tuple(int(x) for x in s) for s in d["shapes"]),
            model=dict(d["model"]),
            perm_spec=PermutationSpec.from_dict(d["perm_spec"]),
            buffers=tuple(d.get("buffers", ())),
        )


def flatten(params: dict[str, torch.Tensor], layout: Layout) -> torch.Tensor:
    """Concatenate named tensors into flat vectors in layout order.

    Tensors may carry leading batch axes (``(M, *shape)``); the result is ``(M, P)``, or
    ``(P,)`` when there are none.

    Example:
        >>> lay = Layout(("w", "b"), ((2, 2), (2,)), {}, PermutationSpec({}, {}))
        >>> flatten({"w": torch.ones(2, 2), "b": torch.zeros(2)}, lay).tolist()
        [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    """
    first = params[layout.names[0]]
    lead = first.shape[: first.dim() - len(layout.shapes[0])]
    parts = [params[n].reshape(*lead, -1) for n in layout.names]
    return torch.cat(parts, dim=-1)


def unflatten(flat: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten`: ``(…, P)`` -> ``{name: (…, *shape)}`` (views, no copy)."""
    if flat.shape[-1] != layout.num_params:
        raise ValueError(
            f"weight vector has {flat.shape[-1]} entries but the layout has {layout.num_params}"
        )
    lead = flat.shape[:-1]
    out = {}
    for name, shape, off, n in zip(
        layout.names, layout.shapes, layout.offsets, layout.sizes, strict=True
    ):
        out[name] = flat[..., off : off + n].reshape(*lead, *shape)
    return out


def _expand_index(perm: torch.Tensor, repeat: int) -> torch.Tensor:
    """Index of a unit permutation on an axis where each unit spans ``repeat`` entries."""
    if repeat == 1:
        return perm
    return (perm[:, None] * repeat + torch.arange(repeat, device=perm.device)).reshape(-1)


def compose_blocks(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """A permutation of blocked units: block ``h`` takes old block ``outer[h]``, and its unit
    ``i`` takes unit ``inner[h, i]`` of that block (``perm[h*s + i] = outer[h]*s + inner[h, i]``).

    Args:
        outer: ``(*B, k)`` permutations of the ``k`` blocks.
        inner: ``(*B, k, s)`` one permutation of ``s`` units per block.
    Returns:
        ``(*B, k*s)`` LongTensor, to index like any other group's permutation.

    Example:
        >>> compose_blocks(torch.tensor([1, 0]), torch.tensor([[1, 0], [0, 1]])).tolist()
        [3, 2, 0, 1]
    """
    s = inner.shape[-1]
    return (outer.unsqueeze(-1) * s + inner).flatten(-2)


def random_permutations(spec: PermutationSpec, b: int, gen: torch.Generator) -> dict:
    """``b`` uniformly random spec-consistent permutations of every group: group -> ``(b, n)``.

    Groups are drawn in sorted order (one ``torch.rand(b, n)`` each, argsorted); a blocked group
    draws ``(b, k, s)`` within-block permutations and is then composed with its outer group's
    (:func:`compose_blocks`), so its blocks move together with every other group of that outer.
    """
    perms = {}
    for g, n in sorted(spec.sizes.items()):
        if g in spec.blocks:
            k = spec.sizes[spec.blocks[g][0]]
            perms[g] = torch.rand(b, k, n // k, generator=gen).argsort(dim=-1)  # (b, k, s)
        else:
            perms[g] = torch.rand(b, n, generator=gen).argsort(dim=1)  # (b, n)
    for g, (outer, _) in spec.blocks.items():
        perms[g] = compose_blocks(perms[outer], perms[g])
    return perms


def apply_permutation(
    params: dict[str, torch.Tensor], spec: PermutationSpec, perms: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Permute hidden units: ``out[name]`` is ``params[name]`` re-indexed on every spec'd axis.

    ``perms[P]`` is a LongTensor of the size of group ``P`` (a missing group is the identity).
    Because every axis a group touches is re-indexed together, the network computes the same
    function (tested for every architecture in ``tests/test_models.py``).
    """
    out = {}
    for name, value in params.items():
        for axis, perm_name in enumerate(spec.axes.get(name, ())):
            if perm_name is None or perm_name not in perms:
                continue
            index = _expand_index(perms[perm_name], spec.repeat(name, axis))
            value = torch.index_select(value, axis, index.to(value.device))
        out[name] = value
    return out


def weight_matrices(layout: Layout) -> list[str]:
    """Names of the weight tensors (Linear and Conv2d weights; biases excluded)."""
    return [n for n, s in zip(layout.names, layout.shapes, strict=True) if len(s) >= 2]


def unit_rows(w: torch.Tensor, axis: int, repeat: int, lead: int = 0) -> torch.Tensor:
    """One row per unit of ``axis``: ``(*L, …, n*repeat, …)`` -> ``(*L, n, rest)``.

    Args:
        w: a parameter, with ``lead`` batch axes ``L`` before its own.
        axis: the unit axis, counted without the batch axes.
        repeat: consecutive entries per unit (``PermutationSpec.repeat``).
        lead: number of leading batch axes.

    Example:
        >>> unit_rows(torch.arange(6.0).reshape(2, 3), 1, 1).tolist()
        [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    """
    a = lead + axis
    n = w.shape[a] // repeat
    split = w.reshape(*w.shape[:a], n, repeat, *w.shape[a + 1 :])
    return split.movedim(a, lead).reshape(*w.shape[:lead], n, -1)


# --- batched helpers on flat rows (B, P): one permutation / one rescaling per row -------------


def _unit_shape(layout: Layout, name: str, axis: int) -> tuple[int, int, int]:
    """``name`` seen as ``(before, units, after)`` around the units of ``axis`` (a unit spans
    ``repeat`` consecutive entries of the axis). Three axes keep the batched ops on long
    contiguous runs: measured 5-10x faster than on the parameter's own 4-6 axes."""
    shape = layout.shapes[layout.names.index(name)]
    r = layout.perm_spec.repeat(name, axis)
    return math.prod(shape[:axis]), shape[axis] // r, r * math.prod(shape[axis + 1 :])


def _acted_on(layout: Layout, name: str, groups: dict) -> list[tuple[int, str]]:
    entries = layout.perm_spec.axes.get(name, ())
    return [(axis, g) for axis, g in enumerate(entries) if g is not None and g in groups]


def permute_rows(
    flat: torch.Tensor,
    layout: Layout,
    perms: dict[str, torch.Tensor],
    factors: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Permute the hidden units of each row with its own permutation, then (optionally)
    rescale them, in one pass over each parameter tensor (batched gathers and multiplies).

    Rescaling multiplies a unit's incoming weights and bias (axis 0 of the parameters its group
    acts on) by its factor ``a`` and divides its outgoing weights by ``a``: with ``a > 0`` a
    ReLU network computes the same function, with ``a = ±1`` a tanh network.

    Args:
        flat: ``(B, P)`` rows (not modified).
        layout: their layout.
        perms: group name -> ``(B, n)`` LongTensor, row b's permutation of that group (a
            missing group is the identity).
        factors: group name -> ``(B, n)`` nonzero factors of the permuted units (a missing
            group: all ones).
    Returns:
        ``(B, P)``: row b as :func:`apply_permutation` permutes it with ``perms[·][b]``, then
        rescaled.

    Example:
        >>> spec = PermutationSpec({"P0": 2}, {"a.weight": ("P0", None), "b.weight": (None, "P0")})
        >>> lay = Layout(("a.weight", "b.weight"), ((2, 1), (1, 2)), {}, spec)
        >>> rows = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        >>> permute_rows(rows, lay, {"P0": torch.tensor([[1, 0]])})
        tensor([[2., 1., 4., 3.]])
        >>> permute_rows(rows, lay, {}, {"P0": torch.tensor([[2.0, 1.0]])})
        tensor([[2.0000, 2.0000, 1.5000, 4.0000]])
    """
    b, factors = flat.shape[0], factors or {}
    parts = []
    for name, off, n in zip(layout.names, layout.offsets, layout.sizes, strict=True):
        w = flat[:, off : off + n]
        for axis, group in _acted_on(layout, name, perms):
            split = w.reshape(b, *_unit_shape(layout, name, axis))  # (B, before, units, after)
            w = split.gather(2, perms[group][:, None, :, None].expand(split.shape))
        for axis, group in _acted_on(layout, name, factors):
            split = w.reshape(b, *_unit_shape(layout, name, axis))
            f = factors[group] if axis == 0 else 1.0 / factors[group]
            w = split * f[:, None, :, None]
        parts.append(w.reshape(b, n))
    return torch.cat(parts, dim=1)
