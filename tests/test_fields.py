"""Coordinate networks (issue 14): SIREN and the Fourier-feature MLP. Their exact symmetries
(hidden-unit permutations; sign flips of a sine network, positive rescaling of a ReLU one)
leave the rendered signal unchanged; the population forward equals each module; SIREN's init
follows the paper."""

import math

import pytest
import torch
from torch import nn

from zoo.errors import ModelError
from zoo.layout import Layout, apply_permutation, flatten, permute_rows, unflatten
from zoo.nn.architectures import build_model, build_model_from_layout, layout_name, to_module
from zoo.nn.fields import FourierFeatures, Sine
from zoo.nn.inits import init_module
from zoo.nn.population import forward_population
from zoo.tasks.signals import coordinate_grid
from zoo.weightspace.augment import MAXPOOL_BEFORE_ACTIVATION, augment, exact_symmetries

SIREN = {"arch": "siren", "width": 16, "depth": 2, "w0": 30.0, "activation": "sine"}
FOURIER = {"arch": "fourier_mlp", "width": 12, "depth": 2, "frequencies": 4, "activation": "relu"}
CASES = [(SIREN, 3), (FOURIER, 1), ({**SIREN, "depth": 1, "w0": 5.0}, 1)]
IDS = ["siren-rgb", "fourier_mlp", "siren-shallow"]
GRID = coordinate_grid((9, 7))  # (63, 2)


def trained_like(
    cfg: dict, channels: int, n: int = 3, seed: int = 0
) -> tuple[torch.Tensor, Layout]:
    """``n`` rows of one coordinate network, initialized as the recipes do (SIREN: its own
    init with uniform biases), in float64 so that symmetries hold to rounding."""
    _, layout = build_model(cfg, (2,), channels)
    scheme = "siren" if cfg["arch"] == "siren" else "kaiming_uniform"
    rows = []
    for i in range(n):
        module, _ = build_model(cfg, (2,), channels)
        gen = torch.Generator().manual_seed(seed + i)
        init_module(module, {"scheme": scheme, "bias": "uniform"}, cfg["activation"], gen)
        rows.append(flatten(module.state_dict(), layout))
    return torch.stack(rows).double(), layout


