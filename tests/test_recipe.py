from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml

from zoo.errors import RecipeError
from zoo.recipe import RunConfig, expand_recipe, load_recipe, recipe_from_dict, recipe_schema
from zoo.stages.plan import plan_batches

from .conftest import tiny_recipe

PIPELINES = sorted(Path(__file__).parent.parent.joinpath("pipelines").rglob("*.yaml"))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_pipeline_validates_and_plans(path):
    recipe = load_recipe(path)
    jsonschema.Draft202012Validator(recipe_schema()).validate(recipe.data)
    runs = expand_recipe(recipe)
    assert len(runs) == len({r.run_id for r in runs})  # ids are unique
    batches = plan_batches(runs, recipe.execution["population_size"])
    assert sorted(r.run_id for b in batches for r in b.runs) == sorted(r.run_id for r in runs)
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any(line.startswith("# Run:") for line in header)
    assert any(line.startswith("# Expect:") for line in header)


@pytest.mark.parametrize(
    "path", [p for p in PIPELINES if "\nscale:" in p.read_text()], ids=lambda p: p.name
)
def test_scaled_pipeline_validates_and_grows(path):
    small, big = load_recipe(path), load_recipe(path, scale=True)
    assert big.out_dir == Path(f"{small.out_dir}-scaled")
    assert len(expand_recipe(big)) >= len(expand_recipe(small))
    assert any(
        line.startswith("# Scale:") and "--scale" in line for line in path.read_text().splitlines()
    )


def test_scale_sets_keys_replaces_sections_and_is_explained_when_missing(tmp_path):
    path = tmp_path / "r.yaml"
    data = {
        "schema_version": 1,
        "task": {"name": "digits"},
        "model": {"arch": "mlp"},
        "grid": {"train.lr": [0.1, 0.2]},
        "output": {"dir": str(tmp_path / "z")},
        "scale": {"train.epochs": 7, "grid": {"model.width": [4, 8, 16]}},
    }
    path.write_text(yaml.safe_dump(data))
    big = load_recipe(path, ["seeds=2"], scale=True)
    assert big.resolved["train"]["epochs"] == 7 and big.resolved["seeds"] == 2
    assert big.resolved["grid"] == {"model.width": [4, 8, 16]}  # train.lr gone: replaced
    assert big.out_dir == tmp_path / "z-scaled" and len(expand_recipe(big)) == 6
    path.write_text(yaml.safe_dump({**data, "name": "r", "output": None}))  # `output:` empty
    assert load_recipe(path, scale=True).out_dir == Path("out/r-scaled")
    del data["scale"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match="--scale: the recipe has no `scale:` section"):
        load_recipe(path, scale=True)


def test_pipeline_list_is_not_empty():
    names = {p.name for p in PIPELINES}
    assert {
        "quickstart.yaml",
        "fashion_cnn_s_init_lr.yaml",
        "teacher_mlp_width_batch.yaml",
    } <= names


def test_expand_is_grid_times_seeds_with_defaults():
    runs = expand_recipe(tiny_recipe())
    assert len(runs) == 4
    assert [r.train["lr"] for r in runs] == [0.05, 0.05, 0.1, 0.1]
    assert [r.seed for r in runs] == [0, 1, 0, 1]
    assert runs[0].init == {"scheme": "kaiming_uniform", "scale": 1.0, "bias": "zeros"}
    assert runs[0].train["nesterov"] is False and "betas" not in runs[0].train
    assert runs[0].cell_id == runs[1].cell_id != runs[2].cell_id


def test_adding_checkpoint_epochs_keeps_the_runs():
    grown = tiny_recipe(checkpoints={"epochs": [0, 1, 2], "steps": [3]})
    assert [r.run_id for r in expand_recipe(grown)] == GOLDEN_IDS


def test_run_ids_are_pinned():
    # golden ids: a change here changes every published zoo's ids — bump schema_version instead
    ids = [r.run_id for r in expand_recipe(tiny_recipe())]
    assert ids == GOLDEN_IDS


