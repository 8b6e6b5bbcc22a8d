"""Transformer: a decoder-only (GPT-style) transformer, its permutation spec, and its population
forward.

``model: {arch: transformer, width: 128, heads: 4, layers: 1, mlp_width: null,
tie_embeddings: false}`` builds, on token sequences ``(B, T)`` of a task whose inputs and
outputs share one vocabulary of ``n_classes`` tokens::

    h = wte[x] + wpe[:T]                                  learned positions, (B, T, D)
    per layer:  h = h + attn(ln1(h));  h = h + mlp(ln2(h))  pre-LayerNorm (norm: layer;
                norm: none leaves the LayerNorms out, as the grokking transformer of Nanda et
                al. 2023)
                attn: q, k, v, o linear (D -> D), `heads` heads of D/heads, causal softmax
                mlp:  fc (D -> F), activation, proj (F -> D)
    logits = ln_f(h) @ head.T   (head = wte with tie_embeddings: true)  (B, T, vocabulary)

**Symmetry.** Everything that reads or writes the residual stream shares one permutation of its
D channels: the embeddings' columns, every LayerNorm, the inputs of q/k/v and fc, the outputs of
o and proj, and the head (``P0``). Per layer, the heads permute as whole heads (an outer group
that acts on no axis of its own); within each head, the query and key dimensions permute
together (``q·k`` is unchanged) and the value and output dimensions together, each head on its
own (``PermutationSpec.blocks``); the MLP's F hidden units permute on their own.

**Population forward.** M models at once as batched matmuls over the model axis: ``(M, B*T, D)``
activations against ``(M, D, O)`` weights; attention as ``(M, B, heads, T, T)`` scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from zoo.errors import ModelError
from zoo.layout import PermutationSpec


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d) + causal mask) v over the last two axes ``(…, T, d)``.

    Written out (rather than ``F.scaled_dot_product_attention``) so that its double backward
    (Hessian-vector products) runs on every device; ``tests/test_transformer.py`` checks it
    against torch's.
    """
    t = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (…, T, T)
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(-1) @ v


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        split = [
            f(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
            for f in (self.q, self.k, self.v)
        ]  # each (B, heads, T, d_head)
        y = causal_attention(*split).transpose(1, 2).reshape(b, t, d)
        return self.o(y)


class MLP(nn.Module):
    def __init__(self, d: int, hidden: int, act: nn.Module):
        super().__init__()
        self.fc, self.act, self.proj = nn.Linear(d, hidden), act, nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


def _norm(d: int, norm: bool) -> nn.Module:
    return nn.LayerNorm(d) if norm else nn.Identity()


class Layer(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int, act: nn.Module, norm: bool = True):
        super().__init__()
        self.ln1, self.attn = _norm(d, norm), Attention(d, heads)
        self.ln2, self.mlp = _norm(d, norm), MLP(d, hidden, act)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.ln1(h))
        return h + self.mlp(self.ln2(h))


class Transformer(nn.Module):
    """See the module docstring; ``forward`` takes tokens ``(B, T)`` (int64) and gives logits
    ``(B, T, vocabulary)``."""

    def __init__(self, vocab, context, width, heads, layers, hidden, tied, act, norm=True):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Layer(width, heads, hidden, act(), norm) for _ in range(layers))
        self.ln_f = _norm(width, norm)
        self.head = None if tied else nn.Linear(width, vocab, bias=False)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.wte(x) + self.wpe.weight[: x.shape[-1]]  # (B, T, D)
        for layer in self.blocks:
            h = layer(h)
        h = self.ln_f(h)
        return h @ self.wte.weight.T if self.head is None else self.head(h)

    # --- M models at once ------------------------------------------------------------------

    def forward_population(
        self, params: dict, x: torch.Tensor, training: bool = False, features: bool = False
    ) -> torch.Tensor:
        """Tokens ``(M, B, T)`` (or one batch shared by all, ``x.expand(M, …)``) -> logits
        ``(M, B, T, vocabulary)``; model m's slice equals this module with its weights. With
        ``features``: the final LayerNorm's output the head reads, ``(M, B, T, D)``.
        (``training`` changes nothing: the transformer has no dropout or batch statistics.)"""
        m, b, t = x.shape
        wte = params["wte.weight"]  # (M, V, D)
        v, d = wte.shape[1:]
        if m > 1 and x.stride(0) == 0:
            tok = wte[:, x[0]]  # (M, B, T, D)
        else:  # row m*V + token of the models' stacked tables
            offsets = torch.arange(m, device=x.device).view(m, 1, 1) * v
            tok = F.embedding(x + offsets, wte.reshape(m * v, d))
        h = (tok + params["wpe.weight"][:, :t].unsqueeze(1)).reshape(m, b * t, d)  # (M, N, D)
        for i, layer in enumerate(self.blocks):
            h = self._layer(layer, f"blocks.{i}.", params, h, b, t)
        h = _layer_norm(h, params, "ln_f.")
        if features:
            return h.view(m, b, t, d)
        head = wte if self.head is None else params["head.weight"]  # (M, V, D)
        return torch.matmul(h, head.mT).view(m, b, t, v)

    def _layer(self, layer: Layer, pre: str, params: dict, h: torch.Tensor, b: int, t: int):
        m, _, d = h.shape
        a = _layer_norm(h, params, pre + "ln1.")
        heads = [
            _linear(a, params, pre + f"attn.{n}.").view(m, b, t, self.heads, -1).transpose(2, 3)
            for n in "qkv"
        ]  # each (M, B, heads, T, d_head)
        y = causal_attention(*heads).transpose(2, 3).reshape(m, b * t, d)
        h = h + _linear(y, params, pre + "attn.o.")
        a = layer.mlp.act(_linear(_layer_norm(h, params, pre + "ln2."), params, pre + "mlp.fc."))
        return h + _linear(a, params, pre + "mlp.proj.")


