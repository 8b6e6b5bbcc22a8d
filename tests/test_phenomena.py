"""Known effects, checked in direction on tiny versions of two shipped recipes (seconds each).

These train our own population trainer from the recipe files, so a change that breaks the
physics of a recipe (an init scale not applied, weight decay not decoupled, a wrong split)
shows up here, not only in a published zoo.
"""

from pathlib import Path

import yaml

from zoo.naming import checkpoint_id
from zoo.recipe import expand_recipe, recipe_from_dict
from zoo.stages.plan import plan_batches
from zoo.stages.train import train_population

PIPELINES = Path(__file__).parent.parent / "pipelines"


def _tiny(name: str, **sections) -> dict:
    """The recipe file's data with some sections replaced."""
    data = yaml.safe_load((PIPELINES / name).read_text())
    data.update(sections)
    data.pop("landscape", None)
    return data


def _train(data: dict):
    runs = expand_recipe(recipe_from_dict(data))
    out = {}
    for batch in plan_batches(runs, 64):
        result = train_population(batch)
        rows = {(r["run_id"], r["epoch"]): r for r in result.rows}
        out.update({run.run_id: (run, result, rows) for run in batch.runs})
    return out


def test_lazy_rich_relative_weight_change_shrinks_as_alpha_grows():
    # Chizat et al. 2019, Woodworth et al. 2020: scaling the init by α moves training from the
    # rich regime (weights travel far from w_0) to the lazy one (||w_T - w_0|| / ||w_0|| → 0)
    data = _tiny(
        "teacher_mlp_alpha_width.yaml",
        grid={"init.scale": [0.25, 1.0, 4.0]},
        seeds=2,
        checkpoints={"epochs": [0, 10]},
    )
    data["task"].update(n_train=512, n_test=256)
    data["train"].update(epochs=10)
    data["model"].update(width=64)
    change = {}
    for run, result, _ in _train(data).values():
        w0 = result.weights[checkpoint_id(run.run_id, 0)]
        w1 = result.weights[checkpoint_id(run.run_id, 10)]
        change.setdefault(run.init["scale"], []).append(float((w1 - w0).norm() / w0.norm()))
    mean = [sum(v) / len(v) for _, v in sorted(change.items())]
    assert mean[0] > 2 * mean[1] > 2 * mean[2] > 0, mean


def test_grokking_test_accuracy_rises_long_after_train_accuracy_saturates():
    # Power et al. 2022: with weight decay, test accuracy on unseen pairs rises long after the
    # training pairs are memorized; without it, it stays near chance
    data = _tiny(
        "modular_mlp_weight_decay.yaml",
        grid={"train.weight_decay": [0.0, 3.0]},
        seeds=1,
        checkpoints={"log": {"count": 12}},
    )
    data["train"].update(epochs=800)
    final = {}
    for run, _, rows in _train(data).values():
        curve = [rows[(run.run_id, e)] for e in run.checkpoints]
        final[run.train["weight_decay"]] = curve[-1]["test_acc"]
        if run.train["weight_decay"] > 0:
            saturated = next(r for r in curve if r["train_acc"] == 1.0)
            assert curve[-1]["epoch"] >= 10 * saturated["epoch"]  # "long after"
            assert saturated["test_acc"] < 0.05  # memorized, not generalized
            assert curve[-1]["test_acc"] > saturated["test_acc"] + 0.15
            assert curve[-1]["train_acc"] == 1.0
    chance = 1 / 23
    assert final[0.0] < chance < final[3.0], final


def test_transformers_grok_with_weight_decay_long_after_memorizing():
    # Power et al. 2022, Nanda et al. 2023: a one-layer transformer on `a + b =` (mod 23)
    # memorizes its training pairs early; with weight decay its accuracy on unseen pairs rises
    # long after that, without it the net stays a memorizer
    data = _tiny(
        "modular_tokens_transformer_weight_decay.yaml",
        grid={"train.weight_decay": [0.0, 2.0]},
        seeds=1,
        checkpoints={"every": 50},
    )
    data["train"].update(epochs=1000)
    curves = {}
    for run, _, rows in _train(data).values():
        curves[run.train["weight_decay"]] = [rows[(run.run_id, e)] for e in run.checkpoints]
    for wd, curve in curves.items():
        memorized = next(r for r in curve if r["train_acc"] >= 0.99)
        assert memorized["epoch"] <= 200 and memorized["test_acc"] < 0.6, (wd, memorized)
        later = [r["test_acc"] for r in curve if r["epoch"] > memorized["epoch"]]
        if wd == 0.0:  # a memorizer: no better on unseen pairs than when it memorized
            assert max(later) < memorized["test_acc"] + 0.1, later
        else:
            grokked = next(r for r in curve if r["test_acc"] >= 0.9)
            assert grokked["epoch"] >= 3 * memorized["epoch"], (memorized, grokked)
