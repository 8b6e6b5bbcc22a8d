import pytest
import torch

from zoo.layout import Layout, apply_permutation, flatten, unflatten
from zoo.nn.architectures import build_model, to_module
from zoo.nn.population import forward_population

CASES = [
    ({"arch": "mlp", "width": 8, "depth": 2, "activation": "tanh"}, (1, 8, 8)),
    ({"arch": "mlp", "width": 5, "depth": 1, "activation": "relu"}, (16,)),
    ({"arch": "cnn_s", "activation": "relu"}, (1, 28, 28)),
    ({"arch": "cnn_small", "width": 16, "activation": "gelu"}, (1, 28, 28)),
    ({"arch": "cnn_small", "width": 4, "activation": "sigmoid"}, (1, 8, 8)),
]
IDS = ["mlp-img", "mlp-vec", "cnn_s", "cnn_small-28", "cnn_small-8"]


@pytest.mark.parametrize(("cfg", "shape"), CASES, ids=IDS)
def test_permuting_hidden_units_by_spec_keeps_outputs(cfg, shape):
    torch.manual_seed(0)
    module, layout = build_model(cfg, shape, 10)
    x = torch.randn(7, *shape)
    perms = {p: torch.randperm(n) for p, n in layout.perm_spec.sizes.items()}
    permuted = apply_permutation(module.state_dict(), layout.perm_spec, perms)
    other, _ = build_model(cfg, shape, 10)
    other.load_state_dict(permuted)
    moved = sum(not torch.equal(permuted[n], module.state_dict()[n]) for n in layout.names)
    assert moved >= len(layout.names) - 2  # the readout bias alone is not permuted
    torch.testing.assert_close(other(x), module(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("cfg", "shape"), CASES, ids=IDS)
def test_population_forward_equals_each_module(cfg, shape):
    mods = [build_model(cfg, shape, 10)[0] for _ in range(3)]
    _, layout = build_model(cfg, shape, 10)
    params = {n: torch.stack([m.state_dict()[n] for m in mods]) for n in layout.names}
    x = torch.randn(3, 5, *shape)
    out = forward_population(mods[0], params, x)
    ref = torch.stack([m(x[i]) for i, m in enumerate(mods)])
    assert out.shape == (3, 5, 10)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    shared = x[0].expand(3, *x[0].shape)  # one input for all: the first-layer fast paths
    ref = torch.stack([m(x[0]) for m in mods])
    for unfold in (False, True):
        got = forward_population(mods[0], params, shared, unfold_first=unfold)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    one = {n: t[:1] for n, t in params.items()}
    got = forward_population(mods[0], one, x[:1], unfold_first=True)  # M = 1
    torch.testing.assert_close(got[0], mods[0](x[0]), atol=1e-5, rtol=1e-5)


def test_parameter_counts_match_the_papers():
    _, cnn_s = build_model({"arch": "cnn_s", "activation": "tanh"}, (1, 28, 28), 10)
    _, small = build_model(
        {"arch": "cnn_small", "width": 16, "activation": "relu"}, (1, 28, 28), 10
    )
    assert cnn_s.num_params == 2464  # Schürholt et al. 2022, CNN-s
    assert small.num_params == 4970  # Unterthiner et al. 2020


def test_cnn_s_on_small_images_says_what_to_use():
    with pytest.raises(ValueError, match="cnn_s needs inputs of at least 28x28.*cnn_small"):
        build_model({"arch": "cnn_s", "activation": "relu"}, (1, 8, 8), 10)


def test_layout_round_trip_and_flatten_unflatten():
    module, layout = build_model(*CASES[2], 10)
    assert Layout.from_dict(layout.to_dict()) == layout
    flat = flatten(module.state_dict(), layout)
    assert flat.shape == (layout.num_params,)
    back = unflatten(flat, layout)
    assert all(torch.equal(back[n], module.state_dict()[n]) for n in layout.names)
    batched = flatten({n: v.expand(4, *v.shape) for n, v in module.state_dict().items()}, layout)
    assert batched.shape == (4, layout.num_params)
    assert layout.perm_spec.perm_to_axes["P2"] == [
        ("conv3.weight", 0),
        ("conv3.bias", 0),
        ("fc1.weight", 1),
    ]
    assert layout.perm_spec.repeat("fc1.weight", 1) == 9  # 4 channels of 3x3 flattened


def test_to_module_rebuilds_the_same_function():
    module, layout = build_model(*CASES[3], 10)
    flat = flatten(module.state_dict(), layout)
    rebuilt = to_module({"weights": flat.tolist()}, layout)
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(rebuilt(x), module(x))
    with pytest.raises(ValueError, match="has 10 entries but the layout has 4970"):
        to_module(torch.zeros(10), layout)


def test_chain_layouts_are_unchanged_by_blocks_roles_and_buffers_issue15():
    # layout.json and its hash are part of published zoos: the optional spec fields (blocks,
    # roles) and the buffer list must not appear for networks that have none
    pinned = {
        ("mlp", (1, 8, 8)): "d27ee4c2dba16cc0",
        ("cnn_s", (1, 28, 28)): "898608f238b72bc2",
        ("cnn_small", (1, 28, 28)): "bd1b122d59f23ac8",
    }
    cfgs = {
        "mlp": {"arch": "mlp", "width": 32, "depth": 2, "activation": "relu"},
        "cnn_s": {"arch": "cnn_s", "activation": "tanh"},
        "cnn_small": {"arch": "cnn_small", "width": 16, "activation": "relu"},
    }
    for (arch, shape), digest in pinned.items():
        _, layout = build_model(cfgs[arch], shape, 10)
        d = layout.to_dict()
        assert "buffers" not in d and set(d["perm_spec"]) == {"sizes", "axes", "repeats"}
        assert layout.sha256 == digest, arch
