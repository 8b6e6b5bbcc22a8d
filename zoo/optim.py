"""Population optimizers: one update of stacked ``(M, …)`` parameters is M torch optimizers.

Each model has its own learning rate, momentum, weight decay, betas and eps (tensors of shape
``(M,)``); the update is elementwise, so it equals ``torch.optim.SGD`` / ``Adam`` / ``AdamW`` run
per model (tested in ``tests/test_training.py``). Anything that couples parameters across a
model (gradient-norm clipping, say) would have to reduce per model, never across the stack.
A model whose ``active`` flag is False is frozen: neither its weights nor its state move.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def _per_model(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """(M,) float64 values -> (M, 1, …, 1) in the dtype of ``like``, broadcastable to it."""
    t = torch.tensor(values, dtype=torch.float64, device=like.device).to(like.dtype)
    return t.reshape(-1, *([1] * (like.dim() - 1)))


@dataclass
class PopulationOptimizer:
    """SGD (momentum, Nesterov, coupled weight decay), Adam and AdamW over stacked parameters.

    Attributes:
        kind: ``sgd``, ``adam`` or ``adamw`` (shared by the population).
        hparams: one dict per model: ``lr``, ``weight_decay`` and ``momentum``/``nesterov`` (sgd)
            or ``betas``/``eps`` (adam, adamw) — the resolved ``train`` section of each run.
    """

    kind: str
    hparams: list[dict]
    state: dict = field(default_factory=dict)
    steps: torch.Tensor | None = None  # (M,) optimizer steps taken, per model

    def _h(self, key: str, like: torch.Tensor) -> torch.Tensor:
        """Hyperparameter ``key`` of every model, shaped to broadcast against ``like`` (cached)."""
        cache_key = ("h", key, like.dim(), like.dtype, like.device)
        if cache_key not in self.state:
            values = [float(h.get(key, 0.0)) for h in self.hparams]
            self.state[cache_key] = _per_model(values, like)
        return self.state[cache_key]

    @torch.no_grad()
    def step(self, params: dict, grads: dict, active: torch.Tensor) -> None:
        """Update ``params`` in place from ``grads`` for the models where ``active`` is True."""
        if self.steps is None:
            self.steps = torch.zeros(len(self.hparams), dtype=torch.long)
        self.steps += active.cpu().long()
        for name, p in params.items():
            mask = active.to(p.device).reshape(-1, *([1] * (p.dim() - 1)))
            new_p, new_state = self._update(p, grads[name], self._state_of(name, p))
            for key, value in new_state.items():
                self.state[(key, name)] = torch.where(mask, value, self.state[(key, name)])
            p.copy_(torch.where(mask, new_p, p))

    def _state_of(self, name: str, p: torch.Tensor) -> dict[str, torch.Tensor]:
        keys = ("buf",) if self.kind == "sgd" else ("m", "v")
        for key in keys:
            self.state.setdefault((key, name), torch.zeros_like(p))
        return {key: self.state[(key, name)] for key in keys}

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        if self.kind == "sgd":
            return self._sgd(p, g, state["buf"])
        return self._adam(p, g, state["m"], state["v"], decoupled=self.kind == "adamw")

    def _sgd(self, p: torch.Tensor, g: torch.Tensor, buf: torch.Tensor):
        # torch.optim.SGD: d = g + wd·p; buf = μ·buf + d (= d at the first step, as μ·0 + d);
        # d = d + μ·buf (Nesterov) or buf; p = p − lr·d. With μ = 0 every branch gives d.
        d = g + self._h("weight_decay", p) * p
        mom = self._h("momentum", p)
        buf = mom * buf + d
        d = torch.where(self._h("nesterov", p) > 0, d + mom * buf, buf)
        return p - self._h("lr", p) * d, {"buf": buf}

    def _adam(self, p, g, m, v, decoupled: bool):
        # torch.optim.Adam(W): m = lerp(m, g, 1−β1); v = β2·v + (1−β2)·g²;
        # p = p − lr/(1−β1ᵗ) · m / (sqrt(v)/sqrt(1−β2ᵗ) + eps)
        lr, wd = self._h("lr", p), self._h("weight_decay", p)
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        b1 = _per_model([h["betas"][0] for h in self.hparams], p)
        b2 = _per_model([h["betas"][1] for h in self.hparams], p)
        m = m.lerp(g, 1 - b1)
        v = v * b2 + (1 - b2) * g * g
        t = self.steps.clamp(min=1).tolist()
        bc1 = [1 - h["betas"][0] ** s for h, s in zip(self.hparams, t, strict=True)]
        bc2 = [(1 - h["betas"][1] ** s) ** 0.5 for h, s in zip(self.hparams, t, strict=True)]
        step_size = lr / _per_model(bc1, p)
        denom = v.sqrt() / _per_model(bc2, p) + self._h("eps", p)
        return p - step_size * m / denom, {"m": m, "v": v}
