"""Landscape metrics other than the Hessian: weight metrics, CKA, loss barriers, Bezier
mode connectivity. Everything is batched over a leading model (or pair) axis.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from zoo.layout import Layout, unflatten, weight_matrices
from zoo.nn.population import forward_population

ALPHA_MIN_EIGS = 10  # WeightWatcher skips layers with fewer eigenvalues: alpha is unreliable


# --- weight metrics ---------------------------------------------------------------------------


def power_law_alpha(eigs: np.ndarray) -> tuple[float, float, int]:
    """Heavy-tail exponent of an eigenvalue spectrum by maximum likelihood (Clauset et al. 2009).

    For each candidate ``x_min`` (each eigenvalue, keeping at least ``ALPHA_MIN_EIGS`` in the
    tail) α = 1 + n / Σ log(λ_i / x_min) over λ_i ≥ x_min; the ``x_min`` with the smallest
    Kolmogorov–Smirnov distance D between the empirical tail and the fitted power law wins.
    Returns ``(alpha, x_min, n_tail)``; NaN when the spectrum has fewer than
    ``ALPHA_MIN_EIGS`` positive eigenvalues.
    """
    lam = np.sort(eigs[eigs > 1e-12 * max(eigs.max(initial=0.0), 1e-30)])
    if len(lam) < ALPHA_MIN_EIGS:
        return math.nan, math.nan, len(lam)
    best = (math.inf, math.nan, math.nan, 0)
    for i in range(len(lam) - ALPHA_MIN_EIGS + 1):
        tail = lam[i:]
        logs = np.log(tail / tail[0]).sum()
        if logs <= 0:
            continue
        alpha = 1 + len(tail) / logs
        fitted = 1 - (tail / tail[0]) ** (1 - alpha)  # CDF of the power law from x_min
        empirical = np.arange(len(tail)) / len(tail)
        d = np.abs(fitted - empirical).max()
        if d < best[0]:
            best = (d, alpha, tail[0], len(tail))
    return best[1], best[2], best[3]


def weight_metrics(flat: torch.Tensor, init: torch.Tensor, layout: Layout) -> dict[str, list]:
    """Per-model weight statistics of ``flat: (M, P)`` against ``init: (M, P)``.

    Returns columns (lists of length M): ``weight_l2``, ``distance_from_init_l2``,
    ``distance_from_init_rel`` (‖θ − θ₀‖/‖θ₀‖), and per layer (lists of lists): ``layer_l2``,
    ``layer_stable_rank`` (‖W‖_F²/‖W‖₂²), ``layer_effective_rank`` (exp of the entropy of the
    normalised singular values, Roy & Vetterli 2007), ``layer_alpha`` (power-law exponent of the
    eigenvalues of WᵀW, NaN below ``ALPHA_MIN_EIGS``), and ``alpha_mean`` over layers with one.
    Convolution weights are reshaped to ``(out, in·k·k)``.
    """
    flat, init = flat.double(), init.double()
    out = {
        "weight_l2": flat.norm(dim=1).tolist(),
        "distance_from_init_l2": (flat - init).norm(dim=1).tolist(),
        "distance_from_init_rel": ((flat - init).norm(dim=1) / init.norm(dim=1)).tolist(),
    }
    params = unflatten(flat, layout)
    layers = weight_matrices(layout)
    per = {
        k: [[] for _ in range(len(flat))]
        for k in ("layer_l2", "layer_stable_rank", "layer_effective_rank", "layer_alpha")
    }
    for name in layers:
        w = params[name].reshape(len(flat), params[name].shape[1], -1)  # (M, out, rest)
        s = torch.linalg.svdvals(w)  # (M, r) descending; NaN weights give NaN
        for i in range(len(flat)):
            _layer_stats(per, i, w[i], s[i])
    out.update(per)
    out["alpha_mean"] = [_nanmean(a) for a in per["layer_alpha"]]
    return out


def _layer_stats(per: dict, i: int, w: torch.Tensor, s: torch.Tensor) -> None:
    per["layer_l2"][i].append(float(w.norm()))
    if not bool(torch.isfinite(s).all()):
        for key in ("layer_stable_rank", "layer_effective_rank", "layer_alpha"):
            per[key][i].append(math.nan)
        return
    fro2, top2 = float((s**2).sum()), float(s[0] ** 2)
    per["layer_stable_rank"][i].append(fro2 / top2 if top2 > 0 else math.nan)
    p = s / s.sum() if float(s.sum()) > 0 else s
    p = p[p > 0]
    per["layer_effective_rank"][i].append(float(torch.exp(-(p * p.log()).sum())))
    per["layer_alpha"][i].append(power_law_alpha((s**2).numpy())[0])


def _nanmean(values: list[float]) -> float:
    good = [v for v in values if not math.isnan(v)]
    return sum(good) / len(good) if good else math.nan


# --- representations and losses on the probe data ---------------------------------------------


@torch.no_grad()
def population_outputs(module: nn.Sequential, params: dict, x: torch.Tensor, penultimate=False):
    """Logits ``(M, N, C)`` (or penultimate activations) of every model on shared inputs."""
    m = next(iter(params.values())).shape[0]
    if not penultimate:
        return forward_population(module, params, x.expand(m, *x.shape))
    children = list(module.named_children())
    body = nn.Sequential(OrderedDict(children[:-1]))
    return forward_population(body, params, x.expand(m, *x.shape)).reshape(m, len(x), -1)


@torch.no_grad()
def population_losses(module, params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of every model on ``(x, y)``: ``(M,)``."""
    logits = population_outputs(module, params, x)
    m, n, c = logits.shape
    ce = F.cross_entropy(logits.reshape(m * n, c), y.repeat(m), reduction="none")
    return ce.view(m, n).mean(1)


