"""The per-layer form (issue 17) against ground truth: the modules' own parameters, the zoo's
permutation symmetries, and the real `nfn` package (PyPI), whose permutation-invariant network
is built from our layout, is invariant to our symmetries, and learns test accuracy from a
trained MLP zoo and a trained CNN zoo better than a constant does on held-out runs."""

import re
from pathlib import Path

import pytest
import torch
from nfn import layers as nfn_layers
from torch import nn
from torch.utils.data import DataLoader

import zoo
from zoo.errors import AugmentError
from zoo.layout import Layout, PermutationSpec, flatten, permute_rows
from zoo.nn.architectures import build_model
from zoo.store.dataset import read_layouts
from zoo.weightspace.functional import NetworkDescription, describe_network

from .conftest import tiny_recipe

ARCHS = {
    "mlp": ({"arch": "mlp", "width": 8, "depth": 2, "activation": "relu"}, (1, 8, 8), 10),
    "cnn_s": ({"arch": "cnn_s", "activation": "tanh"}, (1, 28, 28), 10),
    "cnn_small": ({"arch": "cnn_small", "width": 6, "activation": "relu"}, (1, 8, 8), 10),
}


def _random_rows(arch: str, n: int = 3) -> tuple[torch.Tensor, Layout, list[nn.Module]]:
    """``n`` freshly initialized networks of ``arch`` as flat rows, with their modules."""
    torch.manual_seed(0)
    modules = [build_model(*ARCHS[arch]) for _ in range(n)]
    layout = modules[0][1]
    rows = torch.stack([flatten(dict(m.state_dict()), layout) for m, _ in modules])
    return rows, layout, [m for m, _ in modules]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_per_layer_tensors_are_the_modules_parameters(arch):
    rows, layout, modules = _random_rows(arch)
    weights, biases = zoo.to_layers(rows, layout)
    network = describe_network(layout)
    assert NetworkDescription.from_dict(network.to_dict()) == network
    assert len(weights) == len(biases) == len(network.layers)
    for layer, w, b in zip(network.layers, weights, biases, strict=True):
        for row, module in enumerate(modules):
            state = module.state_dict()
            assert torch.equal(w[row], state[layer.weight].reshape(layer.shape))
            assert torch.equal(b[row], state[layer.bias])
    assert torch.equal(zoo.from_layers(weights, biases, layout), rows)
    single_w, _ = zoo.to_layers(rows[0], layout)  # one row: no batch axis
    assert single_w[0].shape == network.layers[0].shape
    if arch == "cnn_s":  # fc1 reads conv3's 4 channels x 3 x 3 positions: that convolution
        fc1 = next(x for x in network.layers if x.weight == "fc1.weight")
        assert fc1.shape == (20, 4, 3, 3) and fc1.in_perm == "P2"


@pytest.mark.parametrize("arch", list(ARCHS))
def test_a_hidden_unit_permutation_permutes_the_out_and_in_axes(arch):
    rows, layout, _ = _random_rows(arch, n=2)
    g = torch.Generator().manual_seed(1)
    sizes = layout.perm_spec.sizes
    perms = {
        p: torch.stack([torch.randperm(k, generator=g) for _ in rows]) for p, k in sizes.items()
    }
    weights, biases = zoo.to_layers(rows, layout)
    moved_w, moved_b = zoo.to_layers(permute_rows(rows, layout, perms), layout)
    for i, layer in enumerate(describe_network(layout).layers):
        for r in range(len(rows)):
            w, b = weights[i][r], biases[i][r]
            if layer.out_perm:
                w, b = w[perms[layer.out_perm][r]], b[perms[layer.out_perm][r]]
            if layer.in_perm:
                w = w[:, perms[layer.in_perm][r]]
            assert torch.equal(moved_w[i][r], w) and torch.equal(moved_b[i][r], b)


def test_layouts_that_are_not_a_chain_of_layers_are_refused():
    spec = PermutationSpec({"P0": 2}, {"a.weight": ("P0", None), "b.weight": (None, None)})
    no_bias = Layout(("a.weight", "b.weight"), ((2, 3), (1, 2)), {}, spec)
    with pytest.raises(AugmentError, match="without a bias"):
        describe_network(no_bias)
    spec = PermutationSpec(
        {"P0": 2},
        {"a.weight": ("P0", None), "a.bias": ("P0",), "b.weight": (None, None), "b.bias": (None,)},
    )
    broken = Layout(
        ("a.weight", "a.bias", "b.weight", "b.bias"), ((2, 3), (2,), (1, 2), (1,)), {}, spec
    )
    with pytest.raises(AugmentError, match="not a chain of layers"):
        describe_network(broken)


