"""Weight-space augmentations: exact symmetries keep the function; every transform is seeded,
pure, and plugs into datasets (with_transform, map) and DataLoader collate."""

import hashlib
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import zoo
from zoo.errors import AugmentError
from zoo.layout import flatten, permute_rows
from zoo.nn.architectures import ARCHITECTURES, build_model, to_module
from zoo.weightspace.augment import (
    AUGMENTATIONS,
    MAXPOOL_BEFORE_ACTIVATION,
    PERMUTATIONS_ONLY,
    Augmenter,
    Dropout,
    Erase,
    Mixup,
    Noise,
    Permute,
    Prune,
    Rescale,
    Rows,
    SignFlip,
    Transform,
    augment,
    exact_symmetries,
    generator_for,
    sign_flip_groups,
)

from .conftest import tiny_recipe

ARCHS = [
    ({"arch": "mlp", "width": 8, "depth": 2}, (1, 8, 8)),
    ({"arch": "cnn_s"}, (1, 28, 28)),
    ({"arch": "cnn_small", "width": 6}, (1, 12, 12)),
]
ACTIVATIONS = ["tanh", "relu", "leaky_relu", "gelu", "sigmoid"]


def population(cfg, shape, n=4):
    """``n`` independently initialized models of one architecture as rows ``(n, P)``."""
    torch.manual_seed(0)
    mods = [build_model(cfg, shape, 10)[0] for _ in range(n)]
    layout = build_model(cfg, shape, 10)[1]
    return torch.stack([flatten(m.state_dict(), layout) for m in mods]), layout


def outputs(rows, layout, x):
    with torch.no_grad():
        return torch.stack([to_module(r, layout)(x) for r in rows])


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize(("cfg", "shape"), ARCHS, ids=["mlp", "cnn_s", "cnn_small"])
def test_exact_symmetries_keep_the_outputs(cfg, shape, act):
    rows, layout = population({**cfg, "activation": act}, shape)
    x = torch.randn(16, *shape)
    for t in exact_symmetries(layout):
        moved = augment(rows, layout, [t], seed=1).weights
        assert (moved != rows).float().mean() > 0.1, t.name  # many weights did move
        diff = (outputs(moved, layout, x) - outputs(rows, layout, x)).abs().max()
        assert diff <= 1e-5, (t.name, float(diff))


def test_sign_flip_and_rescale_are_offered_only_where_exact():
    names = {
        a: [
            t.name
            for t in exact_symmetries(
                population({"arch": "mlp", "width": 4, "depth": 1, "activation": a}, (3,), 1)[1]
            )
        ]
        for a in ACTIVATIONS
    }
    assert names == {
        "tanh": ["permute", "sign_flip"],
        "relu": ["permute", "rescale"],
        "leaky_relu": ["permute", "rescale"],
        "gelu": ["permute"],
        "sigmoid": ["permute"],
    }
    _, relu = population({"arch": "mlp", "width": 4, "depth": 1, "activation": "relu"}, (3,), 1)
    with pytest.raises(AugmentError, match=r"sign_flip is a symmetry only of odd.*'relu'.*rescale"):
        Augmenter(relu, [SignFlip()])
    _, tanh = population({"arch": "mlp", "width": 4, "depth": 1, "activation": "tanh"}, (3,), 1)
    with pytest.raises(AugmentError, match=r"rescale is a symmetry only of positively homo"):
        augment(torch.zeros(1, tanh.num_params), tanh, [Rescale()])


def pooled_before_activation(module: nn.Sequential) -> set[str]:
    """Groups (weight-layer index) whose outputs pass a max-pool before their activation."""
    out, layer, pooled = set(), -1, False
    for child in module.children():
        if isinstance(child, nn.Conv2d | nn.Linear):
            layer, pooled = layer + 1, False
        elif isinstance(child, nn.MaxPool2d):
            pooled = True
        elif isinstance(child, nn.Tanh) and pooled:
            out.add(f"P{layer}")
    return out


