"""The decoder-only transformer (issue 15): its attention against torch's, its population forward
and trainer against the per-model module and loop, its permutation spec (residual stream,
whole heads, q/k and v/o within heads) as exact symmetries, alignment of permuted copies, and
Hessian-vector products through attention and LayerNorm against a dense Hessian."""

import json
import math

import datasets
import pytest
import torch
from torch.nn import functional as F

import zoo
from zoo.layout import Layout, flatten, permute_rows, random_permutations, unflatten
from zoo.nn.architectures import build_model, to_module
from zoo.nn.population import forward_population
from zoo.nn.transformer import causal_attention
from zoo.recipe import expand_recipe, recipe_from_dict
from zoo.stages.landscape.hessian import PopulationHVP, lanczos_top
from zoo.stages.landscape.metrics import interpolation_losses, population_losses
from zoo.stages.plan import forward_flops, plan_batches
from zoo.stages.train import train_one, train_population
from zoo.tasks import load_task
from zoo.weightspace.align import align, loss_barrier
from zoo.weightspace.augment import Augmenter, Permute, Rescale, exact_symmetries

from .conftest import tiny_recipe
from .symmetry import check_symmetries, randomized

TINY = {
    "arch": "transformer",
    "width": 8,
    "heads": 2,
    "layers": 2,
    "activation": "gelu",
    "mlp_width": 12,
    "tie_embeddings": False,
}
TIED = {**TINY, "layers": 1, "tie_embeddings": True, "activation": "relu"}
NO_NORM = {**TINY, "layers": 1, "norm": "none"}  # as Nanda et al.'s grokking transformer
CASES, IDS = [TINY, TIED, NO_NORM], ["untied-2-layers", "tied", "no-layernorm"]


def _tokens(n, t=5, vocab=7, seed=0):
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(seed))


