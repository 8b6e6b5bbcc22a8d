"""Hessian spectra of the training loss, batched across a population.

The loss of a population is the *sum* of the models' own mean losses, so its Hessian over the
stacked parameters is block-diagonal: one Hessian-vector product through the population graph
gives every model its own HVP. The gradient graph is built once per checkpoint (``create_graph``)
and reused for every product ("linearise once"). Each model keeps its own random probes (from
its own seed, drawn outside the batched code) and stops on its own criterion, so a model's
numbers do not depend on which models it was batched with.

Estimators:
- top eigenvalues: Lanczos with full reorthogonalisation; the top Ritz value's relative residual
  ``|β_k s_k| / |θ|`` (= ‖Hv − θv‖/|θ| for the Ritz vector) is the stopping rule and is stored.
- trace: Hutchinson's estimator with Rademacher probes, stopped when the standard error falls
  below ``trace_tol·|trace|`` (at least ``MIN_TRACE_PROBES``); the standard error is stored.
  (A negative running trace is a valid estimate, not a reason to stop.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo.nn.objectives import OBJECTIVES, Objective
from zoo.nn.population import forward_population

MIN_TRACE_PROBES = 10


class PopulationHVP:
    """Hessian-vector products of M models' mean losses on a shared probe batch.

    Args:
        module: the architecture (layer list only).
        params: ``{name: (M, *shape)}`` weights (copied; the caller's tensors are untouched).
        x, y: the probe data ``(N, *input_shape)``, ``(N,)`` (``(N, T)`` for sequences).
        objective: the task's objective (its per-model mean ``loss`` is differentiated).
        buffers: names in ``params`` that are not trained (BatchNorm running statistics): held
            constant, outside the Hessian; vectors ``(M, P)`` span the other names only.
    """

    def __init__(
        self,
        module: nn.Module,
        params: dict,
        x: torch.Tensor,
        y: torch.Tensor,
        objective: Objective = OBJECTIVES["classification"],
        buffers: tuple[str, ...] = (),
    ):
        self.module, self.x, self.y, self.objective = module, x, y, objective
        self.constants = {n: params[n].detach() for n in buffers}
        self.names = [n for n in params if n not in self.constants]
        self.leaves = [params[n].detach().clone().requires_grad_(True) for n in self.names]
        self.m = self.leaves[0].shape[0]
        leaves = dict(zip(self.names, self.leaves, strict=True)) | self.constants
        xs = x.expand(self.m, *x.shape)
        logits = forward_population(module, leaves, xs, unfold_first=True)  # (M, N, …)
        losses = objective.loss(logits, y.expand(self.m, *y.shape))  # (M,)
        self.losses = losses.detach()
        self.grads = torch.autograd.grad(losses.sum(), self.leaves, create_graph=True)
        self.sizes = [leaf[0].numel() for leaf in self.leaves]

    @property
    def num_params(self) -> int:
        return sum(self.sizes)

    def subset(self, rows: torch.Tensor) -> PopulationHVP:
        """The products of the models at ``rows`` only (a new, smaller graph)."""
        params = {n: leaf.detach()[rows] for n, leaf in zip(self.names, self.leaves, strict=True)}
        params |= {n: value[rows] for n, value in self.constants.items()}
        return PopulationHVP(
            self.module, params, self.x, self.y, self.objective, tuple(self.constants)
        )

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """``(M, P)`` vectors -> ``(M, P)`` products ``H_m v_m``."""
        parts = torch.split(v, self.sizes, dim=1)
        outs = [p.reshape(leaf.shape) for p, leaf in zip(parts, self.leaves, strict=True)]
        hv = torch.autograd.grad(self.grads, self.leaves, outs, retain_graph=True)
        return torch.cat([h.reshape(self.m, -1) for h in hv], 1).detach()


@dataclass
class EigResult:
    """Per model: top eigenvalues (largest first), relative residual of the top one, Lanczos
    iterations used, and whether the residual reached the tolerance."""

    values: torch.Tensor  # (M, k)
    residual: torch.Tensor  # (M,)
    iterations: torch.Tensor  # (M,) long
    converged: torch.Tensor  # (M,) bool


def _ritz(alphas: list, betas: list, k: int):
    """Top-k Ritz values of each model's tridiagonal matrix and the top one's residual."""
    a = torch.stack(alphas, 1)  # (M, j)
    j = a.shape[1]
    t = torch.diag_embed(a)
    if j > 1:
        b = torch.stack(betas[: j - 1], 1)  # (M, j-1)
        t = t + torch.diag_embed(b, 1) + torch.diag_embed(b, -1)
    bad = ~torch.isfinite(t).all(-1).all(-1)  # a NaN model must not break the batched eigh
    evals, evecs = torch.linalg.eigh(torch.where(bad[:, None, None], 0.0, t))  # ascending
    top = evals.flip(1)[:, :k]
    resid = (betas[j - 1] * evecs[:, -1, -1]).abs() / evals[:, -1].abs().clamp_min(1e-30)
    top[bad], resid[bad] = float("nan"), float("nan")
    return top, resid


def lanczos_top(hvp, p: int, m: int, starts: torch.Tensor, k: int, iterations: int, tol: float):
    """Batched Lanczos for the k algebraically largest eigenvalues of each model's Hessian.

    A model stops on its own residual; once half the models of the graph have stopped, the
    rest go on with a graph of their own (``hvp.subset``), so converged models cost little.

    Args:
        hvp: ``(M, P) -> (M, P)`` products (a :class:`PopulationHVP`, or any callable).
        starts: ``(M, P)`` start vectors (from each model's own seed).
        k, iterations, tol: number of eigenvalues, most iterations, residual tolerance.
    """
    dtype = starts.dtype
    k = min(k, p)
    rows = torch.arange(m)  # the models the current graph holds, as indices into the result
    q = starts / starts.norm(dim=1, keepdim=True)
    basis, alphas, betas = [q], [], []
    result = EigResult(
        torch.full((m, k), float("nan"), dtype=dtype),
        torch.full((m,), float("nan"), dtype=dtype),
        torch.zeros(m, dtype=torch.long),
        torch.zeros(m, dtype=torch.bool),
    )
    for j in range(min(iterations, p)):
        w = hvp(basis[-1])
        alphas.append((w * basis[-1]).sum(1))
        qs = torch.stack(basis, 1)  # (M, j+1, P)
        w = w - torch.einsum("mjp,mj->mp", qs, torch.einsum("mjp,mp->mj", qs, w))  # full reorth.
        w = w - torch.einsum("mjp,mj->mp", qs, torch.einsum("mjp,mp->mj", qs, w))  # twice is enough
        betas.append(w.norm(dim=1))
        top, resid = _ritz(alphas, betas, k)
        finite = torch.isfinite(top).all(1) & torch.isfinite(resid)
        breakdown = betas[-1] <= 1e-10 * alphas[-1].abs().clamp_min(1e-30)
        stop = ((resid <= tol) & (j + 1 >= k)) | breakdown | ~finite
        stop |= j + 1 == min(iterations, p)
        _freeze(result, rows[stop], top[stop], resid[stop], j + 1, tol)
        if bool(stop.all()):
            break
        basis.append(w / betas[-1].clamp_min(1e-30)[:, None])
        if stop.any():  # go on with the models still iterating
            keep = (~stop).nonzero().flatten()
            hvp = _shrink(hvp, keep, stop)
            rows = rows[keep]
            basis, alphas, betas = ([t[keep] for t in ts] for ts in (basis, alphas, betas))
    return result


def _shrink(hvp, keep: torch.Tensor, stop: torch.Tensor):
    """``hvp`` restricted to its rows ``keep``. Until half the rows of the graph have stopped,
    the stopped rows ride along as zero vectors (a new graph costs about one product); then the
    rows left get a graph of their own (``subset``)."""
    base, n = (hvp.base, hvp.n) if isinstance(hvp, _Padded) else (hvp, len(stop))
    rows = hvp.rows[keep] if isinstance(hvp, _Padded) else keep
    if hasattr(base, "subset") and 2 * len(rows) <= n:
        return base.subset(rows)
    return _Padded(base, rows, n)


class _Padded:
    """The products of rows ``rows`` of an ``n``-row ``base``: the other rows get zeros."""

    def __init__(self, base, rows: torch.Tensor, n: int):
        self.base, self.rows, self.n = base, rows, n

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        full = v.new_zeros(self.n, v.shape[1])
        full[self.rows] = v
        return self.base(full)[self.rows]


def _freeze(result: EigResult, rows, top, resid, iters: int, tol: float) -> None:
    result.values[rows, : top.shape[1]] = top
    result.residual[rows] = resid
    result.iterations[rows] = iters
    result.converged[rows] = resid <= tol


@dataclass
class TraceResult:
    trace: torch.Tensor  # (M,)
    stderr: torch.Tensor  # (M,)
    probes: torch.Tensor  # (M,) long


def hutchinson_trace(hvp, probes: torch.Tensor, tol: float) -> TraceResult:
    """Hutchinson's trace estimate mean(zᵀHz) with Rademacher ``probes: (n, M, P)`` (±1)."""
    n, m, _ = probes.shape
    samples = []
    out = TraceResult(
        torch.full((m,), float("nan"), dtype=probes.dtype),
        torch.full((m,), float("nan"), dtype=probes.dtype),
        torch.zeros(m, dtype=torch.long),
    )
    rows = torch.arange(m)  # the models still sampling, as indices into the result
    for i in range(n):
        z = probes[i, rows]
        samples.append((z * hvp(z)).sum(1))
        s = torch.stack(samples)  # (i+1, M)
        mean = s.mean(0)
        se = s.std(0) / (i + 1) ** 0.5 if i > 0 else torch.full_like(mean, float("inf"))
        stop = ((i + 1 >= MIN_TRACE_PROBES) & (se <= tol * mean.abs())) | (i + 1 == n)
        stop |= ~torch.isfinite(mean)
        done = rows[stop]
        out.trace[done], out.stderr[done], out.probes[done] = mean[stop], se[stop], i + 1
        if bool(stop.all()):
            break
        if stop.any():
            keep = (~stop).nonzero().flatten()
            hvp, rows, samples = _shrink(hvp, keep, stop), rows[keep], [t[keep] for t in samples]
    return out


def rademacher(gen: torch.Generator, n: int, p: int, dtype=torch.float64) -> torch.Tensor:
    """``(n, p)`` random ±1 entries."""
    return torch.randint(0, 2, (n, p), generator=gen).to(dtype).mul_(2).sub_(1)
