"""The study stage (issue 16): fine-tunes as populations equal the per-model loop, pruning and
averaging against ground truth, and `zoo study` end to end: resumable, published as configs,
shown in the card with a figure, summarized per phase."""

import math

import datasets
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import zoo
from zoo.cli import app
from zoo.dist.options import ExecOptions
from zoo.dist.pipeline import study
from zoo.errors import StudyError
from zoo.layout import permute_rows, weight_matrices
from zoo.nn.architectures import build_model
from zoo.recipe import expand_recipe
from zoo.stages.study import StudyBatch, StudyContext, plan_study
from zoo.stages.study.averaging import run_averaging
from zoo.stages.study.effects import PhaseEffect, f_statistic, phase_effect
from zoo.stages.study.finetune import Budget, finetune, study_order
from zoo.stages.study.plan import transfer_task
from zoo.stages.study.pruning import prune_masks
from zoo.stages.study.transfer import run_transfer
from zoo.tasks import load_task

from .conftest import tiny_recipe

TASK = {
    "name": "teacher_student",
    "input_dim": 8,
    "teacher_hidden": 8,
    "n_classes": 3,
    "n_train": 192,
    "n_test": 96,
}
MODEL = {"arch": "mlp", "width": 8, "depth": 1, "activation": "tanh"}
LANDSCAPE = {
    "metrics": ["hessian", "cka", "barrier", "phase"],
    "barrier": {"aligned": True},
    "probe": {"batches": 1, "batch_size": 64},
    "hessian": {"iterations": 8, "trace_probes": 4},
}
STUDIES = {
    "pruning": {"sparsities": [0.5, 0.9], "epochs": 1},
    "transfer": {"epochs": 1, "batch_size": 32},
}


def _recipe(tmp_path, **kw):
    sections = {
        "task": TASK,
        "model": MODEL,
        "landscape": LANDSCAPE,
        "studies": STUDIES,
        "grid": {"train.lr": [0.05, 0.3]},
        "seeds": 2,
        "execution": {"workers": 0, "population_size": 8},
        **kw,
    }
    return tiny_recipe(tmp_path, **sections)


# --- the fine-tune engine against a per-model torch loop ------------------------------------------


