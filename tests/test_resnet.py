"""The residual network (issue 15): its population forward and trainer against the per-model
module and loop (BatchNorm's running statistics included), its permutation spec (one residual
stream per stage, blocked GroupNorm groups) as exact symmetries, buffers in the layout, and
Hessian-vector products through normalization against a dense Hessian."""

import json

import datasets
import pytest
import torch
from torch.nn import functional as F

import zoo
from zoo.layout import Layout, flatten, permute_rows, random_permutations, unflatten
from zoo.nn.architectures import build_model, to_module
from zoo.nn.population import forward_population
from zoo.recipe import expand_recipe, recipe_from_dict
from zoo.stages.landscape.hessian import PopulationHVP, lanczos_top
from zoo.stages.landscape.metrics import fit_bezier, weight_metrics
from zoo.stages.plan import forward_flops, memory_model, plan_batches
from zoo.stages.train import train_one, train_population
from zoo.tasks import load_task
from zoo.weightspace.align import align
from zoo.weightspace.augment import Augmenter, Noise, Prune, SignFlip, exact_symmetries

from .symmetry import check_symmetries, randomized

SHAPE = (1, 8, 8)
NORMS = {
    "batch": {"norm": "batch"},
    "group": {"norm": "group", "norm_groups": 2},
    "layer": {"norm": "layer"},
}


def _cfg(norm: str, **extra) -> dict:
    return {"arch": "resnet", "width": 4, "stages": 2, "blocks": 2, "activation": "relu"} | (
        NORMS[norm] | extra
    )


@pytest.mark.parametrize("norm", sorted(NORMS))
def test_population_forward_equals_each_module_in_both_modes(norm):
    cfg = _cfg(norm)
    mods = [randomized(cfg, SHAPE, 10, seed=i)[0] for i in range(3)]
    _, layout = build_model(cfg, SHAPE, 10)
    params = {n: torch.stack([m.state_dict()[n] for m in mods]) for n in layout.names}
    x = torch.randn(3, 5, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = torch.stack([m(x[i]) for i, m in enumerate(mods)])
        out = forward_population(mods[0], params, x)
        shared = forward_population(mods[0], params, x[0].expand(3, *x[0].shape))
        shared_ref = torch.stack([m(x[0]) for m in mods])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared, shared_ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # training mode: batch statistics, running statistics updated
        train_ref = torch.stack([m.train()(x[i]) for i, m in enumerate(mods)])
        train_out = forward_population(mods[0], params, x, training=True)
    torch.testing.assert_close(train_out, train_ref, atol=1e-5, rtol=1e-5)
    for name in layout.buffers:
        torch.testing.assert_close(params[name], torch.stack([m.state_dict()[name] for m in mods]))


@pytest.mark.parametrize("norm", sorted(NORMS))
def test_every_generator_of_the_spec_is_a_symmetry_and_wrong_moves_are_not(norm):
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(0))
    assert check_symmetries(_cfg(norm), SHAPE, 10, x) > 20


def test_layout_lists_the_running_statistics_as_buffers_and_to_module_loads_them():
    module, layout = randomized(_cfg("batch"), SHAPE, 10)
    assert "stem.norm.running_mean" in layout.buffers and "stem.norm.weight" not in layout.buffers
    assert not any("num_batches_tracked" in n for n in layout.names)  # floats only
    assert set(layout.parameters) == {n for n, _ in module.named_parameters()}
    d = json.loads(json.dumps(layout.to_dict()))
    assert d["buffers"] == list(layout.buffers) and "buffers" in d
    back = Layout.from_dict(d)
    assert back == layout
    rebuilt = to_module(flatten(module.state_dict(), back), back)
    x = torch.randn(3, *SHAPE)
    torch.testing.assert_close(rebuilt(x), module(x))  # eval mode: the running statistics
    _, group = build_model(_cfg("group"), SHAPE, 10)
    assert "buffers" not in group.to_dict() and group.perm_spec.blocks["P0"] == ("P1", 2)
    assert "GroupNorm groups" in group.perm_spec.roles["P1"]


def _recipe(norm: str, train: dict, grid: dict):
    return recipe_from_dict(
        {
            "schema_version": 1,
            "name": "res",
            "task": {"name": "digits", "n_train": 96},
            "model": _cfg(norm, blocks=1),
            "train": train,
            "grid": grid,
            "seeds": 2,
            "checkpoints": {"epochs": [0, 1, 2]},
        }
    )