@pytest.mark.parametrize(("cfg", "shape"), ARCHS, ids=["mlp", "cnn_s", "cnn_small"])
def test_max_pool_table_matches_the_architectures(cfg, shape):
    module, layout = build_model({**cfg, "activation": "tanh"}, shape, 10)
    expected = pooled_before_activation(module)
    assert set(MAXPOOL_BEFORE_ACTIVATION.get(cfg["arch"], ())) == expected
    assert sign_flip_groups(layout) == sorted(set(layout.perm_spec.sizes) - expected)
    # a new arch: extend the table, or list it among the permutation-only ones (issue 15); the
    # coordinate networks have no max-pool (tests/test_fields.py)
    assert set(ARCHITECTURES) - set(PERMUTATIONS_ONLY) == {
        "mlp",
        "cnn_s",
        "cnn_small",
        "siren",
        "fourier_mlp",
    }


def test_a_sign_flip_before_a_max_pool_would_change_the_function():
    rows, layout = population({"arch": "cnn_s", "activation": "tanh"}, (1, 28, 28), 1)
    signs = torch.ones(1, 8)
    signs[0, :4] = -1
    flipped = permute_rows(rows, layout, {}, {"P0": signs})
    x = torch.randn(8, 1, 28, 28)
    assert (outputs(flipped, layout, x) - outputs(rows, layout, x)).abs().max() > 1e-3


ALL = [
    Permute(),
    SignFlip(),
    Noise(0.1),
    Dropout(0.2),
    Erase(p=1.0),
    Prune((0.1, 0.5)),
    Mixup(0.4, targets=("test_acc",)),
    Mixup(0.4, aligned=True),
]


@pytest.mark.parametrize(
    "transform", ALL, ids=lambda t: f"{t.name}{'_aligned' * getattr(t, 'aligned', 0)}"
)
def test_transforms_are_seeded_and_pure(transform):
    rows, layout = population(
        {"arch": "mlp", "width": 8, "depth": 2, "activation": "tanh"}, (1, 8, 8), 6
    )
    acc = torch.linspace(0.1, 0.9, 6, dtype=torch.float64)
    before, acc_before = rows.clone(), acc.clone()
    a = augment(rows, layout, [transform], seed=3, targets={"test_acc": acc})
    b = augment(rows, layout, [transform], seed=3, targets={"test_acc": acc})
    c = augment(rows, layout, [transform], seed=4, targets={"test_acc": acc})
    assert torch.equal(a.weights, b.weights) and not torch.equal(a.weights, c.weights)
    assert torch.equal(rows, before) and torch.equal(acc, acc_before)  # inputs untouched
    assert a.weights.dtype == torch.float32 and a.weights.shape == rows.shape
    assert Transform.from_dict(transform.to_dict()) == transform


def test_noise_is_scaled_by_each_layers_std():
    rows, layout = population({"arch": "cnn_s", "activation": "relu"}, (1, 28, 28), 64)
    noise = augment(rows, layout, [Noise(0.1)], seed=0).weights - rows
    for off, n in zip(layout.offsets, layout.sizes, strict=True):
        std = rows[:, off : off + n].std(1, keepdim=True, correction=0)  # (B, 1) per tensor
        rel = noise[:, off : off + n] / std
        assert rel.std().item() == pytest.approx(0.1, rel=0.15 if n * 64 >= 1000 else 0.5)


