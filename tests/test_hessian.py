"""Hessian estimators against the dense Hessian of a tiny model (ground truth)."""

import torch
from torch.func import functional_call
from torch.nn import functional as F

from zoo.layout import flatten, unflatten
from zoo.nn.architectures import build_model
from zoo.stages.landscape.hessian import PopulationHVP, hutchinson_trace, lanczos_top, rademacher

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
    together = lanczos_top(
        PopulationHVP(module, unflatten(flat, layout), x, y),
        75,
        4,
        starts,
        k=2,
        iterations=20,
        tol=1e-4,
    )
    for i in range(4):
        alone = lanczos_top(
            PopulationHVP(module, unflatten(flat[i : i + 1], layout), x, y),
            75,
            1,
            starts[i : i + 1],
            k=2,
            iterations=20,
            tol=1e-4,
        )
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


def test_models_that_stop_early_leave_the_graph_and_the_rest_are_unchanged():
    """Models converge at different iterations: the graph shrinks (counted products), and every
    model's eigenvalues, iterations and trace equal its run alone, with a plain callable too."""
    g = torch.Generator().manual_seed(0)
    spectra = [torch.linspace(1, s, 30, dtype=torch.float64) for s in (1.5, 4.0, 50.0, 900.0)]
    bases = [
        torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))[0] for _ in spectra
    ]
    h = torch.stack([q @ torch.diag(s) @ q.T for q, s in zip(bases, spectra, strict=True)])
    calls = []

    def products(hs):  # a callable without `subset`: stopped rows ride along as zeros
        def hvp(v):
            calls.append(len(v))
            return torch.einsum("mpq,mq->mp", hs, v)

        return hvp

    starts = torch.randn(4, 30, generator=g, dtype=torch.float64)
    together = lanczos_top(products(h), 30, 4, starts, k=1, iterations=30, tol=1e-6)
    assert set(calls) == {4}
    assert len(set(together.iterations.tolist())) > 1  # they did stop at different iterations
    for i in range(4):
        alone = lanczos_top(products(h[i : i + 1]), 30, 1, starts[i : i + 1], 1, 30, 1e-6)
        assert together.iterations[i] == alone.iterations[0]
        torch.testing.assert_close(together.values[i], alone.values[0], rtol=1e-10, atol=0)
        torch.testing.assert_close(together.values[i, 0], spectra[i][-1], rtol=1e-6, atol=0)

    module, layout, flat, x, y = _population(m=4, seed=3)
    hvp = PopulationHVP(module, unflatten(flat, layout), x, y)
    sizes = []
    original = PopulationHVP.__call__
    PopulationHVP.__call__ = lambda self, v: sizes.append(self.m) or original(self, v)
    try:
        probes = torch.stack(
            [rademacher(torch.Generator().manual_seed(i), 60, 75) for i in range(4)], 1
        )
        tols = hutchinson_trace(hvp, probes, tol=0.15)  # stops after 14, 45, 25, 10 probes
    finally:
        PopulationHVP.__call__ = original
    assert sizes[:10] == [4] * 10 and sizes[-1] == 1  # shrank once half had stopped
    for i in range(4):
        alone = hutchinson_trace(hvp.subset(torch.tensor([i])), probes[:, i : i + 1], tol=0.15)
        assert tols.probes[i] == alone.probes[0]
        torch.testing.assert_close(tols.trace[i], alone.trace[0], rtol=1e-9, atol=1e-12)