@pytest.mark.parametrize("norm", sorted(NORMS))
def test_population_equals_per_model_loop_float64(norm):
    train = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 16, "epochs": 2}
    recipe = _recipe(norm, train, {"train.lr": [0.05, 0.02]})
    (batch,) = plan_batches(expand_recipe(recipe), 64)
    result = train_population(batch, chunk_size=3, dtype=torch.float64)
    worst = 0.0
    for run in batch.runs:
        for ckpt, state in train_one(run, dtype=torch.float64).items():
            flat = torch.cat([v.reshape(-1) for v in state.values()])
            worst = max(worst, (flat - result.weights[ckpt]).abs().max().item())
    assert worst < 1e-12
    if norm == "batch":  # the running statistics moved, in the shard as in the module
        _, layout = build_model(batch.runs[0].model, SHAPE, 10)
        first, last = (result.weights[f"{batch.runs[0].run_id}-e000{e}"] for e in (0, 2))
        mean = unflatten(last - first, layout)["stem.norm.running_mean"]
        assert mean.abs().max() > 1e-3


def test_a_diverged_model_keeps_its_running_statistics_frozen():
    train = {"optimizer": "sgd", "lr": 0.05, "batch_size": 16, "epochs": 2}
    recipe = _recipe("batch", train, {"train.lr": [0.05, 1e30]})
    (batch,) = plan_batches(expand_recipe(recipe), 64)
    result = train_population(batch)
    bad = batch.runs[2]
    rows = {(r["run_id"], r["epoch"]): r for r in result.rows}
    assert rows[(bad.run_id, 2)]["status"] == "diverged"
    w1, w2 = (result.weights[f"{bad.run_id}-e000{e}"] for e in (1, 2))
    assert torch.allclose(w1, w2, equal_nan=True)


def test_align_augment_and_weight_metrics_on_buffers():
    module, layout = randomized(_cfg("batch"), SHAPE, 10)
    theta = flatten(module.state_dict(), layout)
    rows = permute_rows(
        theta.expand(2, -1), layout, random_permutations(layout.perm_spec, 2, torch.Generator())
    )
    assert torch.equal(align(rows, theta, layout).weights, theta.expand(2, -1))
    assert len(exact_symmetries(layout)) == 1
    with pytest.raises(ValueError, match="sign_flip is not a symmetry of 'resnet'"):
        Augmenter(layout, [SignFlip()])
    noisy = Augmenter(layout, [Noise(0.5), Prune((0.5, 0.5))], seed=0)({"weights": rows})
    buffers = torch.cat(
        [unflatten(noisy["weights"], layout)[n].reshape(2, -1) for n in layout.buffers], 1
    )
    expected = torch.cat([unflatten(rows, layout)[n].reshape(2, -1) for n in layout.buffers], 1)
    assert torch.equal(buffers, expected)  # perturbations leave the running statistics alone
    cols = weight_metrics(rows, rows.flip(0), layout)
    n_params = sum(p.numel() for p in module.parameters())
    same = torch.cat([p.detach().reshape(-1) for p in module.parameters()]).double().norm()
    assert cols["weight_l2"][0] == pytest.approx(float(same))  # parameters only
    assert len(cols["layer_l2"][0]) == len([p for p in module.parameters() if p.dim() >= 2])
    assert n_params < layout.num_params


def test_hessian_vector_products_hold_the_running_statistics_constant():
    cfg = _cfg("batch", width=2, blocks=1)
    mods = [randomized(cfg, SHAPE, 3, seed=s)[0].double() for s in range(2)]
    _, layout = build_model(cfg, SHAPE, 3)
    flat = torch.stack([flatten(m.state_dict(), layout) for m in mods])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, *SHAPE, generator=g, dtype=torch.float64), torch.arange(10) % 3
    hvp = PopulationHVP(mods[0], unflatten(flat, layout), x, y, buffers=layout.buffers)
    names = list(layout.parameters)
    p = hvp.num_params
    assert p == sum(mods[0].state_dict()[n].numel() for n in names)
    v = torch.randn(2, p, generator=g, dtype=torch.float64)
    got = hvp(v)
    for i, module in enumerate(mods):
        fixed = {n: module.state_dict()[n] for n in layout.buffers}
        theta = torch.cat([module.state_dict()[n].reshape(-1) for n in names])
        sizes = [module.state_dict()[n].numel() for n in names]

        def loss(vec, module=module, fixed=fixed, sizes=sizes):
            pieces = zip(names, vec.split(sizes), strict=True)
            parts = {n: t.view_as(module.state_dict()[n]) for n, t in pieces}
            out = torch.func.functional_call(module, parts | fixed, (x,))
            return F.cross_entropy(out, y)

        dense = torch.autograd.functional.hessian(loss, theta)
        torch.testing.assert_close(got[i], dense @ v[i], atol=1e-10, rtol=1e-8)
        top = lanczos_top(hvp, p, 2, v, 1, 200, 1e-9).values[i, 0]
        torch.testing.assert_close(top, torch.linalg.eigvalsh(dense)[-1], atol=1e-6, rtol=1e-6)


