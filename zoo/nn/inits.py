"""Initialization schemes, named by ``init.scheme``; formula and citation in each docstring.

Three kinds, so that what a seed controls is explicit:

- :data:`INITS` — seeded random fills ``fill(w, gen, act, cfg)``: a run's draw depends on its
  seed only (its own ``torch.Generator``).
- :data:`DETERMINISTIC_INITS` — ``fill(w, act, cfg)``, the same weights for every seed (ZerO,
  identity); runs of such a cell differ only by their data order (and dropout masks).
- ``lsuv`` — data-dependent: it runs after its ``init.base`` scheme, on a probe batch drawn
  (with the run's generator) from the task's training inputs, see :func:`lsuv_`.

A convolution weight ``(out, in, k, k)`` is read as the matrix ``(out, in*k*k)`` by the random
schemes (``fan_in = in*k*k``); the deterministic ones place their ``(out, in)`` channel matrix
at the kernel's centre tap ``[k//2, k//2]`` and zeros elsewhere (a Dirac-like convolution).

**The lazy/rich scale α is ``init.scale``: it scales the init, not the output.** After the
scheme, every weight (not the biases) is multiplied by α; the loss and the learning rate are
left alone. For a network that is D-homogeneous in its weights (ReLU, no biases) the output at
init is then α^D times larger: the init-scale form of the lazy/rich transition of Woodworth et
al. 2020 (COLT, "Kernel and rich regimes in overparametrized models"), and the α-scaled model of
Chizat, Oyallon & Bach 2019 (NeurIPS, "On lazy training in differentiable programming") without
their 1/α² loss factor. Large α: weights move little relative to their size (lazy); small α:
features are learned (rich). Cross-entropy is kept, so only the direction of the effect, not the
kernel limit, is what a zoo of this shows.

Biases are zero (``init.bias: zeros``) or PyTorch's default ``U(-1/sqrt(fan_in),
1/sqrt(fan_in))`` (``init.bias: uniform``), for every scheme.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from zoo import streams
from zoo.errors import ModelError
from zoo.layout import Layout
from zoo.nn.architectures import build_model
from zoo.nn.fields import siren_omega
from zoo.recipe import RunConfig, resolve_section
from zoo.streams import torch_generator
from zoo.tasks.base import Task

# torch.nn.init's gain names for the activations we ship
_GAIN_NAME = {
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "gelu": "relu",
    "sine": "linear",  # sin(z) ~ z near 0
}

InitFn = Callable[[torch.Tensor, torch.Generator, str, dict], None]
DeterministicFn = Callable[[torch.Tensor, str, dict], None]


def gain(act: str) -> float:
    """``torch.nn.init.calculate_gain`` of an activation (GELU counted as ReLU)."""
    return nn.init.calculate_gain(_GAIN_NAME[act])


def _fan_in(w: torch.Tensor) -> int:
    return w[0].numel()


# --- seeded random schemes ---------------------------------------------------------------------


def kaiming_uniform(w: torch.Tensor, gen: torch.Generator, act: str, cfg: dict) -> None:
    """He et al. 2015 (ICCV, "Delving deep into rectifiers"): U(-b, b), b = gain·sqrt(3/fan_in)."""
    nn.init.kaiming_uniform_(w, nonlinearity=_GAIN_NAME[act], generator=gen)


def kaiming_normal(w: torch.Tensor, gen: torch.Generator, act: str, cfg: dict) -> None:
    """He et al. 2015 (ICCV): N(0, gain²/fan_in)."""
    nn.init.kaiming_normal_(w, nonlinearity=_GAIN_NAME[act], generator=gen)


def xavier_uniform(w: torch.Tensor, gen: torch.Generator, act: str, cfg: dict) -> None:
    """Glorot & Bengio 2010 (AISTATS): U(-b, b), b = gain·sqrt(6/(fan_in + fan_out))."""
    nn.init.xavier_uniform_(w, gain=gain(act), generator=gen)


def xavier_normal(w: torch.Tensor, gen: torch.Generator, act: str, cfg: dict) -> None:
    """Glorot & Bengio 2010 (AISTATS): N(0, gain²·2/(fan_in + fan_out))."""
    nn.init.xavier_normal_(w, gain=gain(act), generator=gen)


def orthogonal(w: torch.Tensor, gen: torch.Generator, act: str, cfg: dict) -> None:
    """Saxe, McClelland & Ganguli 2014 (ICLR, "Exact solutions to the nonlinear dynamics of
    learning in deep linear networks"): W = gain·Q with Q (semi-)orthogonal, from the QR
    decomposition of a Gaussian matrix; WWᵀ = gain²·I when out <= fan_in (convolutions as
    (out, in·k·k)), WᵀW = gain²·I otherwise."""
    nn.init.orthogonal_(w, gain=gain(act), generator=gen)


def torch_default(w: torch.Tensor, gen: torch.Generator, act: str, cfg: dict) -> None:
    """PyTorch's default for Linear/Conv2d: kaiming_uniform with a = sqrt(5), i.e.
    U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)


