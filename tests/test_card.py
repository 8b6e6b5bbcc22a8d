"""The dataset card: a header that huggingface_hub.DatasetCard parses and datasets reads, and
prose made from the zoo (grid, counts, columns, estimators, figures, files, citations)."""

import collections
import dataclasses
import json
import re
import shutil
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard

import zoo
from zoo.errors import BuildError
from zoo.layout import Layout
from zoo.naming import REPO_PLACEHOLDER
from zoo.stages.build.card import ConfigSummary, check_card, render_card

from .conftest import tiny_recipe

# the smallest valid PNG (1x1, grey)
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c63600000000200015e2c9f5b0000000049454e44ae426082"
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return zoo.run(tiny_recipe(tmp_path_factory.mktemp("card") / "out"))


def _summary(folder: Path) -> list[ConfigSummary]:
    """The ``summary`` build_dataset hands to render_card, read back from a built folder."""
    out = []
    for name, layout in json.loads((folder / "layout.json").read_text()).items():
        files, counts, tables = {}, {}, []
        for path in sorted((folder / "data" / name).glob("*.parquet")):
            split = path.name.split("-")[0]
            files.setdefault(split, []).append(path.relative_to(folder).as_posix())
            tables.append(pq.read_table(path))
            counts[split] = counts.get(split, 0) + tables[-1].num_rows
        table = pa.concat_tables(tables)
        num_bytes = {s: 0 for s in counts}  # not shown in the sections under test
        schema, rows = table.schema, table.drop_columns(["weights"])
        out.append(
            ConfigSummary(name, Layout.from_dict(layout), schema, rows, files, counts, num_bytes)
        )
    return out


def test_header_is_what_the_hub_and_datasets_read(folder):
    card = DatasetCard((folder / "README.md").read_text())
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    assert configs["mlp_d1_w8"]["data_files"] == [
        {"split": s, "path": f"data/mlp_d1_w8/{s}-*.parquet"} for s in ("train", "validation")
    ]
    info = DatasetInfosDict.from_dataset_card_data(card.data)["mlp_d1_w8"]
    loaded = datasets.load_dataset(str(folder), "mlp_d1_w8")
    assert info.features == loaded["train"].features
    assert info.features["weights"] == datasets.List(datasets.Value("float32"), length=610)
    assert {s: i.num_examples for s, i in info.splits.items()} == {
        s: len(d) for s, d in loaded.items()
    }
    assert info.download_size == sum(p.stat().st_size for p in folder.glob("data/mlp_d1_w8/*"))
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0" and data["size_categories"] == ["n<1K"]
    assert {"weight-space-learning", "model-zoo"} <= set(data["tags"])


def test_size_categories_are_the_hubs_labels():
    from zoo.stages.build.card import _size_category

    cases = {999: "n<1K", 1_000: "1K<n<10K", 2_500_000: "1M<n<10M", 10**13: "n>1T"}
    assert {n: _size_category(n) for n in cases} == cases


def test_prose_is_made_from_the_zoo(folder):
    text = (folder / "README.md").read_text()
    assert "| `train.lr` | grid | [0.05, 0.1] |" in text
    assert "at learning rate one of [0.05, 0.1]" in text  # the grid, not the base value
    assert "Rows per status:\n\n| config | ok |\n|---|---|\n| `mlp_d1_w8` | 12 |" in text
    sizes = collections.Counter()
    for p in folder.glob("data/*/*.parquet"):
        sizes[p.name.split("-")[0]] += p.stat().st_size
    files = len(list(folder.glob("data/mlp_d1_w8/train-*.parquet")))  # one per train batch
    assert f"| `mlp_d1_w8` | train | 9 | {files} | {sizes['train'] / 2**20:.2f} MB | " in text
    assert "| `weights` | `fixed_size_list<item: float>[610]` | all parameters" in text
    assert "| `fc1.weight` | [8, 64] | 0 |" in text
    for absent in ("## Figures", "## Estimator settings", "## Citations", "Rows per phase"):
        assert absent not in text
    assert "\n\n\n" not in text


def test_how_to_load_code_runs_on_the_folder(folder):
    text = (folder / "README.md").read_text()
    (code,) = re.findall(r"## How to load.*?```python\n(.*?)```", text, flags=re.S)
    assert code.count(f'"{REPO_PLACEHOLDER}"') == 2  # `zoo push` writes the repo id there
    namespace = {}
    exec(compile(code.replace(REPO_PLACEHOLDER, str(folder)), "README.md", "exec"), namespace)
    assert namespace["weights"].shape == (9, 610) and namespace["weights"].dtype == torch.float32
    assert isinstance(namespace["net"], torch.nn.Sequential)
    assert namespace["row"]["checkpoint_id"] == namespace["ds"][0]["checkpoint_id"]
    assert torch.equal(torch.cat(list(namespace["batches"])), namespace["weights"])


