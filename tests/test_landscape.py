"""The landscape stage end to end on a tiny zoo."""

import json
import math
import re

import datasets
import pytest
import torch

import zoo
from zoo.dist.options import ExecOptions
from zoo.dist.pipeline import landscape
from zoo.recipe import expand_recipe
from zoo.stages.build.plot import cell_grid
from zoo.stages.landscape import LandscapeBatch, annotate, plan_landscape
from zoo.stages.landscape.annotate import plan_landscape_batches
from zoo.store.manifest import Manifest

from .conftest import tiny_recipe

LANDSCAPE = {
    "metrics": ["hessian", "weights", "cka", "barrier", "bezier", "phase"],
    "at": [1, 2],
    "probe": {"batches": 2, "batch_size": 32},
    "hessian": {"iterations": 15, "trace_probes": 12},
    "bezier": {"epochs": 2},
    "barrier": {"aligned": True},
}


def _recipe(tmp_path, **kw):
    grid = {"train.lr": [0.05, 0.5], "train.batch_size": [16, 64]}
    return tiny_recipe(tmp_path, **{"landscape": LANDSCAPE, "grid": grid, "seeds": 2, **kw})


def test_rows_carry_every_metric_and_a_phase(tmp_path):
    folder = zoo.run(_recipe(tmp_path))
    rows = [r for ds in datasets.load_dataset(str(folder)).values() for r in ds]
    annotated = [r for r in rows if r["epoch"] in (1, 2)]
    assert len(annotated) == 16 and all(r["probe_loss"] is not None for r in annotated)
    for r in annotated:
        assert r["hessian_top_eig"] > 0 and r["hessian_trace_se"] >= 0
        assert r["hessian_eig_iterations"] >= 1 and len(r["layer_alpha"]) == 2
        assert 0 <= r["cka_mean"] <= 1 + 1e-9 and r["cell_pairs"] == 1
        assert math.isfinite(r["mc_mean"]) and math.isfinite(r["barrier_mean"])
        assert 0 <= r["barrier_aligned_mean"] < math.inf  # endpoints lie on the path: >= 0
        assert r["phase"] in ("I", "II", "III", "IV-A", "IV-B")
        assert r["phase_rule"] == "yang2021-zoo-v2" and r["phase_mc_source"] == "bezier"
    assert all(r["probe_loss"] is None for r in rows if r["epoch"] == 0)
    assert sorted(p.name for p in (folder / "images").glob("*.png"))  # phase diagrams drawn
    seeds = {}
    for r in annotated:  # cell columns are shared by the seeds of a cell
        seeds.setdefault((r["cell_id"], r["epoch"]), set()).add((r["cka_mean"], r["phase"]))
    assert all(len(v) == 1 for v in seeds.values())


