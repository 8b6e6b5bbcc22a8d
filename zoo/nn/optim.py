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

    def __post_init__(self):
        self.hparams = [dict(h) for h in self.hparams]
        for h in self.hparams:
            if "betas" in h:
                h["beta1"], h["beta2"] = h["betas"]

    def _h(self, key: str, like: torch.Tensor) -> torch.Tensor:
        """Hyperparameter ``key`` of every model, shaped to broadcast against ``like`` (cached)."""
        cache_key = ("h", key, like.dim(), like.dtype, like.device)
        if cache_key not in self.state:
            values = [float(h.get(key, 0.0)) for h in self.hparams]
            self.state[cache_key] = _per_model(values, like)
        return self.state[cache_key]

    def _any(self, key: str) -> bool:
        return any(float(h.get(key, 0.0)) != 0.0 for h in self.hparams)

    @torch.no_grad()
    def step(self, params: dict, grads: dict, active: torch.Tensor) -> None:
        """Update ``params`` in place from ``grads`` for the models where ``active`` is True.

        ``grads`` may be overwritten (they are scratch space after the step).
        """
        if self.steps is None:
            self.steps = torch.zeros(len(self.hparams), dtype=torch.long)
        self.steps += active.cpu().long()
        frozen = not bool(active.all())
        for name, p in params.items():
            state = self._state_of(name, p)
            if frozen:  # keep copies so frozen models can be put back
                saved = [p.clone()] + [v.clone() for v in state.values()]
            if self.kind == "sgd":
                self._sgd_(p, grads[name], state)
            else:
                self._adam_(p, grads[name], state, decoupled=self.kind == "adamw")
            if frozen:
                mask = active.to(p.device).reshape(-1, *([1] * (p.dim() - 1)))
                for now, before in zip([p, *state.values()], saved, strict=True):
                    now.copy_(torch.where(mask, now, before))

    def _state_of(self, name: str, p: torch.Tensor) -> dict[str, torch.Tensor]:
        keys = ("buf",) if self.kind == "sgd" else ("m", "v")
        for key in keys:
            if (key, name) not in self.state:  # not setdefault: it would zero-fill every step
                self.state[(key, name)] = torch.zeros_like(p)
        return {key: self.state[(key, name)] for key in keys}

    def _sgd_(self, p: torch.Tensor, g: torch.Tensor, state: dict) -> None:
        # torch.optim.SGD: d = g + wd·p; buf = μ·buf + d (= d at the first step, as μ·0 + d);
        # d = d + μ·buf (Nesterov) or buf; p = p − lr·d. With μ = 0 every branch gives d.
        if self._any("weight_decay"):
            g.addcmul_(self._h("weight_decay", p), p)
        if self._any("momentum"):
            mom, buf = self._h("momentum", p), state["buf"]
            buf.mul_(mom).add_(g)
            if self._any("nesterov"):
                g = torch.where(self._h("nesterov", p) > 0, g.addcmul(mom, buf), buf)
            else:
                g = buf
        p.addcmul_(-self._h("lr", p), g)

    def _adam_(self, p: torch.Tensor, g: torch.Tensor, state: dict, decoupled: bool) -> None:
        # torch.optim.Adam(W): m = lerp(m, g, 1−β1); v = β2·v + (1−β2)·g²;
        # p = p − lr/(1−β1ᵗ) · m / (sqrt(v)/sqrt(1−β2ᵗ) + eps)
        lr, wd = self._h("lr", p), self._h("weight_decay", p)
        if decoupled:
            p.mul_(1 - lr * wd)
        elif self._any("weight_decay"):
            g.addcmul_(wd, p)
        b1, b2 = self._h("beta1", p), self._h("beta2", p)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(1 - b2, g * g)
        t = self.steps.clamp(min=1).tolist()
        bc1 = [1 - h["beta1"] ** s for h, s in zip(self.hparams, t, strict=True)]
        bc2 = [(1 - h["beta2"] ** s) ** 0.5 for h, s in zip(self.hparams, t, strict=True)]
        denom = (v.sqrt() / _per_model(bc2, p)).add_(self._h("eps", p))
        p.sub_(lr / _per_model(bc1, p) * m / denom)