def render64(rows: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Each row's network on the grid, weights and arithmetic in float64: ``(n, 63, C)``."""
    out = []
    with torch.no_grad():
        for row in rows:
            module = build_model_from_layout(layout).double()
            module.load_state_dict(unflatten(row.double(), layout))
            out.append(module(GRID.double()))
    return torch.stack(out)


@pytest.mark.parametrize(("cfg", "channels"), CASES, ids=IDS)
def test_hidden_unit_permutations_keep_the_rendered_signal(cfg, channels):
    rows, layout = trained_like(cfg, channels)
    gen = torch.Generator().manual_seed(1)
    perms = {p: torch.randperm(n, generator=gen) for p, n in layout.perm_spec.sizes.items()}
    module = to_module(rows[0].float(), layout)
    moved = apply_permutation(module.state_dict(), layout.perm_spec, perms)
    permuted = flatten(moved, layout).double()
    assert (permuted != rows[0].float()).float().mean() > 0.5  # most weights moved
    before, after = render64(rows[:1], layout), render64(permuted[None], layout)
    assert (after - before).abs().max() < 1e-12


def test_sine_sign_flips_keep_the_rendered_signal_and_half_flips_do_not():
    rows, layout = trained_like(SIREN, 3)
    assert [t.name for t in exact_symmetries(layout)] == ["permute", "sign_flip"]
    for t in exact_symmetries(layout):
        moved = augment(rows.float(), layout, [t], seed=3).weights.double()
        assert (moved != rows.float()).float().mean() > 0.3, t.name
        assert (render64(moved, layout) - render64(rows, layout)).abs().max() < 1e-12, t.name
    # the exact flip negates a unit's incoming weights, its bias and its outgoing weights; the
    # same flip without the bias is not a symmetry (the test would notice a wrong spec)
    signs = torch.ones(len(rows), layout.perm_spec.sizes["P0"], dtype=torch.float64)
    signs[:, ::2] = -1
    flipped = permute_rows(rows, layout, {}, {"P0": signs})
    assert (render64(flipped, layout) - render64(rows, layout)).abs().max() < 1e-12
    broken = flipped.clone()
    off = layout.offsets[layout.names.index("fc1.bias")]
    broken[:, off : off + signs.shape[1]] = rows[:, off : off + signs.shape[1]]
    assert (render64(broken, layout) - render64(rows, layout)).abs().max() > 1e-2


def test_relu_fourier_network_rescales_exactly_and_offers_no_sign_flip():
    rows, layout = trained_like(FOURIER, 1)
    assert [t.name for t in exact_symmetries(layout)] == ["permute", "rescale"]
    for t in exact_symmetries(layout):
        moved = augment(rows.float(), layout, [t], seed=4).weights.double()
        diff = (render64(moved, layout) - render64(rows, layout)).abs().max()
        assert diff < 1e-5, (t.name, float(diff))  # float32 rows: rescaling rounds


@pytest.mark.parametrize(("cfg", "channels"), CASES, ids=IDS)
def test_population_forward_equals_each_coordinate_network(cfg, channels):
    mods = [build_model(cfg, (2,), channels)[0].double() for _ in range(4)]
    _, layout = build_model(cfg, (2,), channels)
    params = {n: torch.stack([m.state_dict()[n] for m in mods]) for n in layout.names}
    shared = GRID.double().expand(4, *GRID.shape)  # the first layer as one matmul
    ref = torch.stack([m(GRID.double()) for m in mods])
    got = forward_population(mods[0], params, shared)
    assert got.shape == (4, len(GRID), channels)
    assert (got - ref).abs().max() < 1e-12
    own = torch.rand(4, 5, 2, dtype=torch.float64) * 2 - 1  # each model its own coordinates
    ref = torch.stack([m(own[i]) for i, m in enumerate(mods)])
    assert (forward_population(mods[0], params, own) - ref).abs().max() < 1e-12


def test_siren_size_layout_and_the_published_benchmark_network():
    module, layout = build_model({**SIREN, "width": 32}, (2,), 1)
    assert layout.num_params == 1185  # 2 -> 32 -> 32 -> 1: SIREN 2 hidden layers of 32
    assert layout.names == (
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
        "out.weight",
        "out.bias",
    )
    assert layout.model["w0"] == 30.0 and layout.activation == "sine"
    assert layout_name(layout) == "siren_d2_w32"
    assert Layout.from_dict(layout.to_dict()) == layout
    assert [type(m) for m in module] == [nn.Linear, Sine, nn.Linear, Sine, nn.Linear]
    assert all(m.w0 == 30.0 for m in module if isinstance(m, Sine))
    assert MAXPOOL_BEFORE_ACTIVATION.get("siren") is None  # no max-pool: every group flips
    _, fourier = build_model(FOURIER, (2,), 1)
    assert fourier.names[0] == "fc1.weight" and fourier.shapes[0] == (12, 2 * 4 * 2)
    assert layout_name(fourier) == "fourier_mlp_d2_w12_f4"


def test_fourier_features_follow_the_documented_formula():
    v = torch.tensor([[0.25, -0.5]], dtype=torch.float64)
    got = FourierFeatures(3)(v)
    want = [math.sin(math.pi * 2**j * x) for j in range(3) for x in (0.25, -0.5)]
    want += [math.cos(math.pi * 2**j * x) for j in range(3) for x in (0.25, -0.5)]
    torch.testing.assert_close(got, torch.tensor([want], dtype=torch.float64))


def test_siren_init_draws_the_papers_ranges():
    cfg = {**SIREN, "width": 256}
    module, _ = build_model(cfg, (2,), 1)
    init_module(module, {"scheme": "siren", "bias": "zeros"}, "sine", torch.Generator())
    first, second, out = module.fc1.weight, module.fc2.weight, module.out.weight
    assert first.abs().max() <= 1 / 2 and first.abs().max() > 0.49  # U(-1/fan_in, 1/fan_in)
    bound = math.sqrt(6 / 256) / 30.0
    for w in (second, out):
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    # w0 * W is U(-sqrt(6/n), sqrt(6/n)): its entries times sqrt(n) have std sqrt(2)
    assert abs(float((30.0 * second.detach()).std()) * math.sqrt(256) - math.sqrt(2)) < 0.02


def test_coordinate_networks_say_what_they_need():
    with pytest.raises(ModelError, match=r"siren maps coordinates.*needs inputs \(d,\)"):
        build_model(SIREN, (1, 8, 8), 10)
    with pytest.raises(ModelError, match="siren's activation is the sine"):
        build_model({**SIREN, "activation": "relu"}, (2,), 1)
    with pytest.raises(ModelError, match="has no dropout layers"):
        build_model({**SIREN, "dropout": 0.1}, (2,), 1)
    relu, _ = build_model({"arch": "mlp", "width": 4, "depth": 1, "activation": "relu"}, (2,), 1)
    with pytest.raises(ModelError, match="init.scheme 'siren'.*no sine layer"):
        init_module(relu, {"scheme": "siren"}, "relu", torch.Generator())
