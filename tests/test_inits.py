"""Each init scheme checked for its defining property (formula and citation in each test)."""

import math

import pytest
import torch
from torch import nn

from zoo.errors import ModelError
from zoo.nn.architectures import build_model
from zoo.nn.inits import (
    DETERMINISTIC_INITS,
    INITS,
    SCHEMES,
    gain,
    hadamard,
    identity_matrix,
    init_model,
    init_module,
    lsuv_,
    zero_matrix,
)
from zoo.recipe import expand_recipe, recipe_schema
from zoo.tasks import load_task

from .conftest import tiny_recipe

MLP = {"arch": "mlp", "width": 32, "depth": 3, "activation": "tanh"}


def _init(model_cfg, input_shape, init_cfg, seed=0, inputs=None, n_classes=10):
    module, _ = build_model(model_cfg, input_shape, n_classes)
    gen = torch.Generator().manual_seed(seed)
    init_module(module, init_cfg, model_cfg["activation"], gen, inputs=inputs)
    return module


def _weights(module):
    return [m.weight.detach() for m in module.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def test_schema_lists_every_scheme():
    enum = recipe_schema()["properties"]["init"]["properties"]["scheme"]["enum"]
    assert sorted(enum) == sorted(SCHEMES)
    assert set(INITS).isdisjoint(DETERMINISTIC_INITS)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_orthogonal_rows_are_orthonormal_times_gain(act):
    # Saxe et al. 2014: W = gain·Q, Q semi-orthogonal, so W Wᵀ = gain²·I (out <= fan_in);
    # a convolution counts as the matrix (out, in·k·k)
    mlp = _init({**MLP, "activation": act}, (64,), {"scheme": "orthogonal"})
    cnn = _init({"arch": "cnn_s", "activation": act}, (1, 28, 28), {"scheme": "orthogonal"})
    for w in _weights(mlp)[:-1] + _weights(cnn)[1:4]:
        m = w.reshape(w.shape[0], -1)
        assert m.shape[0] <= m.shape[1]
        torch.testing.assert_close(m @ m.T, gain(act) ** 2 * torch.eye(len(m)), atol=1e-4, rtol=0)


def test_lsuv_gives_unit_output_variance_per_layer():
    # Mishkin & Matas 2016: after LSUV, Var(output of layer L on the probe batch) = 1 for every
    # L, within Tol_var; with zero biases one rescaling W_L / sqrt(Var) is exact
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 3 + 1
    cfg = {"scheme": "lsuv", "probe_size": 64, "tol": 1e-3, "max_iter": 10}
    for model_cfg in ({**MLP, "dropout": 0.5}, {"arch": "cnn_s", "activation": "relu"}):
        module = _init(model_cfg, (1, 28, 28), cfg, inputs=x).eval()
        h, captured = x, []
        with torch.no_grad():
            for layer in module:  # the probe is all of x (probe_size = len(x)), in another order
                h = layer(h)
                if isinstance(layer, nn.Linear | nn.Conv2d):
                    captured.append(float(h.var()))
        assert len(captured) == len(_weights(module)) >= 4
        assert all(abs(v - 1.0) < 1e-3 for v in captured), captured


def test_lsuv_stops_at_tolerance_and_max_iter_and_needs_inputs():
    module, _ = build_model(MLP, (16,), 4)
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    for layer in _weights(module):
        layer.normal_(generator=torch.Generator().manual_seed(2))  # Var(out) ≈ fan_in ≫ 1
    variances = lsuv_(module, x, tol=10.0, max_iter=5)
    assert all(abs(v - 1.0) < 10.0 for v in variances)
    with pytest.raises(ModelError, match="'lsuv' needs the task's training inputs"):
        _init(MLP, (16,), {"scheme": "lsuv"})


def test_lsuv_in_a_run_probes_the_training_inputs():
    # the run path: init_model hands the task's inputs to lsuv; the probe is 256 of the 256
    # digits, so the first layer's output variance on them is 1
    recipe = tiny_recipe(init={"scheme": "lsuv", "tol": 1e-3}, seeds=1)
    run = expand_recipe(recipe)[0]
    module, _ = init_model(run, load_task(run.task))
    x = load_task(run.task).x_train.flatten(1)
    assert len(x) == run.init["probe_size"] == 256
    with torch.no_grad():
        assert float(module.fc1(x).var()) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("rank", [1, 3])
def test_low_rank_has_rank_r(rank):
    # Khodak et al. 2021 style factorized init: W = σ/sqrt(r)·U V has rank min(r, out, fan_in)
    mlp = _init(MLP, (20,), {"scheme": "low_rank", "rank": rank})
    cnn = _init(
        {"arch": "cnn_small", "width": 16, "activation": "relu"},
        (1, 8, 8),
        {"scheme": "low_rank", "rank": rank},
    )
    for w in _weights(mlp) + _weights(cnn):
        m = w.reshape(w.shape[0], -1)
        assert torch.linalg.matrix_rank(m) == min(rank, *m.shape)


def test_low_rank_keeps_the_kaiming_variance():
    # E[W_ij²] = σ² = gain²/fan_in, the same as kaiming_normal, whatever the rank
    module = _init({**MLP, "width": 256, "depth": 2}, (256,), {"scheme": "low_rank", "rank": 8})
    w = _weights(module)[1]
    assert float(w.pow(2).mean()) == pytest.approx(gain("tanh") ** 2 / 256, rel=0.25)


def test_zero_is_deterministic_and_follows_algorithm_1():
    # ZerO (Zhao et al. 2022): no randomness; I* when out <= in, else c·H_p[:out, :in] with
    # p = 2^ceil(log2 out), c = 1/sqrt(p): its columns are orthonormal when out = p
    cfg = {"scheme": "zero", "bias": "zeros"}
    a, b = _init(MLP, (8, 4), cfg, seed=0), _init(MLP, (8, 4), cfg, seed=1)
    for wa, wb in zip(_weights(a), _weights(b), strict=True):
        assert torch.equal(wa, wb)
    first, second = _weights(a)[:2]  # fc1: (32, 32) square, fc2: (32, 32)
    assert torch.equal(first, torch.eye(32)) and torch.equal(second, torch.eye(32))
    assert torch.equal(_weights(a)[-1], torch.eye(10, 32))  # out <= in: partial identity
    up = zero_matrix(8, 3)
    torch.testing.assert_close(up.T @ up, torch.eye(3))
    torch.testing.assert_close(zero_matrix(6, 2).abs(), torch.full((6, 2), 1 / math.sqrt(8)))
    h = hadamard(16)
    assert torch.equal(h @ h.T, 16 * torch.eye(16))


def test_zero_and_identity_use_the_centre_tap_of_convolutions():
    cnn = _init({"arch": "cnn_s", "activation": "relu"}, (1, 28, 28), {"scheme": "zero"})
    conv2 = _weights(cnn)[1]  # (6, 8, 5, 5): out <= in, partial identity at [2, 2]
    assert torch.equal(conv2[:, :, 2, 2], torch.eye(6, 8))
    assert int(torch.count_nonzero(conv2)) == 6
    conv1 = _weights(
        _init({"arch": "cnn_s", "activation": "relu"}, (1, 28, 28), {"scheme": "identity"})
    )[0]  # (8, 1, 5, 5)
    assert torch.equal(conv1[:, 0, 2, 2], torch.ones(8))


def test_identity_repeats_the_identity_along_the_longer_side():
    # IDInit (Pan et al. 2024): W_ij = 1 iff i ≡ j (mod min(out, in))
    assert torch.equal(identity_matrix(4, 2), torch.tensor([[1.0, 0], [0, 1], [1, 0], [0, 1]]))
    assert torch.equal(identity_matrix(2, 5), torch.tensor([[1.0, 0, 1, 0, 1], [0, 1, 0, 1, 0]]))
    a = _init(MLP, (50,), {"scheme": "identity"}, seed=0)
    b = _init(MLP, (50,), {"scheme": "identity"}, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b), strict=True))


