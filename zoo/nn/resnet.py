"""ResNet: a small residual network for images, its permutation spec, and its population forward.

``model: {arch: resnet, width: 16, stages: 3, blocks: 1, norm: batch}`` builds (He et al. 2016,
basic blocks, post-activation)::

    stem:  conv3x3(C -> w) - norm - act
    stage s (width w * 2^s), `blocks` basic blocks; the first block of stage s > 0 has stride 2
           and a 1x1 conv + norm shortcut, the others an identity shortcut:
           act( norm2(conv2(act(norm1(conv1(x))))) + shortcut(x) )
    head:  global average pool - linear(w * 2^(stages-1) -> classes)

Convolutions have no bias (each is followed by a norm). ``norm`` is ``batch`` (BatchNorm: its
running statistics are buffers of the layout, stored and published with the weights but not
trained), ``group`` (GroupNorm with ``norm_groups`` groups) or ``layer`` (GroupNorm with one
group: every channel and position of an example normalized together).

**Symmetry.** Every block of a stage adds its output to the same residual stream, so one
permutation of the stream's channels is shared by the stem (or the stride-2 shortcut that opens
the stage), every block's ``conv1`` inputs, ``conv2`` outputs, ``norm2`` and the head; each
block's hidden channels (``conv1`` out, ``norm1``, ``conv2`` in) permute on their own. With
GroupNorm the channels of a group must stay in one group: each such group of the spec is
blocked (``PermutationSpec.blocks``), its norm groups moving as whole blocks.

**Population forward.** M models as one folded batch ``(B, M*C, H, W)`` (channels_last):
convolutions are grouped (``groups=M``), GroupNorm runs with ``M*G`` groups and BatchNorm on the
folded channels, whose statistics are per model and channel as in each model alone (its running
statistics are updated in place in training mode).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from zoo.errors import ModelError
from zoo.layout import PermutationSpec

NORMS = ("batch", "group", "layer")


class BatchNorm(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose state is ``weight``, ``bias``, ``running_mean`` and
    ``running_var`` only: the momentum is fixed, so the count of batches seen is not needed,
    and the flat weight vector holds floats only."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.register_buffer("num_batches_tracked", None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        # version 2: a state dict without the count is current, not a pre-2018 one to upgrade
        super()._load_from_state_dict(state_dict, prefix, {**local_metadata, "version": 2}, *args)


def make_norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "batch":
        return BatchNorm(channels)
    return nn.GroupNorm(groups if kind == "group" else 1, channels)


class Block(nn.Module):
    """A basic residual block (two 3x3 convolutions) with an identity or 1x1 shortcut."""

    def __init__(self, c_in, c_out, stride, norm, groups, act: nn.Module):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = make_norm(norm, c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = make_norm(norm, c_out, groups)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                    norm=make_norm(norm, c_out, groups),
                )
            )
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return self.act(h + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    """See the module docstring; ``forward`` takes ``(B, C, H, W)`` and gives ``(B, classes)``."""

    def __init__(self, c_in, width, stages, blocks, n_classes, norm, groups, act):
        super().__init__()
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(c_in, width, 3, 1, 1, bias=False),
                norm=make_norm(norm, width, groups),
            )
        )
        self.act = act()
        self.stages = nn.ModuleList()
        c_prev = width
        for s in range(stages):
            c = width * 2**s
            self.stages.append(
                nn.Sequential(
                    *[
                        Block(
                            c_prev if b == 0 else c,
                            c,
                            2 if b == 0 and s > 0 else 1,
                            norm,
                            groups,
                            self.act,
                        )
                        for b in range(blocks)
                    ]
                )
            )
            c_prev = c
        self.head = nn.Linear(c_prev, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.stem(x))
        for stage in self.stages:
            h = stage(h)
        return self.head(h.mean((2, 3)))

    # --- M models at once ------------------------------------------------------------------

    def forward_population(
        self, params: dict, x: torch.Tensor, training: bool = False, features: bool = False
    ) -> torch.Tensor:
        """``(M, B, C, H, W)`` (or one batch shared by all, ``x.expand(M, …)``) -> logits
        ``(M, B, classes)``; model m's slice equals this module loaded with its weights (in
        training mode when ``training``: batch statistics, running statistics updated). With
        ``features``: the pooled features the head reads, ``(M, B, C_last)``."""
        m = x.shape[0]
        h = _stem_conv(self.stem.conv, params["stem.conv.weight"], x)  # (B, M*C, H, W)
        h = self.act(_norm(self.stem.norm, "stem.norm.", params, h, m, training))
        for s, stage in enumerate(self.stages):
            for b, block in enumerate(stage):
                h = self._block(block, f"stages.{s}.{b}.", params, h, m, training)
        pooled = h.mean((2, 3))  # (B, M*C)
        feats = pooled.view(len(pooled), m, -1).transpose(0, 1)  # (M, B, C)
        if features:
            return feats
        w, bias = params["head.weight"], params["head.bias"]  # (M, K, C), (M, K)
        return torch.matmul(feats, w.mT) + bias.unsqueeze(1)  # (M, B, K)

    def _block(self, block: Block, pre: str, params, h, m: int, training: bool):
        z = _conv(block.conv1, params[pre + "conv1.weight"], h, m)
        z = block.act(_norm(block.norm1, pre + "norm1.", params, z, m, training))
        z = _conv(block.conv2, params[pre + "conv2.weight"], z, m)
        z = _norm(block.norm2, pre + "norm2.", params, z, m, training)
        if block.shortcut is not None:
            h = _conv(block.shortcut.conv, params[pre + "shortcut.conv.weight"], h, m)
            h = _norm(block.shortcut.norm, pre + "shortcut.norm.", params, h, m, training)
        return block.act(z + h)


def _conv(layer: nn.Conv2d, w: torch.Tensor, h: torch.Tensor, m: int) -> torch.Tensor:
    """M models' convolutions of a folded ``(B, M*C, H, W)`` batch: one grouped convolution."""
    weight = w.reshape(m * w.shape[1], *w.shape[2:])  # (M*O, I, k, k)
    return F.conv2d(h, weight, None, layer.stride, layer.padding, groups=m)