def test_bezier_bend_leaves_the_running_statistics_at_the_midpoint():
    cfg = _cfg("batch", width=2, blocks=1)
    mods = [randomized(cfg, SHAPE, 3, seed=s)[0] for s in range(2)]
    _, layout = build_model(cfg, SHAPE, 3)
    a, b = (flatten(m.state_dict(), layout)[None] for m in mods)
    x, y = torch.randn(8, *SHAPE), torch.arange(8) % 3
    bend = fit_bezier(mods[0], layout, a, b, x, y, {"epochs": 2, "lr": 0.1}, torch.Generator())
    mid = unflatten((a + b) / 2, layout)
    got = unflatten(bend, layout)
    assert all(torch.equal(got[n], mid[n]) for n in layout.buffers)
    assert not torch.equal(got["head.weight"], mid["head.weight"])


def test_memory_model_and_flops_count_the_residual_network():
    train = {"optimizer": "sgd", "lr": 0.1, "batch_size": 16, "epochs": 2}
    run = expand_recipe(_recipe("batch", train, {"train.lr": [0.1]}))[0]
    mem = memory_model(run)
    assert mem.per_model > 0 and mem.per_chunk > 0
    # by hand, 2 per multiply-add on 8x8 digits: stem 1->4 (8x8); block 4->4 two 3x3 (8x8);
    # stage 2: 4->8 stride 2 (4x4), 8->8 (4x4), shortcut 1x1 4->8 (4x4); head 8->10
    by_hand = 2 * (9 * 4 * 64 + 2 * 36 * 4 * 64 + 36 * 8 * 16 + 72 * 8 * 16 + 4 * 8 * 16 + 80)
    assert forward_flops(run) == by_hand


def test_a_resnet_zoo_runs_end_to_end_and_rows_rebuild_from_layout_json(tmp_path):
    recipe = recipe_from_dict(
        {
            "schema_version": 1,
            "name": "res",
            "task": {"name": "digits", "n_train": 128},
            "model": _cfg("batch", blocks=1),
            "train": {
                "optimizer": "sgd",
                "lr": 0.05,
                "momentum": 0.9,
                "batch_size": 32,
                "epochs": 2,
            },
            "grid": {"train.batch_size": [16, 32]},
            "seeds": 2,
            "checkpoints": {"epochs": [0, 2]},
            "landscape": {
                "metrics": ["hessian", "weights", "cka", "barrier", "bezier", "phase"],
                "probe": {"batches": 1, "batch_size": 32},
                "hessian": {"iterations": 8, "trace_probes": 10},
                "bezier": {"epochs": 1},
                "barrier": {"aligned": True},
            },
            "execution": {"workers": 0},
            "output": {"dir": str(tmp_path / "res")},
        }
    )
    folder = zoo.run(recipe)
    layout = zoo.load_layout(folder)
    assert json.loads((folder / "layout.json").read_text())
    rows = [r for split in datasets.load_dataset(str(folder)).values() for r in split]
    task = load_task({k.removeprefix("task__"): v for k, v in rows[0].items() if "task__" in k})
    last = [r for r in rows if r["epoch"] == 2]
    assert len(last) == 4
    for row in last:
        assert row["hessian_top_eig"] > 0 and row["phase"] is not None
        assert row["barrier_aligned_mean"] is not None and row["cka_mean"] is not None
        net = zoo.to_module(row, layout)  # eval mode: BatchNorm's published running statistics
        with torch.no_grad():
            acc = (net(task.x_test).argmax(1) == task.y_test).float().mean().item()
        assert acc == pytest.approx(row["test_acc"], abs=1e-6)
