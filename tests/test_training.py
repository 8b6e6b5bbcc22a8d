import math

import datasets
import pytest
import torch

import zoo
from zoo.errors import TrainingError
from zoo.naming import checkpoint_id
from zoo.nn.architectures import build_model
from zoo.nn.inits import INITS, init_module
from zoo.recipe import expand_recipe, recipe_from_dict
from zoo.stages.plan import plan_batches
from zoo.stages.train import PopulationTrainer, result_table, train_one, train_population
from zoo.tasks import load_task

from .conftest import tiny_recipe

MIXED_SGD = {
    "train.lr": [0.02, 0.2],
    "train.weight_decay": [0.0, 0.01],
    "train.momentum": [0.0, 0.9],
}


def _max_diff(batch, result, task=None, dtype=torch.float64):
    worst = 0.0
    for run in batch.runs:
        for ckpt, state in train_one(run, task=task, dtype=dtype).items():
            flat = torch.cat([v.reshape(-1) for v in state.values()])
            got = result.weights[ckpt]
            worst = max(worst, (flat - got).abs().max().item())
    return worst


@pytest.mark.parametrize(
    ("train", "grid"),
    [
        ({"optimizer": "sgd", "batch_size": 32, "epochs": 3}, MIXED_SGD),
        (
            {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "batch_size": 50, "epochs": 2},
            {"train.lr": [0.01, 0.1]},
        ),
        (
            {"optimizer": "adam", "weight_decay": 0.01, "batch_size": 32, "epochs": 2},
            {"train.lr": [0.001, 0.01], "train.betas": [[0.9, 0.999], [0.8, 0.99]]},
        ),
        (
            {"optimizer": "adamw", "weight_decay": 0.1, "batch_size": 64, "epochs": 2},
            {"train.lr": [0.003, 0.03]},
        ),
    ],
    ids=["sgd-mixed-hparams", "sgd-nesterov", "adam", "adamw"],
)
def test_population_equals_per_model_loop_float64(train, grid):
    recipe = tiny_recipe(train=train, grid=grid, execution={"population_size": 64})
    (batch,) = plan_batches(expand_recipe(recipe), 64)
    result = train_population(batch, chunk_size=3, dtype=torch.float64)
    assert len(batch.runs) >= 4
    assert _max_diff(batch, result) < 1e-12


def test_population_equals_per_model_loop_float32_cnn(image_task):
    recipe = tiny_recipe(
        model={"arch": "cnn_s", "activation": "relu"},
        train={"optimizer": "sgd", "momentum": 0.9, "batch_size": 16, "epochs": 2},
    )
    (batch,) = plan_batches(expand_recipe(recipe), 64)
    result = train_population(batch, task=image_task)
    assert _max_diff(batch, result, task=image_task, dtype=torch.float32) < 1e-4
    # CNN-s trains: the loss at the last checkpoint is below the loss at init
    rows = {(r["run_id"], r["epoch"]): r for r in result.rows}
    run = batch.runs[0].run_id
    assert rows[(run, 2)]["train_loss"] < rows[(run, 0)]["train_loss"]


def test_diverged_model_is_frozen_and_recorded_while_others_go_on():
    model = {"arch": "mlp", "width": 8, "depth": 1, "activation": "relu"}
    recipe = tiny_recipe(model=model, grid={"train.lr": [0.05, 1e30]}, seeds=1)
    (batch,) = plan_batches(expand_recipe(recipe), 64)
    result = train_population(batch)  # float32: the huge step overflows
    rows = {(r["run_id"], r["epoch"]): r for r in result.rows}
    good, bad = batch.runs
    assert rows[(bad.run_id, 2)]["status"] == "diverged"
    assert rows[(bad.run_id, 2)]["diverged_epoch"] in (1, 2)
    assert rows[(bad.run_id, 0)]["status"] == "ok"  # the init was fine
    assert rows[(good.run_id, 2)]["status"] == "ok"
    assert math.isfinite(rows[(good.run_id, 2)]["train_loss"])
    solo = train_one(good)[checkpoint_id(good.run_id, 2)]
    flat = torch.cat([v.reshape(-1) for v in solo.values()])
    assert torch.allclose(flat, result.weights[checkpoint_id(good.run_id, 2)], atol=1e-5)
    # frozen: from the step its loss turned non-finite, its weights no longer move
    w1 = result.weights[checkpoint_id(bad.run_id, 1)]
    w2 = result.weights[checkpoint_id(bad.run_id, 2)]
    assert rows[(bad.run_id, 1)]["diverged_epoch"] == 1
    assert torch.allclose(w1, w2, equal_nan=True)


def test_plan_batches_groups_by_shape_and_respects_size():
    recipe = tiny_recipe(grid={"model.width": [4, 8], "train.lr": [0.1, 0.2]}, seeds=3)
    runs = expand_recipe(recipe)
    batches = plan_batches(runs, 4)
    assert [len(b.runs) for b in batches] == [4, 2, 4, 2]
    assert all(len({r.model["width"] for r in b.runs}) == 1 for b in batches)
    assert [b.batch_id for b in plan_batches(runs, 4)] == [b.batch_id for b in batches]


def test_checkpoint_rows_hold_metrics_and_weights():
    (batch, *_) = plan_batches(expand_recipe(tiny_recipe()), 2)
    trainer = PopulationTrainer(batch)
    result = trainer.run()
    assert len(result.rows) == 2 * 3 and len(result.weights) == 6
    for row in result.rows:
        assert 0.0 <= row["train_acc"] <= 1.0 and row["train_loss"] > 0
        assert result.weights[row["checkpoint_id"]].shape == (trainer.layout.num_params,)
    assert [r["step"] for r in result.rows[::2]] == [0, 8, 16]  # 256 examples / 32 per step