def test_causal_attention_equals_torch_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 4, generator=g, dtype=torch.float64) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(causal_attention(q, k, v), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("cfg", CASES, ids=IDS)
def test_population_forward_equals_each_module(cfg):
    mods = [randomized(cfg, (5,), 7, seed=i)[0] for i in range(3)]
    _, layout = build_model(cfg, (5,), 7)
    params = {n: torch.stack([m.state_dict()[n] for m in mods]) for n in layout.names}
    x = torch.stack([_tokens(4, seed=i) for i in range(3)])  # (M, B, T)
    with torch.no_grad():
        ref = torch.stack([m(x[i]) for i, m in enumerate(mods)])
        out = forward_population(mods[0], params, x)
        shared = forward_population(mods[0], params, x[0].expand(3, *x[0].shape))
        shared_ref = torch.stack([m(x[0]) for m in mods])
    assert out.shape == (3, 4, 5, 7)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared, shared_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cfg", CASES, ids=IDS)
def test_every_generator_of_the_spec_is_a_symmetry_and_wrong_moves_are_not(cfg):
    invisible = [f"blocks.{i}.attn.k.bias" for i in range(cfg["layers"])]  # softmax cancels it
    wrong = check_symmetries(cfg, (5,), 7, _tokens(6), invisible=invisible)
    assert wrong > 20  # every axis of every group was left out once, and blocks crossed


def test_spec_names_the_residual_stream_heads_and_within_head_groups():
    _, layout = build_model(TINY, (5,), 7)
    spec = layout.perm_spec
    assert spec.sizes["P0"] == 8 and "residual stream" in spec.roles["P0"]
    assert spec.blocks == {"P2": ("P1", 4), "P3": ("P1", 4), "P6": ("P5", 4), "P7": ("P5", 4)}
    assert spec.sizes["P1"] == 2 and spec.perm_to_axes["P1"] == []  # heads: through blocks
    assert ("blocks.0.attn.q.weight", 0) in spec.perm_to_axes["P2"]
    assert ("blocks.0.attn.k.weight", 0) in spec.perm_to_axes["P2"]
    assert ("blocks.0.attn.o.weight", 1) in spec.perm_to_axes["P3"]
    stream = {name for name, _ in spec.perm_to_axes["P0"]}
    assert {"wte.weight", "wpe.weight", "ln_f.bias", "head.weight"} <= stream
    back = Layout.from_dict(json.loads(json.dumps(layout.to_dict())))
    assert back == layout and back.to_dict()["perm_spec"]["blocks"]["P2"] == ["P1", 4]


def test_to_module_rebuilds_the_transformer_from_layout_json():
    module, layout = randomized(TINY, (5,), 7)
    layout = Layout.from_dict(json.loads(json.dumps(layout.to_dict())))
    rebuilt = to_module({"weights": flatten(module.state_dict(), layout).tolist()}, layout)
    x = _tokens(3)
    torch.testing.assert_close(rebuilt(x), module(x))


def _sequence_recipe(task, train, grid, model=None):
    return recipe_from_dict(
        {
            "schema_version": 1,
            "name": "seq",
            "task": task,
            "model": model or {"arch": "transformer", "width": 8, "heads": 2, "layers": 2},
            "train": train,
            "grid": grid,
            "seeds": 2,
            "checkpoints": {"epochs": [0, 1, 2]},
        }
    )


def _max_diff(batch, result):
    worst = 0.0
    for run in batch.runs:
        for ckpt, state in train_one(run, dtype=torch.float64).items():
            flat = torch.cat([v.reshape(-1) for v in state.values()])
            worst = max(worst, (flat - result.weights[ckpt]).abs().max().item())
    return worst


@pytest.mark.parametrize(
    ("task", "train", "tol"),
    [
        (
            {"name": "modular_tokens", "modulus": 7},
            {
                "optimizer": "sgd",
                "lr": 0.1,
                "momentum": 0.9,
                "weight_decay": 0.01,
                "batch_size": 8,
                "epochs": 2,
            },
            1e-12,
        ),
        (
            {"name": "char_lm", "context": 8, "n_train": 48, "n_test": 16},
            {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.1, "batch_size": 16, "epochs": 2},
            1e-9,  # Adam's first steps are lr·sign(g): it amplifies rounding in tiny gradients
        ),
    ],
    ids=["modular_tokens-sgd", "char_lm-adamw"],
)
def test_population_equals_per_model_loop_float64(task, train, tol):
    recipe = _sequence_recipe(task, train, {"train.lr": [train["lr"], train["lr"] / 3]})
    (batch,) = plan_batches(expand_recipe(recipe), 64)
    result = train_population(batch, chunk_size=3, dtype=torch.float64)
    assert len(batch.runs) == 4
    assert _max_diff(batch, result) < tol
    rows = {(r["run_id"], r["epoch"]): r for r in result.rows}
    run = batch.runs[0].run_id
    assert rows[(run, 2)]["train_loss"] < rows[(run, 0)]["train_loss"]


def test_language_model_rows_report_perplexity_as_exp_of_the_loss():
    recipe = _sequence_recipe(
        {"name": "char_lm", "context": 8, "n_train": 32, "n_test": 8},
        {"optimizer": "adam", "lr": 0.01, "batch_size": 16, "epochs": 2},
        {},
    )
    (batch,) = plan_batches(expand_recipe(recipe), 64)
    result = train_population(batch)
    assert result.metrics == ("loss", "acc", "ppl")
    for row in result.rows:
        for split in ("train", "test"):
            assert row[f"{split}_ppl"] == pytest.approx(torch.tensor(row[f"{split}_loss"]).exp())
            assert 0.0 <= row[f"{split}_acc"] <= 1.0


def test_align_gives_back_a_permuted_copy_and_its_barrier_is_zero():
    module, layout = randomized(TINY, (5,), 7)
    theta = flatten(module.state_dict(), layout)
    perms = random_permutations(layout.perm_spec, 2, torch.Generator().manual_seed(3))
    rows = permute_rows(theta.expand(2, -1), layout, perms)
    assert (rows - theta).abs().max() > 0.1
    aligned = align(rows, theta, layout)
    assert torch.equal(aligned.weights, theta.expand(2, -1))
    with pytest.raises(ValueError, match="for 'transformer' use weight matching"):
        align(rows, theta, layout, probe=_tokens(4))
    task = load_task({"name": "modular_tokens", "modulus": 5})
    x, y = task.x_train[:20], task.y_train[:20]
    before = loss_barrier(theta, rows[0], layout, x, y)
    assert max(abs(v - before.losses[0]) for v in before.losses) > 1e-2  # a different path
    after = loss_barrier(theta, aligned.weights[0], layout, x, y)
    assert after.barrier == 0.0 and len(set(after.losses)) == 1


def test_augmentations_offer_permutations_only_and_keep_the_outputs():
    module, layout = randomized(TINY, (5,), 7)
    assert [type(t) for t in exact_symmetries(layout)] == [Permute]
    with pytest.raises(ValueError, match="rescale is not a symmetry of 'transformer'"):
        Augmenter(layout, [Rescale()])
    theta = flatten(module.state_dict(), layout)
    rows = Augmenter(layout, seed=0)({"weights": theta.expand(4, -1)})["weights"]
    x = _tokens(3)
    for row in rows:
        torch.testing.assert_close(to_module(row, layout)(x), module(x), atol=1e-5, rtol=0)


def _dense_hessian(module, layout, theta, x, y):
    def loss(flat):
        out = torch.func.functional_call(module, unflatten(flat, layout), (x,))
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=-100)

    return torch.autograd.functional.hessian(loss, theta)