def _stem_conv(layer: nn.Conv2d, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The first convolution; an input shared by all models (``x.stride(0) == 0``) is one
    ordinary convolution whose output channels are the M models' side by side."""
    m, b, c, hh, ww = x.shape
    weight = w.reshape(m * w.shape[1], *w.shape[2:])
    if m > 1 and x.stride(0) == 0:
        x0 = x[0].contiguous(memory_format=torch.channels_last)
        return F.conv2d(x0, weight, None, layer.stride, layer.padding)
    folded = x.permute(1, 0, 2, 3, 4).reshape(b, m * c, hh, ww)
    folded = folded.contiguous(memory_format=torch.channels_last)
    return F.conv2d(folded, weight, None, layer.stride, layer.padding, groups=m)


def _norm(layer: nn.Module, pre: str, params, h: torch.Tensor, m: int, training: bool):
    """GroupNorm or BatchNorm of M models on folded channels (model m owns channels m*C..)."""
    w, b = params[pre + "weight"].reshape(-1), params[pre + "bias"].reshape(-1)
    if isinstance(layer, nn.GroupNorm):
        return F.group_norm(h, m * layer.num_groups, w, b, layer.eps)
    mean, var = params[pre + "running_mean"], params[pre + "running_var"]  # (M, C)
    if training and not (mean.is_contiguous() and var.is_contiguous()):
        raise ValueError(f"{pre}running_*: training updates them in place; pass contiguous tensors")
    if training:  # views: batch_norm updates the caller's running statistics in place
        mean, var = mean.view(-1), var.view(-1)
    else:  # constants: batch_norm has no gradient for them (a Bezier bend is not trained there)
        mean, var = mean.detach().reshape(-1), var.detach().reshape(-1)
    return F.batch_norm(h, mean, var, w, b, training, layer.momentum, layer.eps)


# --- building and the permutation spec ---------------------------------------------------------


class _Spec:
    """Collects groups ``P0, P1, …`` (with their roles and blocks) and parameter axes."""

    def __init__(self):
        self.sizes, self.axes, self.blocks, self.roles = {}, {}, {}, {}

    def group(self, n: int, role: str, norm_groups: int = 1) -> str:
        name = f"P{len(self.sizes)}"
        self.sizes[name], self.roles[name] = n, role
        if norm_groups > 1:  # GroupNorm: channels move within their group, groups as blocks
            outer = f"P{len(self.sizes)}"
            self.sizes[outer], self.roles[outer] = norm_groups, f"GroupNorm groups of {name}"
            self.blocks[name] = (outer, n // norm_groups)
        return name

    def norm(self, prefix: str, group: str, kind: str) -> None:
        names = ("weight", "bias") + (("running_mean", "running_var") if kind == "batch" else ())
        for n in names:
            self.axes[f"{prefix}.{n}"] = (group,)

    def conv(self, name: str, out: str, inp: str | None) -> None:
        self.axes[f"{name}.weight"] = (out, inp, None, None)

    def build(self) -> PermutationSpec:
        return PermutationSpec(self.sizes, self.axes, {}, self.blocks, self.roles)


def resnet_spec(width: int, stages: int, blocks: int, norm: str, groups: int) -> PermutationSpec:
    """The permutation spec of :class:`ResNet`: one group per stage's residual stream, one per
    block's hidden channels (blocked by GroupNorm's groups where ``norm`` is ``group``)."""
    spec = _Spec()
    g = groups if norm == "group" else 1
    stream = spec.group(width, "residual stream of stage 0 (stem, blocks, head)", g)
    spec.conv("stem.conv", stream, None)
    spec.norm("stem.norm", stream, norm)
    for s in range(stages):
        c = width * 2**s
        for b in range(blocks):
            pre = f"stages.{s}.{b}"
            inp = stream
            if b == 0 and s > 0:
                stream = spec.group(c, f"residual stream of stage {s}", g)
                spec.conv(f"{pre}.shortcut.conv", stream, inp)
                spec.norm(f"{pre}.shortcut.norm", stream, norm)
            hidden = spec.group(c, f"hidden channels of block {s}.{b}", g)
            spec.conv(f"{pre}.conv1", hidden, inp)
            spec.norm(f"{pre}.norm1", hidden, norm)
            spec.conv(f"{pre}.conv2", stream, hidden)
            spec.norm(f"{pre}.norm2", stream, norm)
    spec.axes["head.weight"] = (None, stream)
    spec.axes["head.bias"] = (None,)
    return spec.build()


def build_resnet(
    cfg: dict, input_shape: tuple[int, ...], n_classes: int, act: Callable[[], nn.Module]
) -> tuple[ResNet, PermutationSpec]:
    """The :class:`ResNet` of a model config and its permutation spec."""
    if len(input_shape) != 3:
        raise ModelError(f"resnet needs image inputs (C, H, W); the task gives {input_shape}")
    if "dropout" in cfg:
        raise ModelError("resnet has no dropout layers; remove model.dropout")
    width, stages, blocks = int(cfg["width"]), int(cfg["stages"]), int(cfg["blocks"])
    norm, groups = cfg["norm"], int(cfg.get("norm_groups") or 1)
    if norm not in NORMS:
        raise ModelError(f"model.norm {norm!r}: a resnet takes one of {list(NORMS)}")
    if norm == "group" and width % groups:
        raise ModelError(
            f"model.norm_groups={groups} must divide model.width={width} (GroupNorm splits the "
            "channels of every layer into equal groups)"
        )
    module = ResNet(input_shape[0], width, stages, blocks, n_classes, norm, groups, act)
    return module, resnet_spec(width, stages, blocks, norm, groups)
