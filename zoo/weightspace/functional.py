"""Weights in the per-layer form that neural-functional libraries take, and the network
description they need (issue 17).

A zoo row's ``weights`` is one flat vector; weight-space libraries built on permutation
symmetry (``nfn``: Zhou et al., *Permutation Equivariant Neural Functionals*, NeurIPS 2023)
take, for each layer, a ``(B, out, in)`` weight tensor (``(B, out, in, kh, kw)`` for a
convolution) and a ``(B, out)`` bias tensor, where the ``out`` axis of layer i and the ``in``
axis of layer i+1 are the hidden units one permutation acts on. Everything here is read off the
config's :class:`~zoo.layout.Layout` (its names, shapes and permutation spec), for any
architecture whose parameters are (weight, bias) pairs in a chain:

- :func:`describe_network`: a :class:`NetworkDescription`, one :class:`LayerSpec` per layer;
- :func:`to_layers` / :func:`from_layers`: ``(B, P)`` <-> per-layer tensors (views, no copy);
- :func:`nfn_spec`, :func:`to_nfn`: the same as ``nfn``'s ``NetworkSpec`` and
  ``WeightSpaceFeatures`` (``pip install nfn``; imported only here).

A linear layer that reads a flattened convolution (``cnn_s``: ``fc1`` reads 4 channels x 3 x 3
positions) is given as that convolution: ``(out, channels, h, w)``, channel-major as ``Flatten``
lays it out, so its ``in`` axis is the previous layer's ``out`` axis, as the symmetry says
(``repeats`` in the permutation spec; ``h = w`` where the span is a square, else ``(span, 1)``).

Example:
    >>> ds, layout = zoo.load("out/quickstart", split="train")  # doctest: +SKIP
    >>> weights, biases = zoo.to_layers(ds[0:8]["weights"], layout)  # doctest: +SKIP
    >>> [tuple(w.shape) for w in weights]  # doctest: +SKIP
    [(8, 32, 64), (8, 32, 32), (8, 10, 32)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from zoo.errors import AugmentError
from zoo.layout import Layout


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the chain.

    Attributes:
        weight, bias: the parameters' names in the layout.
        shape: the weight's per-layer shape, ``(out, in)`` or ``(out, in, kh, kw)``.
        in_perm, out_perm: the permutation groups on its ``in`` and ``out`` axes (``None``:
            the network's inputs, or its outputs).
    """

    weight: str
    bias: str
    shape: tuple[int, ...]
    in_perm: str | None
    out_perm: str | None

    def to_dict(self) -> dict:
        return {**self.__dict__, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict) -> LayerSpec:
        return cls(**{**d, "shape": tuple(int(s) for s in d["shape"])})


@dataclass(frozen=True)
class NetworkDescription:
    """The layers of a network, in order, as a weight-space library sees them."""

    layers: tuple[LayerSpec, ...]

    @property
    def n_in(self) -> int:
        """Inputs of the first layer (channels of a convolution)."""
        return self.layers[0].shape[1]

    @property
    def n_out(self) -> int:
        """Outputs of the last layer (the classes)."""
        return self.layers[-1].shape[0]

    def to_dict(self) -> dict:
        return {"layers": [layer.to_dict() for layer in self.layers]}

    @classmethod
    def from_dict(cls, d: dict) -> NetworkDescription:
        return cls(tuple(LayerSpec.from_dict(x) for x in d["layers"]))


def describe_network(layout: Layout) -> NetworkDescription:
    """The per-layer description of ``layout``: (weight, bias) pairs in ``state_dict`` order.

    Raises:
        AugmentError: the layout is not a chain of (weight, bias) layers whose hidden units are
            shared by neighbours (the per-layer form would misstate its symmetry).
    """
    shapes = dict(zip(layout.names, layout.shapes, strict=True))
    weights = [n for n in layout.names if len(shapes[n]) >= 2]
    layers, previous = [], None
    for name in weights:
        bias = name.removesuffix("weight") + "bias"
        if not name.endswith("weight") or bias not in shapes:
            raise AugmentError(f"{name}: a layer without a bias has no per-layer form here")
        out_perm, in_perm = layout.perm_spec.axes.get(name, (None, None))[:2]
        if in_perm != previous:
            raise AugmentError(
                f"{name}: its inputs are permuted by {in_perm}, the previous layer's outputs "
                f"by {previous}: not a chain of layers"
            )
        shape = _layer_shape(shapes[name], layout.perm_spec.repeat(name, 1))
        layers.append(LayerSpec(name, bias, shape, in_perm, out_perm))
        previous = out_perm
    if not layers:
        raise AugmentError("the layout has no weight matrix")
    return NetworkDescription(tuple(layers))


