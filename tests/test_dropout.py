"""model.dropout: seeded masks, the population equals the per-model loop, eval is deterministic."""

import torch

from zoo.naming import checkpoint_id
from zoo.nn.architectures import SeededDropout, build_model, to_module
from zoo.nn.population import forward_population
from zoo.recipe import expand_recipe
from zoo.stages.plan import plan_batches
from zoo.stages.train import train_one, train_population
from zoo.tasks import load_task

from .conftest import tiny_recipe

TRAIN = {"optimizer": "sgd", "momentum": 0.9, "batch_size": 32, "epochs": 2}


def _max_diff(batch, result, task=None, dtype=torch.float64):
    worst = 0.0
    for run in batch.runs:
        for ckpt, state in train_one(run, task=task, dtype=dtype).items():
            flat = torch.cat([v.reshape(-1) for v in state.values()])
            worst = max(worst, (flat - result.weights[ckpt]).abs().max())
    return float(worst)


def test_dropout_layers_follow_the_activations_and_add_no_parameters():
    cfg = {"arch": "cnn_s", "activation": "relu"}
    plain, lay = build_model(cfg, (1, 28, 28), 10)
    dropped, lay_d = build_model({**cfg, "dropout": 0.5}, (1, 28, 28), 10)
    names = [n for n, m in dropped.named_children() if isinstance(m, SeededDropout)]
    assert names == ["drop1", "drop2", "drop4"]  # as in the ModelZooDataset's CNN-s
    assert lay.names == lay_d.names and lay.shapes == lay_d.shapes


def test_population_with_mixed_dropout_rates_equals_per_model_loop_mlp():
    model = {"arch": "mlp", "width": 8, "depth": 2, "activation": "tanh"}
    recipe = tiny_recipe(model=model, train=TRAIN, grid={"model.dropout": [0.0, 0.3, 0.6]})
    (batch,) = plan_batches(expand_recipe(recipe), 64)  # the rate is per model: one population
    result = train_population(batch, chunk_size=4, dtype=torch.float64)
    assert len(batch.runs) == 6 and _max_diff(batch, result) < 1e-12


def test_population_with_dropout_equals_per_model_loop_cnn(image_task):
    model = {"arch": "cnn_s", "activation": "relu"}
    grid = {"model.dropout": [0.2, 0.5]}
    recipe = tiny_recipe(model=model, train={**TRAIN, "batch_size": 16}, grid=grid)
    (batch,) = plan_batches(expand_recipe(recipe), 64)
    result = train_population(batch, task=image_task)
    assert _max_diff(batch, result, task=image_task, dtype=torch.float32) < 1e-4


def test_dropout_changes_training_but_not_evaluation():
    model = {"arch": "mlp", "width": 16, "depth": 1, "activation": "relu"}
    runs = {}
    for p in (None, 0.5):
        cfg = model if p is None else {**model, "dropout": p}
        (batch,) = plan_batches(expand_recipe(tiny_recipe(model=cfg, train=TRAIN, seeds=1)), 64)
        runs[p] = (batch, train_population(batch))
    (batch0, res0), (batch5, res5) = runs[None], runs[0.5]
    w0 = res0.weights[checkpoint_id(batch0.runs[0].run_id, 0)]
    w5 = res5.weights[checkpoint_id(batch5.runs[0].run_id, 0)]
    assert torch.equal(w0, w5)  # same seed, same init
    end0 = res0.weights[checkpoint_id(batch0.runs[0].run_id, 2)]
    end5 = res5.weights[checkpoint_id(batch5.runs[0].run_id, 2)]
    assert not torch.allclose(end0, end5)  # dropout masks changed the updates
    # evaluation has no dropout: to_module (eval mode) reproduces the recorded accuracy
    module, layout = build_model({**model, "dropout": 0.5}, (1, 8, 8), 10)
    net = to_module(end5, layout)
    task = load_task(batch5.runs[0].task)
    with torch.no_grad():
        acc = (net(task.x_test).argmax(1) == task.y_test).double().mean().item()
        params = {n: p.unsqueeze(0) for n, p in net.state_dict().items()}
        logits = forward_population(module, params, task.x_test.unsqueeze(0))[0]
    row = next(r for r in res5.rows if r["epoch"] == 2 and r["run_id"] == batch5.runs[0].run_id)
    assert acc == row["test_acc"]
    torch.testing.assert_close(logits, net(task.x_test))


def test_runs_that_differ_in_dropout_share_one_layout():
    cfg = {"arch": "cnn_small", "width": 4, "activation": "relu"}
    layouts = [
        build_model({**cfg, **extra}, (1, 8, 8), 10)[1]
        for extra in ({}, {"dropout": 0.0}, {"dropout": 0.6})
    ]
    assert layouts[0] == layouts[1] == layouts[2]  # one dataset config, not one per rate