def normal(w: torch.Tensor, gen: torch.Generator, act: str, cfg: dict) -> None:
    """N(0, std²) with a fixed ``init.std`` for every layer, independent of its fan-in: the
    "init std" axis of the Small CNN Zoo (Unterthiner et al. 2020, "Predicting neural network
    accuracy from weights") and Keras' RandomNormal (default std 0.05)."""
    nn.init.normal_(w, std=float(cfg["std"]), generator=gen)


def low_rank(w: torch.Tensor, gen: torch.Generator, act: str, cfg: dict) -> None:
    """Rank-r factorized init: W = σ/sqrt(r) · U V, U ∈ R^{out×r}, V ∈ R^{r×fan_in} with i.i.d.
    N(0, 1) entries and σ = gain/sqrt(fan_in), so E[W_ij²] = σ² as for kaiming_normal but
    rank(W) = min(r, out, fan_in) (convolutions as (out, in·k·k)). The product is trained as a
    full matrix: only the init is low-rank. After the factorized layers of Khodak, Tenenholtz,
    Mackey & Fusi 2021 (ICLR, "Initialization and regularization of factorized neural layers");
    r >= min(out, fan_in) gives a full-rank matrix of the same variance."""
    out, fan_in = w.shape[0], _fan_in(w)
    r = int(cfg["rank"])
    u = torch.randn(out, r, generator=gen, dtype=w.dtype)
    v = torch.randn(r, fan_in, generator=gen, dtype=w.dtype)
    sigma = gain(act) / math.sqrt(fan_in)
    w.copy_((u @ v * (sigma / math.sqrt(r))).reshape(w.shape))


def sparse(w: torch.Tensor, gen: torch.Generator, act: str, cfg: dict) -> None:
    """Sparse init after Martens 2010 (ICML, "Deep learning via Hessian-free optimization"):
    each output unit gets exactly k = max(1, round((1 - sparsity)·fan_in)) non-zero incoming
    weights at seeded random positions, drawn N(0, gain²/k), so a unit's pre-activation variance
    matches kaiming_normal on unit-variance inputs."""
    out, fan_in = w.shape[0], _fan_in(w)
    k = max(1, round((1.0 - float(cfg["sparsity"])) * fan_in))
    keep = torch.rand(out, fan_in, generator=gen).argsort(dim=1)[:, :k]  # (out, k) positions
    mask = torch.zeros(out, fan_in, dtype=w.dtype).scatter_(1, keep, 1.0)
    values = torch.randn(out, fan_in, generator=gen, dtype=w.dtype) * (gain(act) / math.sqrt(k))
    w.copy_((values * mask).reshape(w.shape))


INITS: dict[str, InitFn] = {
    "kaiming_uniform": kaiming_uniform,
    "kaiming_normal": kaiming_normal,
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "orthogonal": orthogonal,
    "torch_default": torch_default,
    "normal": normal,
    "low_rank": low_rank,
    "sparse": sparse,
}


# --- deterministic schemes ---------------------------------------------------------------------


def hadamard(n: int) -> torch.Tensor:
    """Sylvester's Hadamard matrix of order n (a power of 2): H_1 = [1], H_2m = [[H, H], [H, -H]];
    entries ±1 and HHᵀ = n·I (equals ``scipy.linalg.hadamard``)."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"hadamard: order {n} is not a power of 2")
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def zero_matrix(out: int, inp: int) -> torch.Tensor:
    """ZerO's matrix (Zhao, Schäfer & Anandkumar 2022, TMLR, "ZerO initialization: initializing
    neural networks with only zeros and ones", Algorithm 1): the partial identity I*_{out×in} when
    out <= in; else c·I*_{out×p} H_p I*_{p×in} with p = 2^m, m = ceil(log2 out), and
    c = 2^{-m/2} as in the authors' code (so its columns are orthonormal when out = p)."""
    if out <= inp:
        return torch.eye(out, inp)
    p = 2 ** math.ceil(math.log2(out))
    return hadamard(p)[:out, :inp] / math.sqrt(p)


