"""Coordinate networks (neural fields, INRs): a small network per signal, mapping coordinates to
values (issue 14). Two architectures of :data:`zoo.nn.architectures.ARCHITECTURES`:

- ``siren`` (Sitzmann et al. 2020, "Implicit Neural Representations with Periodic Activation
  Functions"): ``depth`` hidden layers of ``width`` units, each ``h <- sin(w0 * (W h + b))``,
  then a linear readout ``out = W h + b``. ``w0`` (the paper's omega_0, 30 by default) is the
  same in every sine layer, as in the authors' code (first_omega_0 = hidden_omega_0 = 30). Its
  initialization is ``init.scheme: siren`` (:func:`zoo.nn.inits.siren_`).
- ``fourier_mlp`` (Tancik et al. 2020, "Fourier Features Let Networks Learn High Frequency
  Functions in Low Dimensional Domains"): the coordinates ``v`` (``d`` of them) are encoded as
  ``gamma(v) = [sin(pi 2^j v_k)]_{j,k} ++ [cos(pi 2^j v_k)]_{j,k}`` for ``j = 0 .. L-1``
  (``L = model.frequencies``; ``j`` outer, ``k`` inner: ``2 L d`` features), the deterministic
  "positional encoding" form of their Fourier features, so nothing but ``L`` is needed to
  render a row; then an MLP (``depth`` x ``width``, ``model.activation``, ReLU by default).

Both take inputs ``(B, d)`` (one coordinate per row) and give ``(B, C)`` (one value per output
channel). Layer names follow the MLP's (``fc1 .. fc<depth>``, ``out``), so the permutation spec
is the MLP's chain: hidden units of each layer may be permuted; with a sine (an odd function)
each hidden unit's incoming weights, bias and outgoing weights may also be negated together
(``sin(-z) = -sin(z)``), and with ReLU each may be rescaled by a positive factor.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from zoo.errors import ModelError
from zoo.layout import PermutationSpec, chain_spec

Built = tuple[nn.Sequential, PermutationSpec]


class Sine(nn.Module):
    """``sin(w0 * x)``, elementwise: SIREN's activation (``w0 = 1``: a plain sine)."""

    def __init__(self, w0: float = 1.0):
        super().__init__()
        self.w0 = float(w0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)

    def extra_repr(self) -> str:
        return f"w0={self.w0}"


class FourierFeatures(nn.Module):
    """``(…, d) -> (…, 2 L d)``: ``[sin(pi 2^j v_k)]_{j,k} ++ [cos(pi 2^j v_k)]_{j,k}``,
    ``j = 0 .. L-1`` outer, ``k`` inner. No parameters: the frequencies follow from ``L``."""

    def __init__(self, frequencies: int):
        super().__init__()
        self.frequencies = int(frequencies)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        scale = math.pi * 2.0 ** torch.arange(self.frequencies, dtype=v.dtype, device=v.device)
        z = (v.unsqueeze(-2) * scale[:, None]).flatten(-2)  # (…, L*d), j outer
        return torch.cat([torch.sin(z), torch.cos(z)], dim=-1)

    def extra_repr(self) -> str:
        return f"frequencies={self.frequencies}"


def _coordinates(arch: str, input_shape: tuple[int, ...]) -> int:
    """The coordinate dimension ``d`` of ``(d,)`` inputs; a teaching error otherwise."""
    if len(input_shape) != 1:
        raise ModelError(
            f"{arch} maps coordinates to values: it needs inputs (d,) (e.g. the (row, col) grid "
            f"of a task inr_image), but the task gives {input_shape}; use model.arch mlp, cnn_s "
            "or cnn_small for image classification"
        )
    return int(input_shape[0])


def _hidden_chain(
    cfg: dict, n_in: int, n_out: int, act: Callable[[], nn.Module]
) -> tuple[list[tuple[str, nn.Module]], PermutationSpec]:
    """``fc1, act1, …, fc<depth>, act<depth>, out`` and its chain spec."""
    if "dropout" in cfg:
        raise ModelError(
            f"model.dropout: {cfg['arch']} fits one signal per run and has no dropout layers; "
            "remove model.dropout"
        )
    width, depth = int(cfg["width"]), int(cfg["depth"])
    mods: list[tuple[str, nn.Module]] = []
    layers = []
    for i in range(depth):
        mods += [
            (f"fc{i + 1}", nn.Linear(n_in if i == 0 else width, width)),
            (f"act{i + 1}", act()),
        ]
        layers.append((f"fc{i + 1}", width))
    mods.append(("out", nn.Linear(width if depth else n_in, n_out)))
    layers.append(("out", n_out))
    return mods, chain_spec(layers)


def build_siren(cfg: dict, input_shape: tuple[int, ...], n_out: int) -> Built:
    """SIREN: ``depth`` sine layers of ``width`` units (``sin(w0 (W h + b))``), linear readout.

    Example:
        >>> net, spec = build_siren({"width": 32, "depth": 2, "w0": 30.0, "activation": "sine"},
        ...                         (2,), 1)
        >>> sum(p.numel() for p in net.parameters()), sorted(spec.sizes.items())
        (1185, [('P0', 32), ('P1', 32)])
    """
    d = _coordinates("siren", input_shape)
    if cfg.get("activation", "sine") != "sine":
        raise ModelError(
            f"siren's activation is the sine (model.activation: sine), got "
            f"{cfg['activation']!r}; for a ReLU network on coordinates use model.arch fourier_mlp"
        )
    if int(cfg["depth"]) < 1:
        raise ModelError("siren needs model.depth >= 1 (sine layers); with 0 it is linear")
    w0 = float(cfg["w0"])
    mods, spec = _hidden_chain(cfg, d, n_out, lambda: Sine(w0))
    return nn.Sequential(OrderedDict(mods)), spec


def build_fourier_mlp(
    cfg: dict, input_shape: tuple[int, ...], n_out: int, act: Callable[[], nn.Module]
) -> Built:
    """Fourier features (``model.frequencies`` octaves) then an MLP with activation ``act``."""
    d = _coordinates("fourier_mlp", input_shape)
    n_freq = int(cfg["frequencies"])
    mods, spec = _hidden_chain(cfg, 2 * n_freq * d, n_out, act)
    return nn.Sequential(OrderedDict([("encode", FourierFeatures(n_freq)), *mods])), spec


def siren_omega(module: nn.Module) -> float | None:
    """The ``w0`` of a module's sine layers (``None`` when it has none)."""
    for layer in module.modules():
        if isinstance(layer, Sine):
            return layer.w0
    return None
