"""Initialization schemes: ``INITS[name](weight, generator, nonlinearity)`` fills one weight.

A recipe picks a scheme by name (``init.scheme``) and a global multiplier (``init.scale``) that
multiplies every weight after the scheme has drawn it (the init-scale axis of lazy/rich and
phase studies). Biases are zero (``init.bias: zeros``) or PyTorch's default
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (``init.bias: uniform``). Every draw comes from the run's
own ``torch.Generator``, so a run's init depends on its seed only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

# torch.nn.init's gain names for the activations we ship
_GAIN_NAME = {
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "gelu": "relu",
}

InitFn = Callable[[torch.Tensor, torch.Generator, str], None]


def kaiming_uniform(w: torch.Tensor, gen: torch.Generator, act: str) -> None:
    """He et al. 2015: U(-b, b), b = gain * sqrt(3 / fan_in)."""
    nn.init.kaiming_uniform_(w, nonlinearity=_GAIN_NAME[act], generator=gen)


def kaiming_normal(w: torch.Tensor, gen: torch.Generator, act: str) -> None:
    """He et al. 2015: N(0, gain² / fan_in)."""
    nn.init.kaiming_normal_(w, nonlinearity=_GAIN_NAME[act], generator=gen)


def xavier_uniform(w: torch.Tensor, gen: torch.Generator, act: str) -> None:
    """Glorot & Bengio 2010: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out))."""
    nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain(_GAIN_NAME[act]), generator=gen)


def xavier_normal(w: torch.Tensor, gen: torch.Generator, act: str) -> None:
    """Glorot & Bengio 2010: N(0, gain² * 2 / (fan_in + fan_out))."""
    nn.init.xavier_normal_(w, gain=nn.init.calculate_gain(_GAIN_NAME[act]), generator=gen)


def orthogonal(w: torch.Tensor, gen: torch.Generator, act: str) -> None:
    """Saxe et al. 2014: a (semi-)orthogonal matrix times the gain; convolutions are reshaped to
    (out, in*k*k) first, so WWᵀ = gain² I when out <= in*k*k."""
    nn.init.orthogonal_(w, gain=nn.init.calculate_gain(_GAIN_NAME[act]), generator=gen)


def torch_default(w: torch.Tensor, gen: torch.Generator, act: str) -> None:
    """PyTorch's default for Linear/Conv2d: kaiming_uniform with a = sqrt(5), i.e.
    U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)


INITS: dict[str, InitFn] = {
    "kaiming_uniform": kaiming_uniform,
    "kaiming_normal": kaiming_normal,
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "orthogonal": orthogonal,
    "torch_default": torch_default,
}


@torch.no_grad()
def init_module(module: nn.Module, cfg: dict, activation: str, gen: torch.Generator) -> None:
    """Initialize every Linear and Conv2d of ``module`` in place, in ``named_modules`` order.

    Args:
        module: the network.
        cfg: the recipe's ``init`` section: ``scheme``, ``scale``, ``bias``.
        activation: the model's activation (sets the gain).
        gen: the run's generator; the same seed gives the same weights.
    """
    fill = INITS[cfg["scheme"]]
    for layer in module.modules():
        if not isinstance(layer, nn.Linear | nn.Conv2d):
            continue
        fill(layer.weight, gen, activation)
        layer.weight.mul_(float(cfg["scale"]))
        if layer.bias is None:
            continue
        if cfg["bias"] == "zeros":
            layer.bias.zero_()
        else:
            fan_in = layer.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            layer.bias.uniform_(-bound, bound, generator=gen)