def identity_matrix(out: int, inp: int) -> torch.Tensor:
    """IDInit's identity-like matrix (Pan et al. 2024, ICLR, "IDInit: a universal and stable
    initialization method for neural network training"): W_ij = 1 if i ≡ j (mod min(out, in))
    else 0, i.e. the identity repeated along the longer side (rows copy inputs when out > in,
    each output sums in/out inputs when out < in)."""
    n = min(out, inp)
    i = torch.arange(out).unsqueeze(1) % n
    j = torch.arange(inp).unsqueeze(0) % n
    return (i == j).float()


def _place(w: torch.Tensor, matrix: torch.Tensor) -> None:
    """Write an (out, in) matrix into a Linear weight, or at a conv kernel's centre tap."""
    if w.dim() == 2:
        w.copy_(matrix)
        return
    w.zero_()
    w[:, :, w.shape[2] // 2, w.shape[3] // 2] = matrix  # even kernels: the tap right of centre


def zero(w: torch.Tensor, act: str, cfg: dict) -> None:
    """ZerO (Zhao et al. 2022): :func:`zero_matrix` of (out, in); convolutions get it at the
    centre tap (their Algorithm 2; an even kernel uses tap k//2, which the paper does not
    cover). Deterministic: every seed gets the same weights."""
    _place(w, zero_matrix(w.shape[0], w.shape[1]).to(w.dtype))


def identity(w: torch.Tensor, act: str, cfg: dict) -> None:
    """Identity-like init in the style of IDInit (Pan et al. 2024): :func:`identity_matrix` of
    (out, in), at the centre tap for convolutions. Deterministic; repeated rows stay symmetric
    under gradient descent unless something breaks the tie (uniform biases, dropout, the
    readout)."""
    _place(w, identity_matrix(w.shape[0], w.shape[1]).to(w.dtype))


DETERMINISTIC_INITS: dict[str, DeterministicFn] = {"zero": zero, "identity": identity}

# every name init.scheme accepts (the schema's enum lists the same)
SCHEMES: tuple[str, ...] = (*INITS, *DETERMINISTIC_INITS, "lsuv", "siren")


# --- SIREN (position-aware) --------------------------------------------------------------------


def siren_(module: nn.Module, gen: torch.Generator, bias: str) -> None:
    """SIREN's initialization (Sitzmann et al. 2020, Sec. 3.2 and their code), in place: the
    first weight layer U(-1/fan_in, 1/fan_in); every later one U(-c, c) with
    c = sqrt(6/fan_in)/w0, so that w0·W is U(-sqrt(6/fan_in), sqrt(6/fan_in)) and the
    pre-activations of every sine layer stay standard whatever the depth. ``w0`` is read from the
    module's sine layers. Biases by ``init.bias`` (the authors keep PyTorch's default, which is
    ``init.bias: uniform``). The weights are drawn layer by layer from ``gen``."""
    w0 = siren_omega(module)
    if w0 is None:
        raise ModelError(
            "init.scheme 'siren' draws each layer's range from the sine layers' w0, and this "
            "model has no sine layer; use model.arch siren (or activation sine), or another scheme"
        )
    for i, (_, layer) in enumerate(_weight_layers(module)):
        fan_in = _fan_in(layer.weight)
        bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / w0
        layer.weight.uniform_(-bound, bound, generator=gen)
        _fill_bias(layer, bias, gen)


# --- LSUV (data-dependent) ---------------------------------------------------------------------


def _weight_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every layer whose weight the scheme draws, in ``named_modules`` order: Linear, Conv2d and
    Embedding (a transformer's token and position tables, read as ``(vocabulary, width)``
    matrices: fan_in = width). Normalization layers keep PyTorch's ones and zeros."""
    kinds = nn.Linear | nn.Conv2d | nn.Embedding
    return [(n, m) for n, m in module.named_modules() if isinstance(m, kinds)]


def _output_of(module: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer``'s output when ``module`` runs on ``x``."""
    captured = []
    hook = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        module(x)
    finally:
        hook.remove()
    return captured[0]


@torch.no_grad()
def lsuv_(module: nn.Module, x: torch.Tensor, tol: float, max_iter: int) -> list[float]:
    """Layer-sequential unit-variance (Mishkin & Matas 2016, ICLR, "All you need is a good
    init"), in place, on an already initialized ``module``.

    For each Linear/Conv2d layer L in order: (1) forward the probe batch ``x``; (2) v = Var of
    L's output over the batch and all its units; (3) stop if |v - 1| < ``tol``, else
    W_L ← W_L / sqrt(v) and repeat, at most ``max_iter`` times. Earlier layers are fixed when L
    is scaled, so every layer ends with unit output variance on ``x`` (exactly after one step
    when biases are zero).

    Args:
        module: the network (put in eval mode while probing, so dropout is off).
        x: ``(B, *input_shape)`` probe inputs.
        tol: tolerance on |Var - 1| (the paper's Tol_var).
        max_iter: most rescalings per layer (the paper's T_max).
    Returns:
        each layer's output variance after the last rescaling.
    """
    was_training = module.training
    module.eval()
    variances = []
    for name, layer in _weight_layers(module):
        for step in range(max_iter + 1):
            var = float(_output_of(module, layer, x).var())
            if not math.isfinite(var) or var <= 0.0:
                raise ModelError(
                    f"lsuv: layer {name!r} has output variance {var} on the probe batch, so it "
                    "cannot be rescaled to 1; use another init.base or activation"
                )
            if abs(var - 1.0) < tol or step == max_iter:
                break
            layer.weight.div_(math.sqrt(var))
        variances.append(var)
    module.train(was_training)
    return variances


# --- the whole module --------------------------------------------------------------------------


def _fill_bias(layer: nn.Module, mode: str, gen: torch.Generator) -> None:
    if getattr(layer, "bias", None) is None:  # bias-free convolutions, embeddings
        return
    if mode == "zeros":
        layer.bias.zero_()
        return
    bound = 1.0 / math.sqrt(_fan_in(layer.weight))
    layer.bias.uniform_(-bound, bound, generator=gen)


def _fill_layers(
    module: nn.Module, scheme: str, cfg: dict, activation: str, gen: torch.Generator
) -> None:
    """Each layer's weight by a per-layer ``scheme``, then its bias, in ``named_modules`` order."""
    for _, layer in _weight_layers(module):
        if scheme in DETERMINISTIC_INITS:
            DETERMINISTIC_INITS[scheme](layer.weight, activation, cfg)
        else:
            INITS[scheme](layer.weight, gen, activation, cfg)
        _fill_bias(layer, cfg["bias"], gen)


@torch.no_grad()
def init_module(
    module: nn.Module,
    cfg: dict,
    activation: str,
    gen: torch.Generator,
    inputs: torch.Tensor | None = None,
) -> None:
    """Initialize every Linear, Conv2d and Embedding of ``module`` in place, in ``named_modules``
    order: each layer's weight by the scheme and its bias, then (``lsuv``) the variance
    rescaling, then every weight times α (``init.scale``).

    Args:
        module: the network.
        cfg: the recipe's ``init`` section (missing keys get the schema's defaults).
        activation: the model's activation (sets the gain).
        gen: the run's generator; the same seed gives the same weights.
        inputs: ``(N, *input_shape)`` training inputs; needed by ``lsuv`` only, which probes
            ``init.probe_size`` of them chosen with ``gen`` (after the weights are drawn).
    """
    cfg = resolve_section("init", cfg)
    scheme = cfg["scheme"]
    fill_scheme = cfg["base"] if scheme == "lsuv" else scheme
    if scheme == "siren":  # each layer's range depends on its position
        siren_(module, gen, cfg["bias"])
    else:
        _fill_layers(module, fill_scheme, cfg, activation, gen)
    if scheme == "lsuv":
        if inputs is None:
            raise ModelError("init.scheme 'lsuv' needs the task's training inputs (inputs=...)")
        pick = torch.randperm(len(inputs), generator=gen)[: cfg["probe_size"]]
        lsuv_(module, inputs[pick], cfg["tol"], cfg["max_iter"])
    for _, layer in _weight_layers(module):
        layer.weight.mul_(float(cfg["scale"]))


def init_model(run: RunConfig, task: Task) -> tuple[nn.Sequential, Layout]:
    """The run's module at epoch 0, initialized from its own seed (signal tasks with
    ``task.shared_init: false``: from its seed and ``task.index``, stream ``INIT_SIGNAL``)."""
    module, layout = build_model(run.model, task.input_shape, task.n_classes)
    gen = torch_generator(run.seed, streams.INIT)
    if run.task.get("shared_init") is False:  # signal tasks: each signal draws its own init
        gen = torch_generator(run.seed, streams.INIT_SIGNAL, int(run.task["index"]))
    # lsuv probes the training inputs; the other schemes ignore them
    init_module(module, run.init, run.model["activation"], gen, inputs=task.x_train)
    return module, layout
