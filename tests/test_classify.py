"""Classification from weights (issue 14): statistics baselines and weight-space nets predict a
label that the weights encode; splits by signal keep every view of a signal together; 1 vs k
views; the `zoo learn --classify` command on a built signal zoo."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from zoo.cli import app
from zoo.nn.architectures import build_model
from zoo.weightspace.classify import (
    class_labels,
    fit_statistics,
    fit_weight_classifiers,
    learn_classes,
)
from zoo.weightspace.learn import ZooSplits, at_epoch, first_views, regroup

from .test_signal_zoo import signal_zoo

SIREN = {"arch": "siren", "width": 8, "depth": 2, "w0": 30.0, "activation": "sine"}


def encoded_zoo(n_signals: int = 60, views: int = 2, classes: int = 3) -> ZooSplits:
    """Random SIREN rows whose label sets the scale and the mean of 64 of the second layer's
    weights (what the per-tensor statistics and a flat MLP see) and the readout bias: a ground
    truth to recover."""
    _, layout = build_model(SIREN, (2,), 1)
    gen = torch.Generator().manual_seed(0)
    index = np.repeat(np.arange(n_signals), views)
    seed = np.tile(np.arange(views), n_signals)
    label = index % classes
    w = torch.randn(len(index), layout.num_params, generator=gen) * 0.1
    off = layout.offsets[layout.names.index("fc2.weight")]
    lab = torch.as_tensor(label, dtype=torch.float32)[:, None]
    w[:, off : off + 64] = w[:, off : off + 64] * (1.0 + lab) + 0.1 * lab
    w[:, -1] = torch.as_tensor(label, dtype=torch.float32)
    cols = {"label": label, "seed": seed, "task__index": index, "epoch": np.full(len(index), 5)}
    data = ZooSplits(layout, "siren_d2_w8", {"train": w}, {"train": cols})
    return regroup(data, "task__index", test_fraction=0.3)


def test_regroup_keeps_every_view_of_a_signal_in_one_split():
    data = encoded_zoo()
    train, test = (set(data.columns[s]["task__index"]) for s in ("train", "test"))
    assert train and test and not train & test
    assert len(data.weights["train"]) + len(data.weights["test"]) == 120
    one = first_views(data, 1)
    assert set(one.columns["train"]["seed"]) == {0} and len(one.weights["test"]) == len(
        data.weights["test"]
    )
    assert len(at_epoch(data, "last").weights["train"]) == len(data.weights["train"])
    assert len(at_epoch(data, 4).weights["train"]) == 0


def test_statistics_and_weight_nets_recover_an_encoded_label():
    data = encoded_zoo()
    labels, k = class_labels(data, "label")
    assert k == 3 and set(labels["test"]) <= {0, 1, 2}
    stats = {s.model: s for s in fit_statistics(data, "label")}
    assert stats["logistic"].accuracy > 0.9 and stats["gbt"].accuracy > 0.9
    nets = fit_weight_classifiers(
        data, "label", augmentations=("none", "sign_flip", "mixup"), epochs=40, repeats=2
    )
    assert {(s.model, s.augmentation) for s in nets} == {
        (m, a) for m in ("mlp", "deepsets") for a in ("none", "sign_flip", "mixup")
    }
    for s in nets:
        assert s.repeats == 2 and s.accuracy_std is not None and s.views == 2
    best = {s.model: s.accuracy for s in nets if s.augmentation == "none"}
    assert best["mlp"] > 0.6 and best["deepsets"] > 0.85  # chance: 1/3


def test_zoo_learn_classify_compares_one_and_all_views(tmp_path):
    folder = signal_zoo(tmp_path, grid={"task.index": {"range": [0, 30]}})
    report = learn_classes(
        folder, "label", nets=("mlp",), augmentations=("none",), epochs=2, views=(1, None)
    )
    by_views = {s.views: s for s in report.scores if s.model == "mlp"}
    assert set(by_views) == {1, 2}
    assert by_views[1].n_test == by_views[2].n_test  # the same held-out images
    assert by_views[1].n_train * 2 == by_views[2].n_train
    out = tmp_path / "learn.json"
    result = CliRunner().invoke(
        app,
        [
            "learn",
            str(tmp_path / "zoo"),
            "--classify",
            "--views",
            "1",
            "--views",
            "0",
            "--epochs",
            "1",
            "--augment",
            "none",
            "--augment",
            "sign_flip",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())["scores"]
    assert {(s["views"], s["augmentation"]) for s in scores if s["model"] == "deepsets"} == {
        (1, "none"),
        (1, "sign_flip"),
        (2, "none"),
        (2, "sign_flip"),
    }
    assert all(0 <= s["accuracy"] <= 1 for s in scores)
    with pytest.raises(Exception, match="no column 'colour' to classify"):
        learn_classes(folder, "colour", nets=(), epochs=1)