def _layer_shape(shape: tuple[int, ...], repeat: int) -> tuple[int, ...]:
    """A weight's per-layer shape; a linear layer over a flattened convolution (each input
    unit spans ``repeat`` entries) as that convolution's ``(out, in, h, w)``."""
    if repeat == 1:
        return tuple(shape)
    side = math.isqrt(repeat)
    h, w = (side, side) if side * side == repeat else (repeat, 1)
    return (shape[0], shape[1] // repeat, h, w)


def to_layers(
    flat: torch.Tensor, layout: Layout
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """``(B, P)`` flat rows -> per-layer ``(weights, biases)``: ``(B, out, in[, kh, kw])`` and
    ``(B, out)`` tensors, views of ``flat`` (a ``(P,)`` row gives them without ``B``).

    Example:
        >>> lay = zoo.build_model({"arch": "mlp", "width": 8, "depth": 1,
        ...                        "activation": "relu"}, (4,), 3)[1]  # doctest: +SKIP
        >>> w, b = to_layers(torch.zeros(2, lay.num_params), lay)  # doctest: +SKIP
        >>> [tuple(x.shape) for x in w], [tuple(x.shape) for x in b]  # doctest: +SKIP
        ([(2, 8, 4), (2, 3, 8)], [(2, 8), (2, 3)])
    """
    network = describe_network(layout)
    offsets = dict(zip(layout.names, zip(layout.offsets, layout.sizes, strict=True), strict=True))
    lead = flat.shape[:-1]  # (B,)
    if flat.shape[-1] != layout.num_params:
        raise AugmentError(
            f"rows of {flat.shape[-1]} weights, but the layout has {layout.num_params}"
        )
    weights, biases = [], []
    for layer in network.layers:
        (wo, wn), (bo, bn) = offsets[layer.weight], offsets[layer.bias]
        weights.append(flat[..., wo : wo + wn].reshape(*lead, *layer.shape))
        biases.append(flat[..., bo : bo + bn].reshape(*lead, layer.shape[0]))
    return tuple(weights), tuple(biases)


def from_layers(weights, biases, layout: Layout) -> torch.Tensor:
    """Inverse of :func:`to_layers`: per-layer tensors -> ``(B, P)`` rows in layout order."""
    network = describe_network(layout)
    lead = weights[0].shape[: weights[0].dim() - len(network.layers[0].shape)]
    parts = {}
    for layer, w, b in zip(network.layers, weights, biases, strict=True):
        parts[layer.weight], parts[layer.bias] = w.reshape(*lead, -1), b.reshape(*lead, -1)
    return torch.cat([parts[name] for name in layout.names], dim=-1)


# --- nfn (https://github.com/AllanYangZhou/nfn) --------------------------------------------------


def _nfn():
    try:
        import nfn.common
    except ImportError as err:
        raise AugmentError(
            "the per-layer form for nfn needs the nfn package: pip install nfn"
        ) from err
    return nfn.common


def nfn_spec(layout: Layout | NetworkDescription):
    """``nfn``'s ``NetworkSpec`` of a layout: per layer an ``ArraySpec`` whose permuted axes
    are ``-1`` (hidden units), with the network's input and output sizes and the filter sizes,
    as ``nfn.common.network_spec_from_wsfeat`` writes it."""
    common = _nfn()
    network = layout if isinstance(layout, NetworkDescription) else describe_network(layout)
    weight_specs, bias_specs = [], []
    for layer in network.layers:
        out = -1 if layer.out_perm else layer.shape[0]
        inputs = -1 if layer.in_perm else layer.shape[1]
        weight_specs.append(common.ArraySpec((out, inputs, *layer.shape[2:])))
        bias_specs.append(common.ArraySpec((out,)))
    return common.NetworkSpec(weight_specs, bias_specs)


def to_nfn(flat: torch.Tensor, layout: Layout):
    """``(B, P)`` rows -> ``nfn``'s ``WeightSpaceFeatures`` with one channel: weights
    ``(B, 1, out, in[, kh, kw])``, biases ``(B, 1, out)`` (views of ``flat``)."""
    common = _nfn()
    weights, biases = to_layers(flat, layout)
    return common.WeightSpaceFeatures(
        [w.unsqueeze(1) for w in weights], [b.unsqueeze(1) for b in biases]
    )
