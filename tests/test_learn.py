"""Downstream baselines: features against numpy, invariance of the neuron network, scores on a
built zoo, phase classification, the CLI."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import zoo
from zoo.cli import app
from zoo.errors import ZooError
from zoo.nn.architectures import build_model
from zoo.weightspace.augment import Permute, SignFlip, augment
from zoo.weightspace.learn import (
    STATISTICS,
    LearnReport,
    Score,
    ZooSplits,
    classify_phase,
    layer_statistics,
    learn,
    load_splits,
    regression_scores,
)
from zoo.weightspace.nets import NeuronSets, neuron_features

from .conftest import tiny_recipe


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A digits MLP zoo of 20 runs, so that train and test both get runs."""
    splits = {"train": 0.7, "test": 0.3}
    return zoo.run(tiny_recipe(tmp_path_factory.mktemp("zoo"), seeds=10, output={"splits": splits}))


def rows_of(cfg, shape, n=6):
    torch.manual_seed(0)
    layout = build_model(cfg, shape, 10)[1]
    mods = [build_model(cfg, shape, 10)[0] for _ in range(n)]
    return torch.stack([zoo.flatten(m.state_dict(), layout) for m in mods]), layout


def test_layer_statistics_match_numpy():
    rows, layout = rows_of({"arch": "cnn_s", "activation": "tanh"}, (1, 28, 28), 3)
    feats = layer_statistics(rows, layout).numpy()
    assert feats.shape == (3, len(STATISTICS) * len(layout.names))
    w = rows.double().numpy()
    for i, (off, n) in enumerate(zip(layout.offsets, layout.sizes, strict=True)):
        part = w[:, off : off + n]
        expected = np.column_stack(
            [part.mean(1), part.var(1), *np.percentile(part, [1, 25, 50, 75, 99], axis=1)]
        )
        np.testing.assert_allclose(feats[:, 7 * i : 7 * i + 7], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("arch", ["cnn_s", "cnn_small", "mlp"])
def test_neuron_network_is_invariant_to_every_permutation(arch):
    cfg = {"arch": arch, "activation": "tanh", "width": 6, "depth": 2}
    rows, layout = rows_of(cfg, (1, 28, 28))
    moved = augment(rows, layout, [Permute()], seed=0).weights
    feats, feats_moved = neuron_features(rows, layout), neuron_features(moved, layout)
    assert feats.shape == (6, sum(layout.perm_spec.sizes.values()), 9)
    assert not torch.allclose(feats, feats_moved)  # the units did move
    torch.manual_seed(0)
    net = NeuronSets(layout)
    with torch.no_grad():
        torch.testing.assert_close(net(feats_moved), net(feats), atol=1e-5, rtol=1e-5)
        flipped = neuron_features(augment(rows, layout, [SignFlip()], seed=0).weights, layout)
        assert not torch.allclose(net(flipped), net(feats), atol=1e-4)  # signs: not built in


def test_regression_scores_against_known_answers():
    y = np.array([0.1, 0.4, 0.2, 0.9])
    assert regression_scores(y, y) == (1.0, 1.0)
    r2, tau = regression_scores(y, -y)
    assert tau == -1.0 and r2 == pytest.approx(
        1 - np.sum((2 * y) ** 2) / np.sum((y - y.mean()) ** 2)
    )
    assert regression_scores(np.ones(4), y) == (None, None)


def test_learn_on_a_built_zoo(folder):
    data = load_splits(folder.parent)  # the output folder works as well as its dataset/
    ok = {s: int((c["status"] == "ok").sum()) for s, c in data.columns.items()}
    assert {s: len(w) for s, w in data.weights.items()} == ok and ok["test"] >= 3
    runs = [set(c["run_id"]) for c in data.columns.values()]
    assert sum(map(len, runs)) == len(set().union(*runs))  # no run in two splits
    report = learn(
        folder, ["epoch", "test_acc"], augmentations=("none", "permute", "mixup"), epochs=10
    )
    assert report.notes == (
        "no phase column: phase classification skipped (landscape metrics add it)",
    )
    keys = {(s.target, s.model, s.augmentation) for s in report.scores}
    for target in ("epoch", "test_acc"):
        assert {(target, m, "none") for m in ("ridge", "gbt", "mlp", "deepsets")} <= keys
        assert {(target, m, a) for m in ("mlp", "deepsets") for a in ("permute", "mixup")} <= keys
    ridge = next(s for s in report.scores if (s.target, s.model) == ("epoch", "ridge"))
    assert ridge.tau > 0.5 and ridge.n_train == len(data.weights["train"])  # weights tell epoch
    back = LearnReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert back == report and Score.from_dict(ridge.to_dict()) == ridge


def test_phase_labels_are_classified_when_present(folder):
    data = load_splits(folder)
    columns, cut = {}, data.weights["train"].norm(dim=1).median()
    for split, cols in data.columns.items():  # a label that the weights determine
        norm = data.weights[split].norm(dim=1)
        columns[split] = {**cols, "phase": np.where(norm > cut, "II", "I")}
    labelled = ZooSplits(data.layout, data.config, data.weights, columns)
    scores = classify_phase(labelled)
    assert [s.model for s in scores] == ["logistic", "gbt"]
    assert all(s.accuracy >= 0.8 for s in scores), scores


def test_learn_errors_name_what_to_do(folder, tmp_path):
    with pytest.raises(ZooError, match=r"no column 'accuracy' to predict; numeric columns: .*"):
        learn(folder, ["accuracy"], nets=())
    with pytest.raises(ZooError, match=r"unknown net\(s\) or augmentation set\(s\) \['flip'\]"):
        learn(folder, augmentations=("none", "flip"))
    lone = zoo.run(tiny_recipe(tmp_path, seeds=1, grid={"train.lr": [0.1]}))
    with pytest.raises(ZooError, match=r"no usable rows in split\(s\) .*train more seeds"):
        load_splits(lone)


def test_cli_learn_prints_a_table_and_writes_json(folder, tmp_path):
    out = tmp_path / "scores.json"
    args = [
        "learn",
        str(folder.parent),
        "--target",
        "epoch",
        "--augment",
        "none",
        "--augment",
        "sign_flip",
        "--epochs",
        "3",
        "--json",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ridge" in result.output and "deepsets" in result.output
    assert "no phase column" in result.output
    scores = json.loads(out.read_text())["scores"]
    assert {(s["model"], s["augmentation"]) for s in scores} == {
        ("ridge", "none"),
        ("gbt", "none"),
        ("mlp", "none"),
        ("mlp", "sign_flip"),
        ("deepsets", "none"),
        ("deepsets", "sign_flip"),
    }
