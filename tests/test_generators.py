"""Generator evaluation: replicas are caught, noise trades accuracy for novelty, bad input."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

import zoo
from zoo.cli import app
from zoo.errors import GeneratorError
from zoo.layout import apply_permutation, flatten, unflatten
from zoo.weightspace.generators import (
    EvalSettings,
    evaluate,
    load_reference,
    noise_baseline,
    predictions,
    read_generated,
    score,
)

from .conftest import tiny_recipe


@pytest.fixture(scope="module")
def zoo_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("genzoo")
    recipe = tiny_recipe(
        out,
        seeds=6,
        grid={"train.lr": [0.05, 0.1]},
        output={"dir": str(out), "splits": {"train": 0.7, "test": 0.3}},
    )
    return zoo.run(recipe)


def _permuted_copies(ref, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        params = unflatten(ref.train[i % len(ref.train)], ref.layout)
        perms = {p: torch.randperm(k, generator=g) for p, k in ref.layout.perm_spec.sizes.items()}
        rows.append(flatten(apply_permutation(params, ref.layout.perm_spec, perms), ref.layout))
    return torch.stack(rows)


def test_permuted_copies_are_reported_as_replicas(zoo_folder):
    ref = load_reference(zoo_folder)
    copies = _permuted_copies(ref)
    assert not torch.allclose(copies[0], ref.train[0])  # really permuted
    results = evaluate(copies, ref, EvalSettings(baselines=()))
    gen = results["generator"].summary(0.05)
    assert gen["replica_share"] == 1.0 and gen["novelty_median"] < 1e-5
    assert gen["agreement_mean"] == pytest.approx(1.0)


def test_noise_moves_novelty_up_and_accuracy_down_monotonically(zoo_folder):
    ref = load_reference(zoo_folder)
    settings = EvalSettings(baselines=())
    train_logits = predictions(ref.layout, ref.train, ref.x_test)
    novelty, accuracy = [], []
    for scale in (0.01, 0.3, 1.0, 3.0):
        noisy = noise_baseline(ref.train, ref.layout, 12, scale, seed=0)
        s = score("noise", noisy, ref, settings, train_logits).summary(0.05)
        novelty.append(s["novelty_median"])
        accuracy.append(s["test_acc_mean"])
    assert novelty == sorted(novelty) and accuracy == sorted(accuracy, reverse=True)
    assert novelty[0] < 0.05 < novelty[-1]


def test_baselines_and_holdout_are_scored_like_the_generator(zoo_folder):
    ref = load_reference(zoo_folder)
    results = evaluate(ref.train[:3] + 0.01, ref, EvalSettings())
    assert list(results) == ["generator", "noise", "average", "gaussian", "holdout"]
    for s in results.values():
        assert len(s.test_acc) == len(s.novelty) == len(s.agreement) > 0


def test_wrong_layout_or_nan_is_a_clear_error(zoo_folder, tmp_path):
    ref = load_reference(zoo_folder)
    with pytest.raises(GeneratorError, match=r"shape \(2, 5\); the zoo's layout needs \(N, 610\)"):
        evaluate(torch.zeros(2, 5), ref)
    bad = ref.train[:3].clone()
    bad[2, 7] = float("nan")
    path = tmp_path / "gen.parquet"
    pq.write_table(pa.table({"weights": bad.tolist()}), path)
    with pytest.raises(GeneratorError, match="row 2 has NaN/inf weights"):
        read_generated(path, ref.layout)


def test_cli_writes_json_and_plot(zoo_folder, tmp_path):
    ref = load_reference(zoo_folder)
    path = tmp_path / "gen.parquet"
    pq.write_table(pa.table({"weights": _permuted_copies(ref, 3).tolist()}), path)
    result = CliRunner().invoke(
        app,
        [
            "evaluate-generator",
            str(zoo_folder),
            str(path),
            "--json",
            str(tmp_path / "r.json"),
            "--plot",
            str(tmp_path / "s.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert '"replica_share": 1.0' in (tmp_path / "r.json").read_text()