def test_hessian_vector_products_match_the_dense_hessian_through_attention():
    task = load_task({"name": "modular_tokens", "modulus": 5, "train_fraction": 0.6})
    x, y = task.x_train[:12], task.y_train[:12]
    cfg = {**TINY, "layers": 1}
    mods = [randomized(cfg, (4,), task.n_classes, seed=s)[0].double() for s in range(2)]
    _, layout = build_model(cfg, (4,), task.n_classes)
    flat = torch.stack([flatten(m.state_dict(), layout) for m in mods])  # (2, P)
    dense = [_dense_hessian(mods[0], layout, flat[i], x, y) for i in range(2)]  # P ~ 700
    hvp = PopulationHVP(mods[0], unflatten(flat, layout), x, y)
    v = torch.randn(flat.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = hvp(v)
    for i in range(2):
        torch.testing.assert_close(got[i], dense[i] @ v[i], atol=1e-10, rtol=1e-8)
    eig = lanczos_top(hvp, flat.shape[1], 2, v, 2, 200, 1e-8)
    for i in range(2):
        top = torch.linalg.eigvalsh(dense[i]).flip(0)[:2]
        torch.testing.assert_close(eig.values[i], top, atol=1e-6, rtol=1e-6)
    losses = population_losses(mods[0], unflatten(flat, layout), x, y)
    torch.testing.assert_close(losses, hvp.losses)
    ends = interpolation_losses(mods[0], layout, flat[:1], flat[1:], x, y, points=3)
    torch.testing.assert_close(ends[0, [0, -1]], losses)


def test_a_transformer_zoo_runs_end_to_end_and_rows_rebuild_from_layout_json(tmp_path):
    recipe = recipe_from_dict(
        {
            "schema_version": 1,
            "name": "lm",
            "task": {"name": "char_lm", "context": 8, "n_train": 64, "n_test": 32},
            "model": {"arch": "transformer", "width": 8, "heads": 2, "layers": 1},
            "train": {"optimizer": "adamw", "lr": 0.01, "batch_size": 16, "epochs": 2},
            "grid": {"train.lr": [0.003, 0.01]},
            "seeds": 2,
            "checkpoints": {"epochs": [0, 2]},
            "landscape": {
                "metrics": ["hessian", "weights", "cka", "barrier", "bezier", "phase"],
                "probe": {"batches": 1, "batch_size": 16},
                "hessian": {"iterations": 8, "trace_probes": 10},
                "bezier": {"epochs": 1},
                "barrier": {"aligned": True},
            },
            "execution": {"workers": 0},
            "output": {"dir": str(tmp_path / "lm")},
        }
    )
    folder = zoo.run(recipe)
    layout = zoo.load_layout(folder)
    assert json.loads((folder / "layout.json").read_text())  # what an outsider reads
    rows = [r for split in datasets.load_dataset(str(folder)).values() for r in split]
    task = load_task({k.removeprefix("task__"): v for k, v in rows[0].items() if "task__" in k})
    assert task.name == "char_lm" and rows[0]["task__path"].endswith("GPL-3")
    last = [r for r in rows if r["epoch"] == 2]
    assert len(last) == 4
    assert last and all(r["hessian_top_eig"] is not None for r in last)
    for row in last:
        assert row["test_ppl"] == pytest.approx(math.exp(row["test_loss"]), rel=1e-6)
        assert row["barrier_aligned_mean"] is not None and row["phase"] is not None
        net = zoo.to_module(row, layout)
        with torch.no_grad():
            logits = net(task.x_test)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), task.y_test.reshape(-1))
        assert float(loss) == pytest.approx(row["test_loss"], rel=1e-4)


def test_flops_and_config_errors_of_the_transformer():
    recipe = _sequence_recipe(
        {"name": "modular_tokens", "modulus": 5},
        {"optimizer": "adam", "lr": 0.01, "batch_size": 8, "epochs": 2},
        {"train.lr": [0.01]},
        model={"arch": "transformer", "width": 8, "heads": 2, "layers": 1, "mlp_width": 12},
    )
    run = expand_recipe(recipe)[0]
    # per example of T = 4 tokens: q, k, v, o (8x8), fc (8->12), proj (12->8), head (8->7),
    # and the attention products q·k and scores·v (4·T²·D)
    by_hand = 4 * (4 * 2 * 8 * 8 + 2 * 2 * 8 * 12 + 2 * 8 * 7) + 4 * 4 * 4 * 8
    assert forward_flops(run) == by_hand
    with pytest.raises(ValueError, match="heads=3 must divide model.width=8"):
        build_model({**TINY, "heads": 3}, (5,), 7)
    with pytest.raises(ValueError, match="a transformer takes 'layer'"):
        build_model({**TINY, "norm": "batch"}, (5,), 7)
    with pytest.raises(ValueError, match="transformer needs token sequences"):
        build_model(TINY, (1, 8, 8), 7)
    bad = tiny_recipe(None).data | {"model": {"arch": "mlp", "heads": 2}}
    with pytest.raises(ValueError, match="model.heads: does not apply to model.arch 'mlp'"):
        recipe_from_dict(bad)