def test_dropout_erase_and_prune_zero_what_they_promise():
    rows, layout = population({"arch": "cnn_s", "activation": "tanh"}, (1, 28, 28), 32)
    p = rows.shape[1]
    dropped = augment(rows, layout, [Dropout(0.3)], seed=0).weights
    assert (dropped == 0).float().mean().item() == pytest.approx(0.3, abs=0.02)
    erased = augment(rows, layout, [Erase(p=1.0, scale=(0.1, 0.2), value=7.0)], seed=0).weights
    for row in erased:
        where = (row == 7.0).nonzero().flatten()
        assert 0.1 * p - 1 <= len(where) <= 0.2 * p + 1
        assert torch.equal(where, torch.arange(where[0], where[0] + len(where)))  # one window
    pruned = augment(rows, layout, [Prune((0.4, 0.4))], seed=0).weights
    for row, orig in zip(pruned, rows, strict=True):
        zero = row == 0
        assert zero.sum() == int(0.4 * p)
        assert orig[zero].abs().max() <= orig[~zero].abs().min()  # the smallest went
    per_layer = augment(rows, layout, [Prune((0.5, 0.5), per_layer=True)], seed=0).weights
    off, n = layout.offsets[0], layout.sizes[0]
    assert ((per_layer[:, off : off + n] == 0).sum(1) == n // 2).all()


def test_mixup_mixes_weights_and_targets_with_one_lambda():
    rows, layout = population(
        {"arch": "mlp", "width": 8, "depth": 1, "activation": "relu"}, (4,), 8
    )
    score = rows.double().sum(1)  # a target that is linear in the weights
    out = augment(rows, layout, [Mixup(1.0, targets=("score",))], seed=0, targets={"score": score})
    torch.testing.assert_close(out.weights.double().sum(1), out.targets["score"], atol=1e-4, rtol=0)
    assert not torch.equal(out.weights, rows)
    with pytest.raises(AugmentError, match=r"mixup targets \['test_acc'\] are not in the batch"):
        augment(rows, layout, [Mixup(targets=("test_acc",))], seed=0)


def test_aligned_mixup_of_permuted_copies_is_the_model_itself():
    rows, layout = population({"arch": "cnn_s", "activation": "tanh"}, (1, 28, 28), 1)
    copies = augment(rows.expand(6, -1), layout, [Permute()], seed=0).weights
    plain = augment(copies, layout, [Mixup(1.0)], seed=0).weights
    aligned = augment(copies, layout, [Mixup(1.0, aligned=True)], seed=0).weights
    assert (plain - copies).abs().max() > 0.01  # mixing unaligned copies blurs them
    # each row mixes with a copy aligned to itself: the row comes back (up to float rounding)
    torch.testing.assert_close(aligned, copies, atol=1e-6, rtol=0)


def test_batched_permutation_matches_apply_permutation_per_row():
    rows, layout = population({"arch": "cnn_s", "activation": "relu"}, (1, 28, 28), 3)
    perms = {
        g: torch.stack([torch.randperm(n) for _ in range(3)])
        for g, n in layout.perm_spec.sizes.items()
    }
    batched = permute_rows(rows, layout, perms)
    for b in range(3):
        one = zoo.apply_permutation(
            zoo.unflatten(rows[b], layout), layout.perm_spec, {g: p[b] for g, p in perms.items()}
        )
        assert torch.equal(batched[b], flatten(one, layout))


def test_fused_symmetries_equal_the_transforms_one_after_another():
    rows, layout = population({"arch": "cnn_s", "activation": "tanh"}, (1, 28, 28), 8)
    chain = [Permute(), SignFlip(), Noise(0.1), Permute(), SignFlip(0.3)]
    fused = augment(rows, layout, chain, seed=9).weights
    gen, one_by_one = generator_for(9), Rows(rows)
    for t in chain:
        one_by_one = t(one_by_one, layout, gen)
    assert torch.equal(fused, one_by_one.weights)


def test_augmenter_round_trips_and_rejects_wrong_shapes():
    _, layout = population({"arch": "mlp", "width": 8, "depth": 1, "activation": "tanh"}, (4,), 1)
    aug = Augmenter(layout, [Permute(), Erase(scale=(0.1, 0.2)), Mixup(targets=("a",))], seed=5)
    back = Augmenter.from_dict(aug.to_dict())
    assert back.to_dict() == aug.to_dict() and back.transforms == aug.transforms
    assert sorted(AUGMENTATIONS) == sorted(t.name for t in (*ALL[:7], Rescale()))
    with pytest.raises(AugmentError, match=r"weights of shape \(3,\) do not fit.*weights\[None\]"):
        augment(torch.zeros(3), layout, [Permute()])
    with pytest.raises(AugmentError, match=r"batch has no column\(s\) \['a'\]"):
        aug({"weights": torch.zeros(2, layout.num_params)})


@pytest.fixture(scope="module")
def built_zoo(tmp_path_factory):
    folder = zoo.run(tiny_recipe(tmp_path_factory.mktemp("zoo")))
    return folder, zoo.load_layout(folder)


def _sha(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.parquet")}


def test_with_transform_map_and_dataloader_on_a_built_zoo(built_zoo):
    folder, layout = built_zoo
    files = _sha(folder)
    ds = datasets.load_dataset(str(folder), split="train")
    stored = torch.as_tensor(np.asarray(ds.with_format("numpy")["weights"]))
    stored_acc = ds["test_acc"]
    chain = [Permute(), SignFlip(), Noise(0.05), Mixup(0.4, targets=("test_acc",))]
    first = ds.with_transform(Augmenter(layout, chain, seed=7))[:6]
    again = ds.with_transform(Augmenter(layout, chain, seed=7))[:6]
    assert first["weights"].shape == (6, layout.num_params)
    assert torch.equal(first["weights"], again["weights"])
    assert torch.equal(first["test_acc"], again["test_acc"])
    assert not torch.equal(first["weights"], stored[:6])
    one = ds.with_transform(Augmenter(layout, chain, seed=7))[0]  # a single row: (P,)
    assert one["weights"].shape == (layout.num_params,)
    assert float(one["test_acc"]) == pytest.approx(float(stored_acc[0]))  # mixed with itself
    mapped = ds.map(Augmenter(layout, [Permute()], seed=0), batched=True, batch_size=4)
    assert mapped.features["weights"] == ds.features["weights"]
    m = torch.as_tensor(np.asarray(mapped.with_format("numpy")["weights"]))
    assert not torch.equal(m, stored)
    torch.testing.assert_close(m.sort(1).values, stored.sort(1).values)  # permuted, not changed
    collate = Augmenter(layout, [Permute(), SignFlip()], seed=0).collate
    loader = DataLoader(ds.with_format("torch"), batch_size=5, shuffle=False, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["weights"].shape == (5, layout.num_params) and batch["epoch"].shape == (5,)
    x = torch.rand(4, 64)
    for row, orig in zip(batch["weights"], stored[:5], strict=True):  # exact symmetries only
        torch.testing.assert_close(to_module(row, layout)(x), to_module(orig, layout)(x))
    now = torch.as_tensor(np.asarray(ds.with_format("numpy")["weights"]))
    assert torch.equal(now, stored) and _sha(folder) == files  # the stored dataset is untouched


def test_dataloader_workers_draw_new_augmentations_each_epoch_reproducibly(built_zoo):
    folder, layout = built_zoo
    ds = datasets.load_dataset(str(folder), split="train").with_format("torch")

    def epochs(seed):
        aug = Augmenter(layout, [Permute(), SignFlip()], seed=0)
        loader = DataLoader(
            ds,
            batch_size=4,
            num_workers=2,
            collate_fn=aug.collate,
            generator=torch.Generator().manual_seed(seed),
        )
        return [torch.cat([b["weights"] for b in loader]) for _ in range(2)]

    first, second = epochs(1)
    assert not torch.equal(first, second)  # each epoch draws anew
    again = epochs(1)
    assert torch.equal(first, again[0]) and torch.equal(second, again[1])  # seeded


def test_readme_augmentation_snippet_runs(built_zoo):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Weight-space augmentations, alignment and baselines")[1]
    (snippet,) = re.findall(r"```python\n(.*?)```", section.split("\n## ")[0], flags=re.S)
    folder, layout = built_zoo
    snippet = snippet.replace('"out/quickstart/dataset"', repr(str(folder)))
    snippet = snippet.replace('"mlp_d2_w32"', '"mlp_d1_w8"')
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["batch"]["weights"].shape[1] == layout.num_params
    assert torch.equal(namespace["aligned"].sort().values, namespace["w"][1].sort().values)
