"""Architectures: each builds a module and its permutation spec from the model config.

One definition serves both ways a network is run: the plain module (``build_model``), the
per-model reference and what ``to_module`` returns, and the population forward
(:mod:`zoo.nn.population`), which reads the *same* layer list and runs M models at once. The
chain networks here are ``nn.Sequential``; the residual network and the transformer
(:mod:`zoo.nn.resnet`, :mod:`zoo.nn.transformer`) are modules with a ``forward_population``
method of their own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from zoo.errors import ModelError
from zoo.layout import Layout, PermutationSpec, chain_spec, unflatten
from zoo.nn.fields import Sine, build_fourier_mlp, build_siren
from zoo.nn.resnet import build_resnet
from zoo.nn.transformer import build_transformer

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "sine": Sine,  # sin(x); SIREN's sin(w0 x) is model.arch siren
}

Built = tuple[nn.Module, PermutationSpec]


class SeededDropout(nn.Dropout):
    """Dropout whose masks come from a ``torch.Generator``, so training is a function of the
    run's seed: ``keep = U[0, 1) >= p`` drawn with ``generator``, output ``x * keep / (1 - p)``.

    Without a generator (a module a user rebuilt and put in train mode) it is ``nn.Dropout``.
    In eval mode, and in :func:`forward_population` without generators, it is the identity.
    """

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.generator is None:
            return super().forward(x)
        return x * dropout_mask(x.shape, self.p, self.generator, x)


def dropout_mask(shape, p: float, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """``(U[0, 1) >= p) / (1 - p)`` of ``shape``, drawn on the CPU with ``gen`` (so every device
    draws the same numbers), in ``like``'s dtype and device."""
    u = torch.rand(shape, generator=gen, dtype=like.dtype)
    return ((u >= p).to(like.dtype) / (1.0 - p)).to(like.device)


def set_dropout_generator(module: nn.Module, gen: torch.Generator | None) -> None:
    """Make every :class:`SeededDropout` of ``module`` draw its masks from ``gen``."""
    for layer in module.modules():
        if isinstance(layer, SeededDropout):
            layer.generator = gen


def _act(cfg: dict) -> nn.Module:
    return ACTIVATIONS[cfg["activation"]]()


def _drop(cfg: dict, name: str) -> list[tuple[str, nn.Module]]:
    """``[(name, SeededDropout(p))]`` when the config sets ``dropout``, else no layer."""
    return [(name, SeededDropout(float(cfg["dropout"])))] if "dropout" in cfg else []


def build_mlp(cfg: dict, input_shape: tuple[int, ...], n_classes: int) -> Built:
    """MLP: flatten, ``depth`` hidden layers of ``width`` units, then a linear readout."""
    width, depth = int(cfg["width"]), int(cfg["depth"])
    n_in = 1
    for s in input_shape:
        n_in *= s
    mods: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    layers = []
    for i in range(depth):
        mods += [
            (f"fc{i + 1}", nn.Linear(n_in if i == 0 else width, width)),
            (f"act{i + 1}", _act(cfg)),
            *_drop(cfg, f"drop{i + 1}"),
        ]
        layers.append((f"fc{i + 1}", width))
    mods.append(("out", nn.Linear(width if depth else n_in, n_classes)))
    layers.append(("out", n_classes))
    return nn.Sequential(OrderedDict(mods)), chain_spec(layers, {})


def _conv_out(size: int, k: int, stride: int = 1, pad: int = 0) -> int:
    return (size + 2 * pad - k) // stride + 1