@pytest.mark.parametrize("scheme", sorted(INITS))
def test_inits_are_seeded_and_scaled(scheme):
    cfg = {"arch": "mlp", "width": 64, "depth": 1, "activation": "tanh"}

    def draw(seed, scale):
        module, _ = build_model(cfg, (64,), 10)
        init_module(
            module,
            {"scheme": scheme, "scale": scale, "bias": "zeros"},
            "tanh",
            torch.Generator().manual_seed(seed),
        )
        return module.fc1.weight.detach().clone(), module.fc1.bias.detach().clone()

    w, b = draw(0, 1.0)
    assert torch.equal(w, draw(0, 1.0)[0]) and not torch.equal(w, draw(1, 1.0)[0])
    torch.testing.assert_close(draw(0, 3.0)[0], 3 * w)
    assert torch.count_nonzero(b) == 0
    if scheme == "orthogonal":
        gain = 5 / 3  # tanh
        torch.testing.assert_close(w @ w.T, gain**2 * torch.eye(64), atol=1e-4, rtol=0)


def test_mid_epoch_step_checkpoints_equal_the_per_model_loop(tmp_path):
    """8 steps per epoch: step 3 is mid-epoch 1, step 8 ends epoch 1 (not a saved epoch), step
    16 ends saved epoch 2 and is saved once, as the epoch."""
    recipe = tiny_recipe(tmp_path, checkpoints={"epochs": [0, 2], "steps": [3, 8, 16]})
    (batch,) = plan_batches(expand_recipe(recipe), 8)
    result = train_population(batch, dtype=torch.float64)
    assert _max_diff(batch, result) < 1e-12
    run = batch.runs[0]
    rows = {r["checkpoint_id"]: r for r in result.rows if r["run_id"] == run.run_id}
    assert sorted((r["epoch"], r["step"]) for r in rows.values()) == [
        (0, 0),
        (0, 3),
        (1, 8),
        (2, 16),
    ]
    assert f"{run.run_id}-s0000003" in rows and f"{run.run_id}-e0002" in rows
    ds = datasets.load_dataset(str(zoo.run(recipe)))
    steps = sorted(s for split in ds.values() for s in split["step"])
    assert steps == [0, 0, 0, 0, 3, 3, 3, 3, 8, 8, 8, 8, 16, 16, 16, 16]
    late = tiny_recipe(tmp_path / "late", checkpoints={"epochs": [0, 1], "steps": [9]})
    with pytest.raises(TrainingError, match=r"checkpoints.steps \[9\] lie past step 8"):
        zoo.plan(late)


# --- signal tasks (issue 14): each model its own target, one shared input ---------------------

SIGNAL = {
    "schema_version": 1,
    "name": "sig",
    "task": {"name": "inr_image", "source": "digits"},
    "model": {"arch": "siren", "width": 8, "depth": 2, "w0": 30.0},
    "init": {"scheme": "siren", "bias": "uniform"},
    "grid": {"task.index": {"range": [0, 5]}},
    "seeds": 2,
    "checkpoints": {"epochs": [0, 1, 3]},
}


@pytest.mark.parametrize(
    ("model", "train", "task"),
    [
        ({}, {"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 3}, {}),
        ({}, {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "batch_size": 24, "epochs": 3}, {}),
        (
            {"arch": "fourier_mlp", "width": 8, "depth": 2, "frequencies": 3},
            {"optimizer": "adamw", "lr": 1e-2, "batch_size": 64, "epochs": 3},
            {},
        ),
        ({}, {"optimizer": "adam", "lr": 1e-3, "batch_size": 40, "epochs": 3}, {"holdout": 0.2}),
    ],
    ids=["siren-full-batch-adam", "siren-minibatch-sgd", "fourier-adamw", "siren-holdout"],
)
def test_signal_population_equals_per_model_loop_float64(model, train, task):
    """Each model fits its own image: targets (M, B, C) gathered by each model's own minibatch
    indices (full batch: the grid in order, one shared input), equal to train_one per run."""
    data = {**SIGNAL, "train": train}
    data["task"] = {**SIGNAL["task"], **task}
    data["model"] = model or SIGNAL["model"]
    if model:
        data["init"] = {"scheme": "kaiming_uniform", "bias": "uniform"}
    (batch,) = plan_batches(expand_recipe(recipe_from_dict(data)), 64)
    assert len(batch.runs) == 10  # 5 images x 2 views: one population
    result = train_population(batch, chunk_size=3, dtype=torch.float64)
    assert _max_diff(batch, result) < 1e-12
    rows = {(r["run_id"], r["epoch"]): r for r in result.rows}
    for run in batch.runs:
        first, last = rows[(run.run_id, 0)], rows[(run.run_id, 3)]
        assert last["train_loss"] < first["train_loss"]  # every model fits its own image
        assert last["train_psnr"] == pytest.approx(10 * math.log10(4 / last["train_loss"]))
        assert last["label"] == load_task(run.task).signal.columns["label"]


def test_signal_population_float32_is_close_and_rows_carry_the_signal():
    data = {**SIGNAL, "train": {"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 3}}
    (batch,) = plan_batches(expand_recipe(recipe_from_dict(data)), 64)
    result = train_population(batch)
    assert _max_diff(batch, result, dtype=torch.float32) < 1e-4
    row = result.rows[-1]
    assert {"image_index", "label", "train_psnr", "test_psnr"} <= set(row)
    assert "train_acc" not in row
    table = result_table(batch, result)
    assert table.schema.field("label").type == "int64"
    assert table.schema.field("train_psnr").type == "double"