def _linear(h: torch.Tensor, params: dict, pre: str) -> torch.Tensor:
    """``(M, N, I)`` through M linear layers ``(M, O, I)``: ``(M, N, O)``."""
    return torch.matmul(h, params[pre + "weight"].mT) + params[pre + "bias"].unsqueeze(1)


def _layer_norm(h: torch.Tensor, params: dict, pre: str) -> torch.Tensor:
    """M LayerNorms over the last axis, each with its own gain and bias ``(M, D)`` (none:
    the identity, for ``norm: none``)."""
    if pre + "weight" not in params:
        return h
    w, b = params[pre + "weight"].unsqueeze(1), params[pre + "bias"].unsqueeze(1)
    return F.layer_norm(h, h.shape[-1:]) * w + b


# --- building and the permutation spec ---------------------------------------------------------


def transformer_spec(width: int, heads: int, layers: int, hidden: int, tied: bool, norm=True):
    """The permutation spec of :class:`Transformer` (see the module docstring): ``P0`` the
    residual stream; per layer ``l`` four groups: the heads, the query/key dimensions and the
    value/output dimensions (both blocked by the heads), and the MLP's hidden units."""
    sizes = {"P0": width}
    roles = {"P0": "residual stream (embeddings, every LayerNorm, attention and MLP in/out, head)"}
    axes: dict[str, tuple] = {"wte.weight": (None, "P0"), "wpe.weight": (None, "P0")}
    blocks = {}
    for i in range(layers):
        pre = f"blocks.{i}."
        hp, qk, vo, mlp = (f"P{1 + 4 * i + j}" for j in range(4))
        sizes.update({hp: heads, qk: width, vo: width, mlp: hidden})
        roles.update(
            {
                hp: f"attention heads of layer {i} (whole heads: acts through {qk} and {vo})",
                qk: f"query/key dimensions of layer {i}, within each head",
                vo: f"value/output dimensions of layer {i}, within each head",
                mlp: f"MLP hidden units of layer {i}",
            }
        )
        blocks[qk], blocks[vo] = (hp, width // heads), (hp, width // heads)
        for ln in ("ln1", "ln2") if norm else ():
            axes[f"{pre}{ln}.weight"], axes[f"{pre}{ln}.bias"] = ("P0",), ("P0",)
        for n, group in (("q", qk), ("k", qk), ("v", vo)):
            axes[f"{pre}attn.{n}.weight"], axes[f"{pre}attn.{n}.bias"] = (group, "P0"), (group,)
        axes[f"{pre}attn.o.weight"], axes[f"{pre}attn.o.bias"] = ("P0", vo), ("P0",)
        axes[f"{pre}mlp.fc.weight"], axes[f"{pre}mlp.fc.bias"] = (mlp, "P0"), (mlp,)
        axes[f"{pre}mlp.proj.weight"], axes[f"{pre}mlp.proj.bias"] = ("P0", mlp), ("P0",)
    if norm:
        axes["ln_f.weight"], axes["ln_f.bias"] = ("P0",), ("P0",)
    if not tied:
        axes["head.weight"] = (None, "P0")
    return PermutationSpec(sizes, axes, {}, blocks, roles)


def build_transformer(
    cfg: dict, input_shape: tuple[int, ...], n_classes: int, act: Callable[[], nn.Module]
) -> tuple[Transformer, PermutationSpec]:
    """The :class:`Transformer` of a model config for token sequences of ``input_shape = (T,)``
    over a vocabulary of ``n_classes`` tokens, and its permutation spec."""
    if len(input_shape) != 1:
        raise ModelError(
            f"transformer needs token sequences (T,); the task gives inputs of shape "
            f"{input_shape}: use a sequence task (modular_tokens, algorithmic, char_lm)"
        )
    if "dropout" in cfg:
        raise ModelError("transformer has no dropout layers; remove model.dropout")
    width, heads, layers = int(cfg["width"]), int(cfg["heads"]), int(cfg["layers"])
    if width % heads:
        raise ModelError(
            f"model.heads={heads} must divide model.width={width} (each head has width/heads "
            "dimensions)"
        )
    hidden = int(cfg.get("mlp_width") or 4 * width)
    tied = bool(cfg["tie_embeddings"])
    if cfg.get("norm", "layer") not in ("layer", "none"):
        raise ModelError(
            f"model.norm {cfg['norm']!r}: a transformer takes 'layer' (pre-LayerNorm) or 'none'"
        )
    norm = cfg.get("norm", "layer") == "layer"
    args = (n_classes, input_shape[0], width, heads, layers, hidden, tied, act, norm)
    return Transformer(*args), transformer_spec(width, heads, layers, hidden, tied, norm)