def build_cnn_s(cfg: dict, input_shape: tuple[int, ...], n_classes: int) -> Built:
    """CNN-s of the ModelZooDataset (Schürholt et al. 2022): 2,464 parameters on 28x28 inputs.

    Conv(C→8,5)–maxpool2–act–Conv(8→6,5)–maxpool2–act–Conv(6→4,2)–act–flatten–Linear(→20)–act–
    Linear(20→classes); with ``dropout``, a dropout layer after act1, act2 and act4, as theirs.
    """
    if len(input_shape) != 3:
        raise ModelError(f"cnn_s needs image inputs (C, H, W); the task gives {input_shape}")
    c, h, w = input_shape
    sides = []
    for side in (h, w):
        s = _conv_out(side, 5) // 2
        s = _conv_out(s, 5) // 2
        sides.append(_conv_out(s, 2))
    if min(sides) < 1:
        raise ModelError(
            f"cnn_s needs inputs of at least 28x28 (it was designed for MNIST-like data); the "
            f"task gives {h}x{w}: use model.arch 'cnn_small' or 'mlp' for small images"
        )
    flat = 4 * sides[0] * sides[1]
    mods = [
        ("conv1", nn.Conv2d(c, 8, 5)),
        ("pool1", nn.MaxPool2d(2)),
        ("act1", _act(cfg)),
        *_drop(cfg, "drop1"),
        ("conv2", nn.Conv2d(8, 6, 5)),
        ("pool2", nn.MaxPool2d(2)),
        ("act2", _act(cfg)),
        *_drop(cfg, "drop2"),
        ("conv3", nn.Conv2d(6, 4, 2)),
        ("act3", _act(cfg)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(flat, 20)),
        ("act4", _act(cfg)),
        *_drop(cfg, "drop4"),
        ("fc2", nn.Linear(20, n_classes)),
    ]
    layers = [("conv1", 8), ("conv2", 6), ("conv3", 4), ("fc1", 20), ("fc2", n_classes)]
    spec = chain_spec(layers, {2: sides[0] * sides[1]})
    return nn.Sequential(OrderedDict(mods)), spec


def build_cnn_small(cfg: dict, input_shape: tuple[int, ...], n_classes: int) -> Built:
    """Small CNN of Unterthiner et al. 2020: 3 conv 3x3 stride 2 (``width`` channels, 16 in the
    paper: 4,970 parameters on 1-channel inputs), global average pooling, linear readout; with
    ``dropout``, a dropout layer after each conv activation."""
    if len(input_shape) != 3:
        raise ModelError(f"cnn_small needs image inputs (C, H, W); the task gives {input_shape}")
    c, width = input_shape[0], int(cfg["width"])
    mods = [
        ("conv1", nn.Conv2d(c, width, 3, stride=2, padding=1)),
        ("act1", _act(cfg)),
        *_drop(cfg, "drop1"),
        ("conv2", nn.Conv2d(width, width, 3, stride=2, padding=1)),
        ("act2", _act(cfg)),
        *_drop(cfg, "drop2"),
        ("conv3", nn.Conv2d(width, width, 3, stride=2, padding=1)),
        ("act3", _act(cfg)),
        *_drop(cfg, "drop3"),
        ("gap", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(width, n_classes)),
    ]
    layers = [("conv1", width), ("conv2", width), ("conv3", width), ("fc", n_classes)]
    return nn.Sequential(OrderedDict(mods)), chain_spec(layers, {})


def _fourier_mlp(cfg: dict, input_shape: tuple[int, ...], n_out: int) -> Built:
    return build_fourier_mlp(cfg, input_shape, n_out, lambda: _act(cfg))


def _resnet(cfg: dict, input_shape: tuple[int, ...], n_classes: int):
    """ResNet (:mod:`zoo.nn.resnet`): stages x blocks x width, BatchNorm/GroupNorm/LayerNorm."""
    return build_resnet(cfg, input_shape, n_classes, ACTIVATIONS[cfg["activation"]])


def _transformer(cfg: dict, input_shape: tuple[int, ...], n_classes: int):
    """Decoder-only transformer (:mod:`zoo.nn.transformer`) on token sequences."""
    return build_transformer(cfg, input_shape, n_classes, ACTIVATIONS[cfg["activation"]])


ARCHITECTURES: dict[str, Callable[[dict, tuple[int, ...], int], Built]] = {
    "mlp": build_mlp,
    "cnn_s": build_cnn_s,
    "cnn_small": build_cnn_small,
    "resnet": _resnet,
    "transformer": _transformer,
    "siren": build_siren,  # coordinate networks (neural fields): zoo/nn/fields.py
    "fourier_mlp": _fourier_mlp,
}