def invariant_net(layout: Layout, channels: int = 16) -> nn.Module:
    """nfn's permutation-invariant network (NP layers, then pooling), a readout of 1 value."""
    spec = zoo.nfn_spec(layout)
    return nn.Sequential(
        nfn_layers.NPLinear(spec, 1, channels),
        nfn_layers.TupleOp(nn.ReLU()),
        nfn_layers.NPLinear(spec, channels, channels),
        nfn_layers.TupleOp(nn.ReLU()),
        nfn_layers.NPPool(spec),
        nn.Flatten(start_dim=-2),
        nn.Linear(channels * nfn_layers.NPPool.get_num_outs(spec), 1),
    )


@pytest.mark.parametrize("arch", list(ARCHS))
def test_nfn_built_from_our_layout_is_invariant_to_our_symmetries(arch):
    rows, layout, _ = _random_rows(arch)
    spec = zoo.nfn_spec(layout)
    first, last = spec.weight_spec[0].shape, spec.weight_spec[-1].shape
    inputs = 64 if arch == "mlp" else 1  # flattened 8x8 pixels, or one image channel
    assert first[:2] == (-1, inputs) and last[:2] == (10, -1)
    net = invariant_net(layout)
    g = torch.Generator().manual_seed(2)
    perms = {
        p: torch.stack([torch.randperm(k, generator=g) for _ in rows])
        for p, k in layout.perm_spec.sizes.items()
    }
    with torch.no_grad():
        before = net(zoo.to_nfn(rows, layout))
        after = net(zoo.to_nfn(permute_rows(rows, layout, perms), layout))
    assert torch.allclose(before, after, atol=1e-5)
    assert not torch.allclose(before[0], before[1])  # different networks: different outputs


def _fit_and_score(folder, config: str) -> tuple[float, float, list[float]]:
    """Train the invariant net on the zoo's train split to predict test_acc (standardized);
    its mean squared error on the validation split's runs, the train-mean constant's, and the
    per-epoch training losses."""
    train, layout = zoo.load(folder, config, "train", columns=["weights", "test_acc"])
    held, _ = zoo.load(folder, config, "validation", columns=["weights", "test_acc"])
    torch.manual_seed(0)  # nfn's layers draw their init from torch's global generator
    net = invariant_net(layout)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    scale = train["weights"][:].std()  # weights to unit scale, as nfn's examples do
    losses = []
    for _ in range(60):
        total = 0.0
        for batch in DataLoader(train, batch_size=16, shuffle=True):
            pred = net(zoo.to_nfn(batch["weights"] / scale, layout)).squeeze(-1)
            loss = ((pred - batch["test_acc"]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(pred)
        losses.append(total / len(train))
    with torch.no_grad():
        pred = net(zoo.to_nfn(held["weights"][:] / scale, layout)).squeeze(-1)
    target = held["test_acc"][:]
    constant = train["test_acc"][:].mean()
    return ((pred - target) ** 2).mean().item(), ((constant - target) ** 2).mean().item(), losses


ZOOS = {  # small zoos whose test accuracy spreads from chance to trained (10 s each)
    "mlp": {"model": {"arch": "mlp", "width": 8, "depth": 1, "activation": "tanh"}},
    "cnn_small": {
        "task": {"name": "digits", "n_train": 1024},
        "model": {"arch": "cnn_small", "width": 8, "activation": "relu"},
        "train": {"optimizer": "adam", "lr": 0.01, "batch_size": 32, "epochs": 4},
        "grid": {"train.lr": [0.01, 0.03]},
    },
}


def _zoo(kind: str, tmp_path_factory) -> tuple:
    epochs = [0, 1, 4] if kind == "cnn_small" else [0, 1, 2]
    out = tmp_path_factory.mktemp(kind) / "out"
    folder = zoo.run(tiny_recipe(out, seeds=6, checkpoints={"epochs": epochs}, **ZOOS[kind]))
    return folder, next(iter(read_layouts(folder)))


@pytest.fixture(scope="module")
def mlp_zoo(tmp_path_factory):
    return _zoo("mlp", tmp_path_factory)


@pytest.fixture(scope="module")
def cnn_small_zoo(tmp_path_factory):
    return _zoo("cnn_small", tmp_path_factory)


@pytest.mark.parametrize("kind", list(ZOOS))
def test_nfn_learns_test_accuracy_from_a_zoo(kind, request):
    folder, config = request.getfixturevalue(f"{kind}_zoo")
    mse, constant, losses = _fit_and_score(folder, config)
    assert losses[-1] < 0.5 * losses[0]  # it trains
    assert mse < 0.5 * constant, (mse, constant)  # and generalizes to held-out runs


def test_the_readmes_nfn_snippet_trains(cnn_small_zoo):
    folder, config = cnn_small_zoo
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Read a zoo")[1].split("\n## ")[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[1]
    code = code.replace('"alice/cnn-zoo"', repr(str(folder))).replace("cnn_small_w16", config)
    torch.manual_seed(0)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["loss"].item() > 0 and isinstance(namespace["net"], nn.Module)