# schema 2 (issue 13): the checkpoint schedule is no longer part of a run's identity
GOLDEN_IDS = ["1a2ba7532d756dca", "cd43aefeb715e6b6", "8ba8d253ae10f458", "37d3bfdc5fbc6258"]


def test_run_config_round_trip():
    run = expand_recipe(tiny_recipe())[0]
    assert RunConfig.from_dict(run.to_dict()) == run


def test_grid_drops_keys_that_do_not_apply():
    recipe = tiny_recipe(grid={"train.optimizer": ["sgd", "adam"]})
    sgd, _, adam, _ = expand_recipe(recipe)
    assert sgd.train["momentum"] == 0.9
    assert "momentum" not in adam.train and adam.train["betas"] == [0.9, 0.999]


def test_bad_recipe_reports_every_problem_with_path_and_allowed_values():
    data = {
        "schema_version": 1,
        "task": {"name": "digitz"},
        "model": {"arch": "mlp", "wdth": 3},
        "train": {"epochs": "ten"},
    }
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(data, source="bad.yaml")
    text = str(info.value)
    assert text.startswith("bad.yaml: 3 problems")
    assert "task.name: 'digitz' is not allowed; allowed values: ['digits', 'fashion_mnist'" in text
    assert "model: unknown key(s) ['wdth']; allowed keys: ['activation', 'arch', 'depth'" in text
    assert "train.epochs: expected integer, got 'ten'" in text


def test_inapplicable_key_and_bad_grid_value_are_named():
    with pytest.raises(RecipeError) as info:
        tiny_recipe(
            train={"optimizer": "adam", "momentum": 0.9, "epochs": 2},
            grid={"train.lr": [0.1, -1.0], "model.foo": [1]},
            checkpoints={"epochs": [0, 5]},
        )
    problems = info.value.problems
    assert any(
        p.startswith("train.momentum: does not apply to train.optimizer 'adam'") for p in problems
    )
    assert any(
        p.startswith("grid.train.lr[1]: -1.0 is less than or equal to the minimum")
        for p in problems
    )
    assert any(p.startswith("grid.model.foo: model has no key 'foo'") for p in problems)
    assert any(p.startswith("checkpoints.epochs: [5] exceed train.epochs (2)") for p in problems)


def test_grid_key_that_is_not_a_path_is_explained():
    with pytest.raises(RecipeError, match="grid: key 'lr' is not a dotted path into task, model"):
        tiny_recipe(grid={"lr": [0.1]})


