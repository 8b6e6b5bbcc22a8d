import math

import numpy as np
import torch

from zoo.layout import flatten
from zoo.nn.architectures import build_model
from zoo.stages.landscape.metrics import (
    bezier_mc,
    bezier_points,
    interpolation_losses,
    linear_cka,
    power_law_alpha,
    weight_metrics,
)
from zoo.weightspace.align import barrier_height

CFG = {"arch": "mlp", "width": 12, "depth": 2, "activation": "tanh"}


def _models(m=3):
    torch.manual_seed(0)  # the module inits draw from the global generator
    module, layout = build_model(CFG, (6,), 4)
    flat = torch.stack(
        [flatten(build_model(CFG, (6,), 4)[0].state_dict(), layout) for _ in range(m)]
    )
    g = torch.Generator().manual_seed(0)
    return (
        module,
        layout,
        flat,
        torch.randn(40, 6, generator=g),
        torch.randint(0, 4, (40,), generator=g),
    )


def test_cka_of_a_representation_with_itself_is_one_and_invariant():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 8, generator=g, dtype=torch.float64)
    b = torch.randn(50, 5, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    assert (
        float(linear_cka(a, a)) == torch.tensor(1.0, dtype=torch.float64).item()
        or abs(float(linear_cka(a, a)) - 1) < 1e-12
    )
    base = float(linear_cka(a, b))
    assert abs(float(linear_cka(a @ q, b)) - base) < 1e-10  # orthogonal transform
    assert abs(float(linear_cka(3.7 * a, b)) - base) < 1e-10  # isotropic scaling
    assert (
        abs(float(linear_cka(a, b, debiased=True)) - float(linear_cka(b, a, debiased=True))) < 1e-12
    )
    assert abs(float(linear_cka(a, a, debiased=True)) - 1) < 1e-12
    assert 0 <= base < 1


def test_barrier_between_a_model_and_itself_is_zero_and_positive_between_seeds():
    module, layout, flat, x, y = _models()
    same = interpolation_losses(module, layout, flat[:1], flat[:1], x, y, points=7)
    assert torch.allclose(barrier_height(same), torch.zeros(1), atol=1e-6)
    assert same.shape == (1, 7)
    cross = interpolation_losses(module, layout, flat[:1], flat[1:2], x, y, points=7)
    assert torch.allclose(cross[:, 0], same[:, 0]) and barrier_height(cross).item() >= -1e-6


def test_bezier_curve_passes_through_its_endpoints():
    _, _, flat, _, _ = _models()
    bend = torch.randn(1, flat.shape[1])
    pts = bezier_points(flat[:1], bend, flat[1:2], torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(pts[0, 0], flat[0]) and torch.allclose(pts[0, 2], flat[1])
    assert torch.allclose(pts[0, 1], 0.25 * flat[0] + 0.5 * bend[0] + 0.25 * flat[1])


def test_bezier_mc_sign_convention():
    module, layout, flat, x, y = _models()
    a, b = flat[:1], flat[:1]
    # a curve that bulges far away (huge logits at its middle): a barrier, so mc < 0
    far = a + 100.0 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))
    assert bezier_mc(module, layout, a, b, far, x, y, points=5).item() < 0
    # a flat curve (all points equal): mc == 0
    assert abs(bezier_mc(module, layout, a, b, a, x, y, points=5).item()) < 1e-6


def test_power_law_alpha_recovers_a_pareto_exponent():
    rng = np.random.default_rng(0)
    samples = (1 - rng.random(4000)) ** (-1 / 2.5)  # Pareto with density exponent 3.5
    alpha, x_min, n = power_law_alpha(samples)
    assert abs(alpha - 3.5) < 0.25 and n >= 10 and x_min >= 1
    assert math.isnan(power_law_alpha(np.ones(5))[0])  # too few eigenvalues


def test_weight_metrics_match_numpy():
    _, layout, flat, _, _ = _models()
    init = flat.flip(0)
    stats = weight_metrics(flat, init, layout)
    w = flat.numpy().astype(np.float64)
    assert np.allclose(stats["weight_l2"], np.linalg.norm(w, axis=1))
    rel = np.linalg.norm(w - init.numpy(), axis=1) / np.linalg.norm(init.numpy(), axis=1)
    assert np.allclose(stats["distance_from_init_rel"], rel)
    fc2 = flat[0, 6 * 12 + 12 : 6 * 12 + 12 + 144].reshape(12, 12).double().numpy()
    s = np.linalg.svd(fc2, compute_uv=False)
    assert np.isclose(stats["layer_stable_rank"][0][1], (s**2).sum() / s[0] ** 2)
    p = s / s.sum()
    assert np.isclose(stats["layer_effective_rank"][0][1], np.exp(-(p * np.log(p)).sum()))
    assert len(stats["layer_l2"][0]) == 3  # fc1, fc2, out
