"""The README's commands and snippets are the product's front door: test them."""

import re
from pathlib import Path

import zoo
from zoo.dist import ExecOptions

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