def test_batched_metrics_equal_per_model_metrics(tmp_path):
    recipe = _recipe(tmp_path)
    zoo.train(recipe, ExecOptions(workers=0))
    settings = recipe.resolved["landscape"]
    runs = expand_recipe(recipe)
    assert len(plan_landscape(runs, settings)) == len({r.cell_id for r in runs})  # one per cell
    whole = LandscapeBatch("whole", tuple(runs), settings)  # several cells in one batch
    together = annotate(whole, str(tmp_path), dtype=torch.float64).to_pylist()
    cell = [r for r in whole.runs if r.cell_id == whole.runs[0].cell_id]
    alone = annotate(LandscapeBatch("x", tuple(cell), settings), str(tmp_path), torch.float64)
    by_ckpt = {r["checkpoint_id"]: r for r in together}
    for row in alone.to_pylist():
        ref = by_ckpt[row["checkpoint_id"]]
        for key in ("hessian_top_eig", "hessian_trace", "cka_mean", "barrier_mean", "weight_l2"):
            assert row[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key


def test_a_model_with_nan_weights_gets_nan_metrics_and_a_note(tmp_path):
    recipe = tiny_recipe(
        tmp_path,
        grid={"train.lr": [0.05, 1e30]},
        seeds=1,
        model={"arch": "mlp", "width": 8, "depth": 1, "activation": "relu"},
        landscape={
            "metrics": ["hessian", "weights"],
            "at": [2],
            "hessian": {"iterations": 10, "trace_probes": 10},
        },
    )
    folder = zoo.run(recipe)
    rows = [r for ds in datasets.load_dataset(str(folder)).values() for r in ds if r["epoch"] == 2]
    bad = [r for r in rows if r["status"] == "diverged"]
    good = [r for r in rows if r["status"] == "ok"]
    assert len(bad) == 1 and len(good) == 1
    assert math.isnan(bad[0]["hessian_top_eig"]) and "non-finite" in bad[0]["landscape_note"]
    assert math.isfinite(good[0]["hessian_top_eig"]) and good[0]["landscape_note"] == ""


def test_landscape_resumes_and_recomputes_only_when_settings_change(tmp_path):
    recipe = _recipe(tmp_path)
    zoo.train(recipe, ExecOptions(workers=0))
    first = landscape(recipe, ExecOptions(workers=0))
    assert first.done and not first.skipped
    again = landscape(recipe, ExecOptions(workers=0))
    assert not again.done and sorted(again.skipped) == sorted(first.done)
    changed = _recipe(tmp_path, landscape={**LANDSCAPE, "at": [2]})
    assert {b.batch_id for b in plan_landscape_batches(changed)}.isdisjoint(first.done)
    assert len(Manifest(tmp_path).records("landscape")) == len(first.done)


def test_cli_landscape_then_plot(tmp_path):
    from typer.testing import CliRunner

    from zoo.cli import app

    runner = CliRunner()
    recipe = _recipe(tmp_path)
    zoo.train(recipe, ExecOptions(workers=0))
    result = runner.invoke(app, ["landscape", str(tmp_path), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "annotated and rebuilt" in result.output
    result = runner.invoke(app, ["inspect", str(tmp_path)], env={"COLUMNS": "200"})
    assert "phases: cells' labels at the last annotated epoch" in result.output
    assert re.search(r" (I|II|III|IV-A|IV-B) \d", result.output), result.output
    result = runner.invoke(
        app,
        [
            "plot",
            str(tmp_path),
            "--x",
            "train.lr",
            "--y",
            "train.batch_size",
            "--metric",
            "hessian_top_eig",
        ],
    )
    assert result.exit_code == 0, result.output
    png = tmp_path / "plots" / "hessian_top_eig.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(
        app, ["plot", str(tmp_path), "--x", "train.lr", "--y", "seed", "--metric", "no_such_metric"]
    )
    assert result.exit_code == 2 and "nothing to plot" in result.output


def test_phase_diagrams_span_the_configs_of_a_width_axis(tmp_path):
    """Widths are separate configs (layouts); the card's diagrams still put them on one axis."""
    recipe = tiny_recipe(
        tmp_path,
        grid={"model.width": [4, 8], "train.lr": [0.05, 0.1]},
        seeds=1,
        landscape={"metrics": ["weights"]},
    )
    folder = zoo.run(recipe)
    assert sorted(json.loads((folder / "layout.json").read_text())) == ["mlp_d1_w4", "mlp_d1_w8"]
    images = sorted(p.name for p in (folder / "images").glob("*.png"))
    assert "distance_from_init_rel.png" in images and "test_acc.png" in images
    assert "](images/distance_from_init_rel.png)" in (folder / "README.md").read_text()
    splits = [
        s
        for c in ("mlp_d1_w4", "mlp_d1_w8")
        for s in datasets.load_dataset(str(folder), c).values()
    ]
    rows = [r for split in splits for r in split.to_list()]
    xs, ys, grid, _ = cell_grid(rows, "model.width", "train.lr", "distance_from_init_rel", 2)
    assert (xs, ys) == ([4, 8], [0.05, 0.1]) and all(v > 0 for line in grid for v in line)