def build_model(
    cfg: dict, input_shape: tuple[int, ...], n_classes: int
) -> tuple[nn.Sequential, Layout]:
    """Build the module for a resolved model config and describe its flat layout.

    Args:
        cfg: the recipe's ``model`` section (``arch``, ``activation``, and the arch's own keys).
        input_shape: one example's shape, e.g. ``(1, 8, 8)``.
        n_classes: outputs of the readout.
    Returns:
        ``(module, layout)``; ``layout.model`` holds ``cfg`` (less ``dropout``) plus the input
        shape and classes, so ``build_model_from_layout(layout)`` rebuilds the same function.

    Example:
        >>> cfg = {"arch": "mlp", "width": 8, "depth": 1, "activation": "relu"}
        >>> m, lay = build_model(cfg, (4,), 3)
        >>> lay.num_params, lay.names
        (67, ('fc1.weight', 'fc1.bias', 'out.weight', 'out.bias'))
    """
    if cfg.get("arch") not in ARCHITECTURES:
        raise ModelError(f"model.arch {cfg.get('arch')!r} is not one of {sorted(ARCHITECTURES)}")
    if cfg.get("activation") not in ACTIVATIONS:
        raise ModelError(
            f"model.activation {cfg.get('activation')!r} is not one of {sorted(ACTIVATIONS)} (a "
            "config whose rows differ in it has none in layout.json: take the row's "
            "model__activation)"
        )
    module, spec = ARCHITECTURES[cfg["arch"]](cfg, tuple(input_shape), int(n_classes))
    state = module.state_dict()
    # dropout adds no parameters and is the identity at evaluation: runs that differ only in
    # their rate share one layout (one dataset config), and to_module rebuilds without it
    model_info: dict[str, Any] = {k: v for k, v in cfg.items() if k != "dropout"}
    model_info.update(input_shape=list(input_shape), n_classes=int(n_classes))
    buffers = {name for name, _ in module.named_buffers()}  # BatchNorm's running statistics
    layout = Layout(
        names=tuple(state),
        shapes=tuple(tuple(v.shape) for v in state.values()),
        model=model_info,
        perm_spec=spec,
        buffers=tuple(n for n in state if n in buffers),
    )
    return module, layout


def build_model_from_layout(layout: Layout) -> nn.Module:
    """The (untrained) module a layout describes."""
    cfg = {k: v for k, v in layout.model.items() if k not in ("input_shape", "n_classes")}
    module, _ = build_model(cfg, tuple(layout.model["input_shape"]), layout.model["n_classes"])
    return module


def layout_name(layout: Layout) -> str:
    """A readable config name for a layout, e.g. ``mlp_d2_w32``, ``cnn_s``, ``cnn_small_w16``,
    ``resnet_s2_b1_w8``, ``transformer_l1_w128_h4``, ``siren_d2_w32``,
    ``fourier_mlp_d2_w64_f6``."""
    m = layout.model
    if m["arch"] == "mlp":
        return f"mlp_d{m['depth']}_w{m['width']}"
    if m["arch"] == "cnn_small":
        return f"cnn_small_w{m['width']}"
    if m["arch"] == "resnet":
        return f"resnet_s{m['stages']}_b{m['blocks']}_w{m['width']}"
    if m["arch"] == "transformer":
        return f"transformer_l{m['layers']}_w{m['width']}_h{m['heads']}"
    if m["arch"] == "siren":
        return f"siren_d{m['depth']}_w{m['width']}"
    if m["arch"] == "fourier_mlp":
        return f"fourier_mlp_d{m['depth']}_w{m['width']}_f{m['frequencies']}"
    return m["arch"]


def to_module(weights, layout: Layout, activation: str | None = None) -> nn.Module:
    """Rebuild a working ``nn.Module`` from a flat weight vector (or a dataset row).

    Args:
        weights: a ``(P,)`` tensor/array/list, or a row dict with a ``weights`` entry.
        layout: the config's :class:`Layout` (``zoo.load_layout``).
        activation: the network's activation where the config's rows differ in it (the layout
            then has none); a row gives its own (``model__activation``).
    Returns:
        the module in eval mode, its parameters (and buffers: BatchNorm's running statistics)
        set from ``weights``.
    """
    if isinstance(weights, dict):
        activation = activation or weights.get("model__activation")
        weights = weights["weights"]
    activation = layout.model.get("activation") or activation
    if activation is None:
        raise ModelError(
            "this config's rows differ in their activation (layout.json has none): pass a row "
            "(it has model__activation) or to_module(weights, layout, activation=...)"
        )
    flat = torch.as_tensor(weights, dtype=torch.float32).reshape(-1)
    model = {**layout.model, "activation": activation}
    module = build_model_from_layout(Layout(layout.names, layout.shapes, model, layout.perm_spec))
    module.load_state_dict(unflatten(flat, layout))
    return module.eval()