def _reference(module, layout, start, task, seed, budget, key, trainable=None, mask=None):
    """One model with nn.Module + torch.optim.SGD, the same data order."""
    from zoo.layout import unflatten

    net = build_model(MODEL, task.input_shape, task.n_classes)[0]
    net.load_state_dict({n: v.clone() for n, v in unflatten(start, layout).items()})
    params = [p for n, p in net.named_parameters() if trainable is None or n in trainable]
    opt = torch.optim.SGD(params, lr=budget.lr, momentum=budget.momentum)
    keep = unflatten(mask.float(), layout) if mask is not None else None
    n, bs = len(task.x_train), budget.batch_size
    for epoch in range(1, budget.epochs + 1):
        order = study_order(seed, key, epoch, n)
        for s in range(math.ceil(n / bs)):
            idx = order[s * bs : (s + 1) * bs]
            loss = torch.nn.functional.cross_entropy(net(task.x_train[idx]), task.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if keep is not None:
                with torch.no_grad():
                    for name, p in net.named_parameters():
                        p.mul_(keep[name])
    return torch.cat([v.reshape(-1) for v in net.state_dict().values()])


@pytest.mark.parametrize("variant", ["full", "probe", "masked"])
def test_population_finetune_equals_the_per_model_loop(variant):
    task = load_task(TASK)
    module, layout = build_model(MODEL, task.input_shape, task.n_classes)
    start = torch.randn(5, layout.num_params, generator=torch.Generator().manual_seed(0)) * 0.5
    seeds, budget = [3, 1, 4, 1, 5], Budget(epochs=2, lr=0.1, momentum=0.9, batch_size=32)
    trainable = tuple(layout.names[-2:]) if variant == "probe" else None
    masks = prune_masks(start, layout, 0.6) if variant == "masked" else None
    got = finetune(
        module, layout, start, task, seeds, budget, 7, trainable=trainable, masks=masks, chunk=2
    )
    for i, seed in enumerate(seeds):
        want = _reference(
            module,
            layout,
            start[i],
            task,
            seed,
            budget,
            7,
            trainable,
            None if masks is None else masks[i],
        )
        torch.testing.assert_close(got[i], want, atol=2e-5, rtol=1e-4)
    if variant == "probe":  # the hidden layer did not move
        hidden = layout.offsets[2]
        assert torch.equal(got[:, :hidden], start[:, :hidden])
    if variant == "masked":  # pruned weights stay zero
        assert bool((got[~masks] == 0).all()) and bool((got[masks] != 0).any())


def test_prune_masks_drop_the_smallest_weight_matrix_entries_over_all_layers():
    _, layout = build_model({**MODEL, "depth": 2}, (8,), 3)
    flat = torch.randn(3, layout.num_params, generator=torch.Generator().manual_seed(1))
    keep = prune_masks(flat, layout, 0.7)
    matrix = torch.zeros(layout.num_params, dtype=torch.bool)
    for name in weight_matrices(layout):
        i = layout.names.index(name)
        matrix[layout.offsets[i] : layout.offsets[i] + math.prod(layout.shapes[i])] = True
    for row, k in zip(flat, keep, strict=True):
        assert bool(k[~matrix].all())  # biases are kept
        magnitudes = row[matrix].abs()
        dropped = magnitudes[~k[matrix]]
        assert len(dropped) == round(0.7 * int(matrix.sum()))
        assert float(dropped.max()) <= float(magnitudes[k[matrix]].min())  # one global threshold


def test_averaging_permuted_copies_gives_back_the_model_only_when_aligned(tmp_path):
    recipe = _recipe(tmp_path, grid={"train.lr": [0.3]}, seeds=3)
    zoo.train(recipe, ExecOptions(workers=0))
    (batch,) = plan_study(recipe, "averaging")
    ctx = StudyContext.load(batch, str(tmp_path))
    first = ctx.weights[f"{batch.runs[0].run_id}-e0002"]
    gen = torch.Generator().manual_seed(0)
    for k, run in enumerate(batch.runs):  # every seed: a permuted copy of the first
        perm = (
            {"P0": torch.randperm(8, generator=gen)[None]} if k else {"P0": torch.arange(8)[None]}
        )
        ctx.weights[f"{run.run_id}-e0002"] = permute_rows(first[None], ctx.layout, perm)[0]
    (row,) = run_averaging(ctx).to_pylist()
    assert row["seeds"] == 3 and row["endpoint_acc_std"] == 0
    assert row["avg_aligned_acc"] == pytest.approx(row["endpoint_acc"], abs=1e-9)
    assert row["avg_aligned_loss"] == pytest.approx(row["endpoint_loss"], rel=1e-5)
    assert row["avg_loss"] > row["endpoint_loss"]  # unaligned: a different, worse function


def test_transfer_from_the_initialization_is_training_from_scratch(tmp_path):
    recipe = _recipe(tmp_path, studies={**STUDIES, "at": [0, 2]})
    zoo.train(recipe, ExecOptions(workers=0))
    (batch,) = plan_study(recipe, "transfer")
    assert batch.settings["task"]["teacher_seed"] == 1  # default: another teacher
    rows = run_transfer(StudyContext.load(batch, str(tmp_path))).to_pylist()
    assert len(rows) == 8
    for row in rows:
        assert 0 <= row["probe_acc"] <= 1 and 0 <= row["full_acc"] <= 1
        if row["epoch"] == 0:  # the epoch-0 checkpoint is the initialization: the same start
            assert row["full_gain"] == 0 and row["probe_gain"] == 0


def test_second_task_errors_name_the_key_and_the_fix():
    with pytest.raises(StudyError, match=r"studies.transfer.task is not set.*teacher_student"):
        transfer_task({"name": "digits"}, None)
    assert transfer_task({"name": "digits", "split_seed": 0}, {"split_seed": 1})["split_seed"] == 1
    with pytest.raises(StudyError, match="unknown study 'merging'; allowed: averaging"):
        plan_study(tiny_recipe(), "merging")
    with pytest.raises(StudyError, match=r"studies.at: \[7\] are not checkpoint epochs"):
        plan_study(tiny_recipe(studies={"at": [7]}), "pruning")


def test_study_batch_and_effect_round_trip():
    batch = plan_study(tiny_recipe(), "pruning")[0]
    assert StudyBatch.from_dict(batch.to_dict()) == batch
    effect = PhaseEffect("gain", 3, {"III": (2, 0.1, 0.01)}, 2.0, 0.5, 0.3, 99)
    assert PhaseEffect.from_dict(effect.to_dict()) == effect
    assert Budget.from_dict(Budget(1, 0.1, 0.0, 8).to_dict()) == Budget(1, 0.1, 0.0, 8)


def test_permutation_test_tells_different_phases_from_the_same():
    rng = np.random.default_rng(0)
    phases = ["I", "III", "IV-B"] * 8
    same = [
        {"cell_id": f"c{i}", "epoch": 1, "phase": p, "gain": float(rng.normal())}
        for i, p in enumerate(phases)
    ]
    apart = [
        {**r, "gain": r["gain"] * 0.1 + {"I": 0, "III": 1, "IV-B": 2}[r["phase"]]} for r in same
    ]
    assert phase_effect(apart, "gain", permutations=999).p_value == pytest.approx(1 / 1000)
    assert phase_effect(same, "gain", permutations=999).p_value > 0.05
    values = np.array([r["gain"] for r in apart])
    groups = np.array([["I", "III", "IV-B"].index(p) for p in phases])
    f, eta2 = f_statistic(values, groups)
    assert eta2 > 0.95 and f > 100


def test_zoo_study_publishes_each_study_as_a_config_and_resumes(tmp_path):
    recipe = _recipe(tmp_path)
    zoo.run(recipe)
    runner = CliRunner()
    for kind in ("averaging", "pruning", "transfer"):
        result = runner.invoke(app, ["study", str(tmp_path), kind, "--workers", "0", "--quiet"])
        assert result.exit_code == 0, result.output
    again = study(recipe, "pruning", ExecOptions(workers=0))
    assert again.skipped and not again.done  # resumable: the manifest holds it
    folder = tmp_path / "dataset"
    averaging = datasets.load_dataset(str(folder), "study_averaging", split="train")
    assert len(averaging) == 2 and set(averaging["phase"]) <= {"I", "II", "III", "IV-A", "IV-B"}
    assert averaging[0]["train__lr"] in (0.05, 0.3) and averaging[0]["seeds"] == 2
    pruning = datasets.load_dataset(str(folder), "study_pruning", split="train")
    assert len(pruning) == 4 * 3 and sorted(set(pruning["sparsity"])) == [0.0, 0.5, 0.9]
    transfer = datasets.load_dataset(str(folder), "study_transfer", split="train")
    assert len(transfer) == 4 and transfer.features["full_gain"].dtype == "float64"
    card = (folder / "README.md").read_text()
    assert "## Studies" in card and "### transfer (`study_transfer`, 4 rows)" in card
    assert "](images/studies/study_pruning.png)" in card
    assert (folder / "images" / "studies" / "study_averaging.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Phase coverage" in card and "of 5 phases covered" in card
    weights = datasets.load_dataset(str(folder), "mlp_d1_w8")
    assert sum(len(s) for s in weights.values()) == 4 * 3  # the weights config is unchanged
    result = runner.invoke(app, ["inspect", str(tmp_path)], env={"COLUMNS": "200"})
    assert "of 5 phases covered" in result.output, result.output


def test_a_study_with_other_settings_is_recomputed_and_the_old_one_not_published(tmp_path):
    recipe = _recipe(tmp_path)
    zoo.train(recipe, ExecOptions(workers=0))
    first = study(recipe, "pruning", ExecOptions(workers=0))
    changed = _recipe(tmp_path, studies={**STUDIES, "pruning": {"sparsities": [0.8]}})
    assert {b.batch_id for b in plan_study(changed, "pruning")}.isdisjoint(first.done)
    assert len(expand_recipe(changed)) == 4
