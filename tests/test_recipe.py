from pathlib import Path

import jsonschema
import pytest
import yaml

from zoo.errors import RecipeError
from zoo.recipe import (
    RunConfig,
    expand_recipe,
    load_recipe,
    recipe_from_dict,
    recipe_schema,
)
from zoo.training import plan_batches

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


def test_run_ids_are_pinned():
    # golden ids: a change here changes every published zoo's ids — bump schema_version instead
    ids = [r.run_id for r in expand_recipe(tiny_recipe())]
    assert ids == GOLDEN_IDS


GOLDEN_IDS = ["bb682b83e7b6be40", "fba3f55e8b7c82ea", "0bab3968a74cb82c", "01fb12fc3ce268b4"]


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
