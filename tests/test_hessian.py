"""Hessian estimators against the dense Hessian of a tiny model (ground truth)."""

import torch
from torch.func import functional_call
from torch.nn import functional as F

from zoo.hessian import PopulationHVP, hutchinson_trace, lanczos_top, rademacher
from zoo.layout import flatten, unflatten
from zoo.models import build_model

CFG = {"arch": "mlp", "width": 6, "depth": 1, "activation": "tanh"}


def _population(m=3, seed=0):
    torch.manual_seed(seed)
    mods = [build_model(CFG, (8,), 3)[0].double() for _ in range(m)]
    module, layout = build_model(CFG, (8,), 3)
    flat = torch.stack([flatten(mm.state_dict(), layout) for mm in mods]).double()
    x = torch.randn(64, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (64,))
    return module.double(), layout, flat, x, y


def _dense_hessian(module, layout, w, x, y):
    def loss(v):
        out = functional_call(module, unflatten(v, layout), (x,))
        return F.cross_entropy(out, y)

    return torch.autograd.functional.hessian(loss, w)


def test_lanczos_top_eigenvalues_match_the_dense_hessian():
    module, layout, flat, x, y = _population()
    assert layout.num_params == 75
    hvp = PopulationHVP(module, unflatten(flat, layout), x, y)
    starts = torch.randn(3, 75, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = lanczos_top(hvp, 75, 3, starts, k=3, iterations=75, tol=1e-8)
    for i in range(3):
        dense = torch.linalg.eigvalsh(_dense_hessian(module, layout, flat[i], x, y))
        top = dense.flip(0)[:3]
        torch.testing.assert_close(res.values[i], top, rtol=1e-3, atol=1e-8)
        assert res.converged[i] and res.residual[i] <= 1e-8
        assert res.iterations[i] <= 75


def test_hutchinson_trace_is_within_three_standard_errors():
    module, layout, flat, x, y = _population()
    hvp = PopulationHVP(module, unflatten(flat, layout), x, y)
    probes = torch.stack(
        [rademacher(torch.Generator().manual_seed(i), 400, 75) for i in range(3)], 1
    )
    res = hutchinson_trace(hvp, probes, tol=1e-4)
    for i in range(3):
        true = torch.trace(_dense_hessian(module, layout, flat[i], x, y))
        assert abs(res.trace[i] - true) <= 3 * res.stderr[i]
        assert res.stderr[i] < 0.1 * abs(true)


def test_batched_equals_one_model_at_a_time():
    module, layout, flat, x, y = _population(m=4, seed=3)
    starts = torch.randn(4, 75, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    together = lanczos_top(PopulationHVP(module, unflatten(flat, layout), x, y), 75, 4, starts,
                           k=2, iterations=20, tol=1e-4)  # fmt: skip
    for i in range(4):
        alone = lanczos_top(PopulationHVP(module, unflatten(flat[i : i + 1], layout), x, y), 75, 1,
                            starts[i : i + 1], k=2, iterations=20, tol=1e-4)  # fmt: skip
        torch.testing.assert_close(together.values[i], alone.values[0], rtol=1e-9, atol=1e-12)
        assert together.iterations[i] == alone.iterations[0]


def test_a_model_with_nan_weights_does_not_touch_the_others():
    module, layout, flat, x, y = _population(m=3)
    bad = flat.clone()
    bad[1, 5] = float("nan")
    starts = torch.randn(3, 75, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    clean = lanczos_top(
        PopulationHVP(module, unflatten(flat, layout), x, y), 75, 3, starts, 1, 30, 1e-6
    )
    mixed = lanczos_top(
        PopulationHVP(module, unflatten(bad, layout), x, y), 75, 3, starts, 1, 30, 1e-6
    )
    assert torch.isnan(mixed.values[1]).all() and not mixed.converged[1]
    torch.testing.assert_close(mixed.values[[0, 2]], clean.values[[0, 2]])