def linear_cka(a: torch.Tensor, b: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """Linear CKA between representations ``a: (..., N, D1)`` and ``b: (..., N, D2)``.

    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = AAᵀ, L = BBᵀ on centred features
    (Kornblith et al. 2019); ``debiased`` uses the unbiased HSIC of Song et al. 2012.
    """
    a = a.double() - a.double().mean(-2, keepdim=True)
    b = b.double() - b.double().mean(-2, keepdim=True)
    k, l_ = a @ a.mT, b @ b.mT
    hsic = _hsic_unbiased if debiased else _hsic
    return hsic(k, l_) / (hsic(k, k) * hsic(l_, l_)).sqrt()


def _hsic(k: torch.Tensor, l_: torch.Tensor) -> torch.Tensor:
    return (k * l_).sum((-1, -2))  # centred features: K, L are already centred Grams


def _hsic_unbiased(k: torch.Tensor, l_: torch.Tensor) -> torch.Tensor:
    n = k.shape[-1]
    k = k - torch.diag_embed(torch.diagonal(k, dim1=-2, dim2=-1))
    l_ = l_ - torch.diag_embed(torch.diagonal(l_, dim1=-2, dim2=-1))
    kl = (k * l_).sum((-1, -2))
    sums = k.sum((-1, -2)) * l_.sum((-1, -2)) / ((n - 1) * (n - 2))
    cross = 2 * (k.sum(-1) * l_.sum(-1)).sum(-1) / (n - 2)
    return (kl + sums - cross) / (n * (n - 3))


def interpolation_losses(
    module,
    layout: Layout,
    a: torch.Tensor,
    b: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    points: int,
) -> torch.Tensor:
    """Losses along the straight lines from ``a: (K, P)`` to ``b: (K, P)``: ``(K, points)``."""
    alphas = torch.linspace(0, 1, points, dtype=a.dtype)
    path = (1 - alphas)[None, :, None] * a[:, None] + alphas[None, :, None] * b[:, None]
    flat = path.reshape(-1, a.shape[1])  # (K*points, P): one population
    losses = population_losses(module, unflatten(flat, layout), x, y)
    return losses.view(len(a), points)


def bezier_points(a, bend, b, t: torch.Tensor) -> torch.Tensor:
    """Quadratic Bezier γ(t) = (1−t)²a + 2t(1−t)·bend + t²b: ``(K, T, P)`` for ``t: (T,)``."""
    t = t.to(a.dtype)[None, :, None]
    return (1 - t) ** 2 * a[:, None] + 2 * t * (1 - t) * bend[:, None] + t**2 * b[:, None]


def fit_bezier(module, layout: Layout, a, b, x, y, settings: dict, gen: torch.Generator):
    """Train the bend of a quadratic Bezier curve between each pair ``(a, b)`` (Garipov et al.
    2018): the bend starts at the midpoint; each step samples one t ~ U(0, 1) per pair and
    takes an SGD step on the probe loss at γ(t). Returns the bends ``(K, P)``."""
    bend = ((a + b) / 2).clone().requires_grad_(True)
    batch = max(1, len(x) // 4)
    for _ in range(settings["epochs"]):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            t = torch.rand(len(a), generator=gen, dtype=a.dtype)[:, None]
            point = (1 - t) ** 2 * a + 2 * t * (1 - t) * bend + t**2 * b  # (K, P)
            logits = forward_population(
                module, unflatten(point, layout), x[idx].expand(len(a), *x[idx].shape)
            )
            k, n, c = logits.shape
            loss = F.cross_entropy(logits.reshape(k * n, c), y[idx].repeat(k))
            (grad,) = torch.autograd.grad(loss * k, bend)  # each pair's own mean-loss gradient
            with torch.no_grad():
                bend -= settings["lr"] * grad
    return bend.detach()


def bezier_mc(module, layout, a, b, bend, x, y, points: int) -> torch.Tensor:
    """Mode connectivity mc = (L₀ + L₁)/2 − L(γ(t*)), t* = argmax_t |L(γ(t)) − (L₀ + L₁)/2|
    (Yang et al. 2021: mc < 0 is a barrier, ≈ 0 connected, > 0 under-trained ends)."""
    t = torch.linspace(0, 1, points)
    curve = bezier_points(a, bend, b, t)  # (K, T, P)
    losses = population_losses(module, unflatten(curve.reshape(-1, a.shape[1]), layout), x, y)
    losses = losses.view(len(a), points)
    mid = (losses[:, 0] + losses[:, -1]) / 2
    star = (losses - mid[:, None]).abs().argmax(1)
    return mid - losses.gather(1, star[:, None]).squeeze(1)