def test_landscape_phases_figures_column_docs_and_citations(folder, tmp_path):
    copy = tmp_path / "dataset"
    shutil.copytree(folder, copy)
    (copy / "images").mkdir()
    (copy / "images" / "mlp_d1_w8_phase.png").write_bytes(PNG)
    landscape = {"metrics": ["hessian", "barrier", "cka", "phase"], "hessian": {"top_k": 2}}
    recipe = tiny_recipe(tmp_path, landscape=landscape, citations=["Doe. A Zoo. 2024."])
    (part,) = _summary(copy)
    phases = ["I", "II", "II", None] * 3
    table = part.table.append_column("phase", pa.array(phases, pa.string()))
    table = table.append_column("hessian_top_eig", pa.array([1.0] * 12))
    schema = pa.unify_schemas([part.schema, table.schema])
    summary = [dataclasses.replace(part, table=table, schema=schema)]
    docs = {
        "hessian_top_eig": "largest Hessian eigenvalue, residual ‖Hv − λv‖/|λ|",
        "train__lr": "step size",
    }
    text = render_card(recipe, summary, copy, column_docs=docs)
    header = "| config | I | II | null |\n|---|---|---|---|\n"
    assert "Rows per phase (null: checkpoints not annotated):\n\n" + header in text
    assert "| `mlp_d1_w8` | 3 | 6 | 3 |" in text
    assert "## Figures\n\n![mlp_d1_w8_phase](images/mlp_d1_w8_phase.png)" in text
    settings = re.search(r"## Estimator settings.*?```yaml\n(.*?)```", text, flags=re.S)[1]
    import yaml

    assert yaml.safe_load(settings) == recipe.resolved["landscape"]
    assert yaml.safe_load(settings)["hessian"]["top_k"] == 2
    assert (
        "| `hessian_top_eig` | `double` | largest Hessian eigenvalue, residual ‖Hv − λv‖/\\|λ\\| |"
        in text
    )
    assert "| `train__lr` | `double` | step size |" in text
    assert "| `phase` | `string` | phase label" in text
    citations = text.split("## Citations")[1]
    assert "- Doe. A Zoo. 2024." in citations and "Taxonomizing" in citations
    assert "Kornblith" in citations and "Garipov" not in citations  # bezier is not computed


def test_check_card_rejects_a_broken_or_mismatched_header():
    with pytest.raises(BuildError, match="the dataset card's YAML header does not parse"):
        check_card("---\nconfigs: [\n---\n# x\n", ["a"])
    text = "---\nconfigs:\n- config_name: a\n  data_files: data/a/*.parquet\n---\n# x\n"
    assert check_card(text, ["a"]).data.to_dict()["configs"][0]["config_name"] == "a"
    with pytest.raises(BuildError, match=r"names configs \['a'\], the build wrote \['b'\]"):
        check_card(text, ["b"])


def test_a_sampled_recipe_says_what_it_samples(tmp_path):
    sample = {"count": 2, "seed": 3, "params": {"train.lr": {"log_uniform": [0.01, 0.1]}}}
    folder = zoo.run(tiny_recipe(tmp_path, grid={}, seeds=1, sample=sample))
    text = (folder / "README.md").read_text()
    assert "| `train.lr` | sampled (2 draws, seed 3) | log_uniform [0.01, 0.1] |" in text
    assert "at learning rate sampled" in text and "2 points drawn at random" in text
    assert "checkpoints:\n  epochs:\n  - 0" in text  # the schedule is among the fixed settings


def test_the_metadata_config_holds_every_row_but_no_weight(folder):
    """Issue 17: filter and plot the whole zoo without downloading a weight."""
    meta = datasets.load_dataset(str(folder), "metadata", split="rows")
    weights = datasets.load_dataset(str(folder), "mlp_d1_w8")
    assert "weights" not in meta.column_names and {"config", "split"} <= set(meta.column_names)
    assert len(meta) == sum(len(ds) for ds in weights.values())
    by_split = {s: sorted(d["checkpoint_id"]) for s, d in weights.items()}
    for split, ids in by_split.items():
        assert sorted(meta.filter(lambda r, s=split: r["split"] == s)["checkpoint_id"]) == ids
    card = DatasetCard((folder / "README.md").read_text())
    names = [c["config_name"] for c in card.data.to_dict()["configs"]]
    assert names == ["mlp_d1_w8", "metadata"]


def test_the_published_recipe_carries_no_machine_path(tmp_path):
    """Issue 13: the same zoo built in two folders publishes the same recipe.yaml."""
    files = [
        (zoo.run(tiny_recipe(tmp_path / name / "deep" / "out")) / "recipe.yaml").read_bytes()
        for name in ("a", "b")
    ]
    assert files[0] == files[1] and str(tmp_path).encode() not in files[0]
