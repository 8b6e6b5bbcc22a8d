"""Weight-space networks: the nets of the downstream baselines that read a model's weights.

Two nets (:data:`NETS`), trained by :func:`zoo.weightspace.learn.train_weight_net`:

- ``mlp``: an MLP on the flat weights, standardized per parameter;
- ``deepsets``: :class:`NeuronSets`, a DeepSets network over neurons: every hidden unit is
  described by statistics of its incoming and outgoing weights (:func:`neuron_features`,
  invariant to the permutations of the neighbouring layers), encoded by a shared network with
  an equivariant set layer per group, mean-pooled per group: invariant to every permutation of
  the spec by construction.

:class:`Encoder` turns rows into a net's input, standardized with train-split statistics;
:func:`make_net` builds a net with PyTorch's default init, drawn from a given generator.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zoo.errors import ModelError, ZooError
from zoo.layout import Layout, unflatten, unit_rows

NETS = ("mlp", "deepsets")


def _row_stats(units: torch.Tensor) -> torch.Tensor:
    """``(B, n, k)`` -> ``(B, n, 4)``: mean, std, mean |w|, max |w| of each unit's weights."""
    a = units.abs()
    return torch.stack([units.mean(2), units.std(2, correction=0), a.mean(2), a.amax(2)], dim=2)


def neuron_features(weights: torch.Tensor, layout: Layout) -> torch.Tensor:
    """One vector per hidden unit: statistics of its incoming weights, its bias, statistics of
    its outgoing weights. Each is invariant to the permutations of the neighbouring groups.

    Args:
        weights: ``(B, P)`` rows.
        layout: their layout.
    Returns:
        ``(B, U, 9)``, units group by group in sorted group order (``U`` = all hidden units).
    """
    spec, params = layout.perm_spec, unflatten(weights, layout)
    if layout.model.get("arch") in ("resnet", "transformer"):  # issue 15: not chains
        raise ModelError(
            f"neuron features read chain networks (mlp, cnn_s, cnn_small): one layer in, one out "
            f"per unit; a {layout.model['arch']!r} shares its residual stream across many layers "
            "(use the flat-weight baselines, or a permutation-equivariant net over its spec)"
        )
    groups = []
    for group in sorted(spec.sizes):
        parts = {"in": None, "bias": None, "out": None}
        for name, axis in spec.perm_to_axes[group]:
            w = params[name]
            if axis == 0 and w.dim() == 2:  # a bias (B, n)
                parts["bias"] = w[:, :, None]
            else:
                side = "in" if axis == 0 else "out"
                parts[side] = _row_stats(unit_rows(w, axis, spec.repeat(name, axis), lead=1))
        groups.append(torch.cat([parts["in"], parts["bias"], parts["out"]], dim=2))
    return torch.cat(groups, dim=1)


def _group_matrix(layout: Layout) -> torch.Tensor:
    """``(U, G)``: unit u belongs to group g (columns normalized to mean-pool)."""
    sizes = [layout.perm_spec.sizes[g] for g in sorted(layout.perm_spec.sizes)]
    member = torch.block_diag(*[torch.ones(n, 1) for n in sizes])
    return member / member.sum(0, keepdim=True)


class NeuronSets(nn.Module):
    """DeepSets over neurons: a shared encoder per unit, one equivariant set layer per group
    (``h_u <- relu(A h_u + C mean_{v in group(u)} h_v)``), mean pooling per group, a readout."""

    def __init__(self, layout: Layout, n_features: int = 9, hidden: int = 64, outputs: int = 1):
        super().__init__()
        self.register_buffer("pool", _group_matrix(layout))  # (U, G)
        self.register_buffer("onehot", (self.pool > 0).float())  # (U, G) group of each unit
        g = self.pool.shape[1]
        self.encode = nn.Sequential(
            nn.Linear(n_features + g, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.self_map, self.set_map = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.readout = nn.Sequential(
            nn.Linear(g * hidden, hidden), nn.ReLU(), nn.Linear(hidden, outputs)
        )
        self.outputs = outputs

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, U, F) -> (B,) or (B, K)
        b = feats.shape[0]
        h = self.encode(torch.cat([feats, self.onehot.expand(b, -1, -1)], dim=2))  # (B, U, H)
        context = self.onehot @ torch.einsum("buh,ug->bgh", h, self.pool)  # (B, U, H)
        h = torch.relu(self.self_map(h) + self.set_map(context))
        pooled = torch.einsum("buh,ug->bgh", h, self.pool)  # (B, G, H)
        out = self.readout(pooled.reshape(b, -1))
        return out.squeeze(1) if self.outputs == 1 else out


def _init_(module: nn.Module, gen: torch.Generator) -> nn.Module:
    """PyTorch's default Linear init, drawn from ``gen`` (never the global RNG)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=gen)
            bound = 1 / math.sqrt(layer.weight.shape[1])
            nn.init.uniform_(layer.bias, -bound, bound, generator=gen)
    return module


class Encoder:
    """Turns raw rows into a network's input, standardized with train-split statistics."""

    def __init__(self, kind: str, layout: Layout, train: torch.Tensor):
        self.kind, self.layout = kind, layout
        raw = self._raw(train)  # (N, P) or (N, U, F)
        if kind == "mlp":
            self.mean, self.std = raw.mean(0), raw.std(0).clamp_min(1e-8)
            return
        pool = _group_matrix(layout)  # one mean/std per group, so units stay exchangeable
        member = (pool > 0).float()  # (U, G)
        self.mean = member @ (pool.T @ raw.mean(0))  # (U, F)
        self.std = (member @ (pool.T @ (raw - self.mean).pow(2).mean(0))).sqrt().clamp_min(1e-8)

    def _raw(self, w: torch.Tensor) -> torch.Tensor:
        return w if self.kind == "mlp" else neuron_features(w, self.layout)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return (self._raw(w) - self.mean) / self.std


def make_net(kind: str, layout: Layout, gen: torch.Generator, outputs: int = 1) -> nn.Module:
    """A fresh net of ``kind`` (one of :data:`NETS`) for ``layout``, initialized from ``gen``:
    ``(B,)`` predictions, or ``(B, outputs)`` logits for a classifier of ``outputs`` classes."""
    if kind == "mlp":
        head = [nn.Linear(64, 1), nn.Flatten(0)] if outputs == 1 else [nn.Linear(64, outputs)]
        net = nn.Sequential(
            nn.Linear(layout.num_params, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), *head
        )
    elif kind == "deepsets":
        net = NeuronSets(layout, outputs=outputs)
    else:
        raise ZooError(f"unknown weight-space net {kind!r}; use one of {NETS}")
    return _init_(net, gen)
