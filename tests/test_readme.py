"""The README's commands and snippets are the product's front door: test them."""

import re
from pathlib import Path

import zoo
from zoo.dist.options import ExecOptions
from zoo.recipe import recipe_from_dict

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command():
    test_command = _blocks("bash")[1].strip()
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_quickstart_recipe_and_readme_load_snippet(tmp_path, monkeypatch):
    recipe = zoo.load_recipe(ROOT / "pipelines" / "quickstart.yaml", [f"output.dir={tmp_path}"])
    folder = zoo.run(recipe, ExecOptions(workers=0))
    (snippet,) = [b for b in _blocks("python") if "load_dataset" in b]
    snippet = snippet.replace('"out/quickstart/dataset"', repr(str(folder)))
    snippet += "\nassert abs(acc - row['test_acc']) < 1e-6\n"
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["weights"].shape[1] == 3466


def test_first_command_runs_the_quickstart():
    first = _blocks("bash")[0]
    assert (
        "zoo run pipelines/quickstart.yaml" in first
        and "load_dataset('out/quickstart/dataset'" in first
    )


def test_readme_recipe_and_landscape_examples_validate():
    import yaml

    from .conftest import tiny_recipe

    recipe_block, landscape_block = [
        b for b in _blocks("yaml") if b.startswith(("schema_version", "landscape:"))
    ]
    assert recipe_from_dict(yaml.safe_load(recipe_block)).resolved["seeds"] == 4
    landscape = yaml.safe_load(landscape_block)["landscape"]
    assert landscape["at"] == [5, 20]
    recipe = tiny_recipe(landscape={**landscape, "at": [1, 2]})  # the tiny recipe trains 2 epochs
    assert recipe.resolved["landscape"]["barrier"]["aligned"] is True