def test_sparse_keeps_k_inputs_per_unit():
    # Martens 2010: each unit has exactly k = round((1 - sparsity)·fan_in) non-zero inputs,
    # drawn N(0, gain²/k)
    module = _init({**MLP, "width": 200}, (100,), {"scheme": "sparse", "sparsity": 0.9})
    w = _weights(module)[1]  # (200, 200)
    assert (torch.count_nonzero(w, dim=1) == 20).all()
    nz = w[w != 0]
    assert float(nz.pow(2).mean()) == pytest.approx(gain("tanh") ** 2 / 20, rel=0.1)


def test_normal_has_the_given_std():
    module = _init({**MLP, "width": 256}, (256,), {"scheme": "normal", "std": 0.02})
    assert float(_weights(module)[1].std()) == pytest.approx(0.02, rel=0.02)


@pytest.mark.parametrize("scheme", ["zero", "identity", "lsuv", "low_rank"])
def test_scale_alpha_multiplies_the_weights_not_the_biases(scheme):
    # α (init.scale) scales the init: weights × α after the scheme (after LSUV's rescaling too)
    x = torch.randn(40, 12, generator=torch.Generator().manual_seed(3))
    base = {"scheme": scheme, "bias": "uniform"}
    one = _init(MLP, (12,), {**base, "scale": 1.0}, inputs=x)
    four = _init(MLP, (12,), {**base, "scale": 4.0}, inputs=x)
    for a, b in zip(one.parameters(), four.parameters(), strict=True):
        factor = 4.0 if a.dim() > 1 else 1.0
        torch.testing.assert_close(b, factor * a)