def test_overrides_and_yaml_errors(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe().data))
    recipe = load_recipe(path, ["train.epochs=5", "seeds=3"])
    assert recipe.resolved["train"]["epochs"] == 5 and len(expand_recipe(recipe)) == 6
    with pytest.raises(RecipeError, match="not of the form dotted.key=value"):
        load_recipe(path, ["seeds"])
    path.write_text("task: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_schema_describes_every_field():
    def walk(node, path):
        for key, prop in node.get("properties", {}).items():
            assert "description" in prop, f"{path}.{key} has no description"
            walk(prop, f"{path}.{key}")

    walk(recipe_schema(), "recipe")


# --- sampling (issue 7) ---------------------------------------------------------------------

SAMPLE = {
    "count": 5,
    "seed": 3,
    "params": {
        "train.lr": {"log_uniform": [1e-3, 1e-1]},
        "train.momentum": {"uniform": [0.0, 0.9]},
        "model.width": {"int": [4, 16]},
        "model.activation": {"choice": ["relu", "tanh"]},
    },
}


def _sampled(**sections):
    return tiny_recipe(sample=SAMPLE, grid={"train.batch_size": [16, 32]}, **sections)


def test_sample_runs_are_grid_times_count_times_seeds_with_values_in_range():
    runs = expand_recipe(_sampled())
    assert len(runs) == 2 * 5 * 2
    assert len({r.cell_id for r in runs}) == 10  # a cell = grid point x sampled point
    for run in runs:
        assert 1e-3 <= run.train["lr"] < 1e-1 and 0.0 <= run.train["momentum"] < 0.9
        assert 4 <= run.model["width"] <= 16 and run.model["activation"] in ("relu", "tanh")
        assert run.grid_point["train.lr"] == run.train["lr"]  # grid_point records the draw
        assert run.hyperparameters()["train__lr"] == run.train["lr"]  # ... and it is a column
    # the same sampled point under both batch sizes
    first = [r.train["lr"] for r in runs if r.train["batch_size"] == 16]
    assert first == [r.train["lr"] for r in runs if r.train["batch_size"] == 32]


def test_sample_is_seeded_and_a_larger_count_keeps_the_earlier_runs():
    ids = [r.run_id for r in expand_recipe(_sampled())]
    assert ids == [r.run_id for r in expand_recipe(_sampled())]
    more = expand_recipe(
        tiny_recipe(sample={**SAMPLE, "count": 8}, grid={"train.batch_size": [16]})
    )
    fewer = expand_recipe(tiny_recipe(sample=SAMPLE, grid={"train.batch_size": [16]}))
    assert [r.run_id for r in more[:10]] == [r.run_id for r in fewer]
    other = expand_recipe(tiny_recipe(sample={**SAMPLE, "seed": 4}, grid={}))
    assert {r.train["lr"] for r in other}.isdisjoint({r.train["lr"] for r in fewer})


def test_sample_values_follow_the_distributions():
    from zoo.recipe.sampling import sample_points

    spec = {"train.lr": {"log_uniform": [1e-4, 1.0]}, "model.width": {"int": [1, 4]}}
    points = sample_points({"count": 2000, "seed": 0, "params": spec})
    logs = np.log10([p["train.lr"] for p in points])
    assert abs(logs.mean() - (-2.0)) < 0.1  # uniform in log10 over [-4, 0]
    widths = np.bincount([p["model.width"] for p in points], minlength=5)[1:]
    assert widths.min() > 400  # every integer in 1..4, both ends included


def test_discrete_sample_draws_distinct_points():
    params = {"train.lr": {"choice": [0.1, 0.2]}, "train.batch_size": {"choice": [16, 32]}}
    recipe = tiny_recipe(sample={"count": 4, "params": params}, grid={}, seeds=1)
    points = {(r.train["lr"], r.train["batch_size"]) for r in expand_recipe(recipe)}
    assert len(points) == 4
    with pytest.raises(RecipeError, match="sample.count: 5 distinct points asked for, but"):
        tiny_recipe(sample={"count": 5, "params": params}, grid={})


def test_bad_samples_are_named():
    with pytest.raises(RecipeError) as info:
        tiny_recipe(
            sample={
                "count": 2,
                "params": {
                    "train.lr": {"log_uniform": [0.0, 0.1]},  # also in tiny_recipe's grid
                    "train.momentum": {"uniform": [0.5, 0.1]},
                    "model.activation": {"uniform": [0, 1]},
                    "model.wdth": {"int": [1, 2]},
                },
            }
        )
    problems = info.value.problems
    assert (
        "sample.params.train.lr: train.lr is also in grid; a key is either gridded or sampled"
        in problems
    )
    assert "sample.params.train.momentum.uniform: low 0.5 must be below high 0.1" in problems
    assert any(
        p.startswith("sample.params.model.activation.uniform: draws numbers") for p in problems
    )
    assert any(p.startswith("sample.params.model.wdth: model has no key 'wdth'") for p in problems)
    with pytest.raises(RecipeError, match=r"weight_decay: \{'normal': \[0, 1\]\} is not a distr"):
        tiny_recipe(sample={"count": 2, "params": {"train.weight_decay": {"normal": [0, 1]}}})
    with pytest.raises(RecipeError, match="sample.params: key 'lr' is not a dotted path"):
        tiny_recipe(sample={"count": 2, "params": {"lr": {"choice": [1]}}})
    with pytest.raises(RecipeError, match="log_uniform: low must be > 0 for a log-uniform"):
        tiny_recipe(sample={"count": 2, "params": {"train.momentum": {"log_uniform": [0, 0.5]}}})


# --- repeated runs and keys that never apply -----------------------------------------------------


def test_grid_points_that_resolve_to_the_same_run_are_one_run():
    grid = {"train.optimizer": ["sgd", "adam"], "train.momentum": [0.0, 0.9]}
    runs = expand_recipe(tiny_recipe(grid=grid))
    assert len(runs) == len({r.run_id for r in runs}) == 2 * 2 + 1 * 2  # adam drops momentum
    assert [r.train["optimizer"] for r in runs] == ["sgd"] * 4 + ["adam"] * 2


def test_a_varied_key_that_applies_to_no_run_is_an_error():
    with pytest.raises(RecipeError, match="init.rank: varied, but it applies only to init.scheme"):
        tiny_recipe(grid={"init.rank": [1, 2]})
    runs = expand_recipe(tiny_recipe(init={"scheme": "low_rank"}, grid={"init.rank": [1, 2]}))
    assert [r.init["rank"] for r in runs] == [1, 1, 2, 2]


# --- checkpoint schedules -------------------------------------------------------------------------


def test_checkpoint_schedules_every_log_and_union():
    def epochs(**checkpoints):
        recipe = tiny_recipe(checkpoints=checkpoints, train={"epochs": 100}, grid={}, seeds=1)
        return expand_recipe(recipe)[0].checkpoints

    assert epochs() == (0, 100)
    assert epochs(every=30) == (0, 30, 60, 90, 100)
    assert epochs(log={"count": 5}) == (0, 1, 3, 10, 32, 100)
    assert epochs(log={"count": 200}) == tuple(range(101))  # never more than train.epochs
    assert epochs(epochs=[7], every=50, log={"count": 2}) == (0, 1, 7, 50, 100)


def test_log_epochs_are_distinct_increasing_and_dense_early():
    from zoo.recipe.sampling import log_epochs

    for count, total in [(2, 2), (10, 12), (25, 3000), (7, 7)]:
        out = log_epochs(count, total)
        assert len(out) == min(count, total) and out[0] == 1 and out[-1] == total
        assert (np.diff(out) > 0).all()
    gaps = np.diff(log_epochs(25, 3000))
    assert gaps[0] == 1 and gaps[-1] > 100


def test_schedules_keep_old_run_ids():
    # an epochs list and the same list written as every: k resolve to one run id
    listed = tiny_recipe(checkpoints={"epochs": [0, 1, 2]})
    every = tiny_recipe(checkpoints={"every": 1})
    assert [r.run_id for r in expand_recipe(listed)] == [r.run_id for r in expand_recipe(every)]
    assert [r.run_id for r in expand_recipe(listed)] == GOLDEN_IDS


def test_sampling_docstring_examples():
    import doctest

    from zoo.recipe import sampling

    assert doctest.testmod(sampling).failed == 0


def test_landscape_at_must_be_a_checkpoint_epoch_of_every_run():
    landscape = {"metrics": ["weights"], "at": [1, 3]}
    with pytest.raises(
        RecipeError,
        match=r"landscape.at: \[3\] are not checkpoint epochs of "
        r"every run; allowed: \[0, 1, 2\]",
    ):
        tiny_recipe(landscape=landscape)
    grid = {"train.epochs": [2, 4]}  # epoch 4 is only saved by the 4-epoch runs
    with pytest.raises(RecipeError, match=r"allowed: \[0, 1, 2\]"):
        tiny_recipe(grid=grid, landscape={"metrics": ["weights"], "at": [4]})
    ok = tiny_recipe(landscape={"metrics": ["weights"], "at": [1, 2]})
    assert ok.resolved["landscape"]["at"] == [1, 2]
