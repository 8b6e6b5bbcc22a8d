"""Alignment: weight matching and activation matching recover a permutation exactly; the loss
barrier vanishes between a model and its aligned permuted copy."""

import datasets
import pytest
import torch
from torch.nn import functional as F

import zoo
from zoo.errors import AugmentError
from zoo.layout import flatten, permute_rows
from zoo.nn.architectures import build_model, to_module
from zoo.weightspace.align import (
    Barrier,
    align,
    barrier_metrics,
    hidden_activations,
    loss_barrier,
    match_weights,
)

from .conftest import tiny_recipe

CASES = [
    ({"arch": "mlp", "width": 16, "depth": 3, "activation": "relu"}, (10,)),
    ({"arch": "cnn_s", "activation": "tanh"}, (1, 28, 28)),
    ({"arch": "cnn_small", "width": 8, "activation": "relu"}, (1, 12, 12)),
]
IDS = ["mlp", "cnn_s", "cnn_small"]


def model(cfg, shape, seed=0):
    torch.manual_seed(seed)
    module, layout = build_model(cfg, shape, 10)
    return flatten(module.state_dict(), layout), layout


def shuffled(theta, layout, n=5, seed=1):
    """``n`` copies of ``theta`` with random hidden-unit permutations, and those permutations."""
    g = torch.Generator().manual_seed(seed)
    perms = {p: torch.rand(n, k, generator=g).argsort(1) for p, k in layout.perm_spec.sizes.items()}
    return permute_rows(theta.expand(n, -1), layout, perms), perms


@pytest.mark.parametrize("probe", [False, True], ids=["weights", "activations"])
@pytest.mark.parametrize(("cfg", "shape"), CASES, ids=IDS)
def test_align_recovers_the_permutation_and_the_weights(cfg, shape, probe):
    theta, layout = model(cfg, shape)
    rows, perms = shuffled(theta, layout)
    x = torch.randn(64, *shape) if probe else None
    result = align(rows, theta, layout, probe=x)
    assert all(torch.equal(r, theta) for r in result.weights)  # bitwise the same weights
    for group, applied in perms.items():  # the found permutation undoes the applied one
        assert torch.equal(result.perms[group], applied.argsort(1))
    assert torch.equal(align(rows[0], theta, layout).weights, theta)  # one row, shape (P,)


def test_weight_matching_stops_when_a_sweep_changes_nothing():
    theta, layout = model(*CASES[1])
    rows, _ = shuffled(theta, layout, n=1)
    perms, sweeps = match_weights(rows[0], theta, layout, seed=0)
    assert sweeps >= 2  # one sweep that moved, one that confirmed
    again, sweeps_again = match_weights(theta, theta, layout, seed=0)
    assert sweeps_again == 1
    assert all(torch.equal(p, torch.arange(len(p))) for p in again.values())


def test_weight_matching_brings_an_independent_model_closer():
    a, layout = model(*CASES[0], seed=0)
    b, _ = model(*CASES[0], seed=1)
    result = align(b, a, layout)
    assert (result.weights - a).norm() < (b - a).norm()
    assert torch.equal(result.weights.sort().values, b.sort().values)  # only moved, not changed
    x = torch.randn(8, 10)
    with torch.no_grad():  # still the same function as b
        torch.testing.assert_close(to_module(result.weights, layout)(x), to_module(b, layout)(x))
    assert torch.equal(align(b, a, layout, seed=3).weights, align(b, a, layout, seed=3).weights)


def test_hidden_activations_are_the_units_of_each_group():
    module, layout = build_model(*CASES[1], 10)
    acts = hidden_activations(module, torch.randn(3, 1, 28, 28))
    shapes = {k: tuple(v[1].shape) for k, v in acts.items()}
    assert shapes == {
        "conv1": (3, 8, 12, 12),
        "conv2": (3, 6, 4, 4),
        "conv3": (3, 4, 3, 3),
        "fc1": (3, 20),
    }
    assert torch.all(acts["conv3"][1].abs() <= 1)  # after tanh


def trained_mlp(steps=150):
    """An MLP fit to a random linear teacher: interpolating it with a permuted copy of itself
    climbs a loss barrier (an untrained net may have none)."""
    theta, layout = model(*CASES[0])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, generator=g)
    y = (x @ torch.randn(10, 10, generator=g)).argmax(1)
    net = to_module(theta, layout).train()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return flatten(net.state_dict(), layout), layout, x, y


def test_barrier_of_a_permuted_copy_is_positive_before_and_zero_after_alignment():
    theta, layout, x, y = trained_mlp()
    rows, _ = shuffled(theta, layout, n=1)
    metrics = barrier_metrics(theta, rows[0], layout, x, y)
    assert metrics["barrier_loss"] > 0.1 and metrics["barrier_loss_aligned"] == 0.0
    with_probe = barrier_metrics(theta, rows[0], layout, x, y, probe=x[:64])
    assert with_probe == metrics


def test_loss_barrier_ends_are_the_models_losses():
    a, layout = model(*CASES[0], seed=0)
    b, _ = model(*CASES[0], seed=1)
    x, y = torch.randn(50, 10), torch.randint(0, 10, (50,))
    result = loss_barrier(a, b, layout, x, y, points=5)
    with torch.no_grad():
        ends = [F.cross_entropy(to_module(w, layout)(x), y).item() for w in (a, b)]
    assert result.ts == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert result.losses[0] == pytest.approx(ends[0], abs=1e-5)
    assert result.losses[-1] == pytest.approx(ends[1], abs=1e-5)
    # the one definition of the landscape's barrier_mean: highest loss minus the ends' mean
    assert result.barrier == pytest.approx(max(result.losses) - sum(ends) / 2, abs=1e-5)
    assert Barrier.from_dict(result.to_dict()) == result


def test_align_explains_mismatched_shapes():
    theta, layout = model(*CASES[0])
    with pytest.raises(AugmentError, match=r"rows \(5,\) and reference .* do not fit the layout"):
        align(torch.zeros(5), theta, layout)


def test_barrier_on_a_zoo_model_and_its_task(tmp_path):
    folder = zoo.run(
        tiny_recipe(
            tmp_path,
            seeds=1,
            grid={"train.lr": [0.1]},
            train={"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "batch_size": 32, "epochs": 8},
            checkpoints={"epochs": [8]},
        )
    )
    layout = zoo.load_layout(folder)
    ds = datasets.load_dataset(str(folder))
    row = next(iter(ds.values()))[0]
    task = zoo.load_task({k[len("task__") :]: v for k, v in row.items() if k.startswith("task__")})
    theta = torch.tensor(row["weights"])
    copy, _ = shuffled(theta, layout, n=1)
    metrics = barrier_metrics(theta, copy[0], layout, task.x_test, task.y_test)
    assert metrics["barrier_loss"] > 0.05 and metrics["barrier_loss_aligned"] == 0.0
