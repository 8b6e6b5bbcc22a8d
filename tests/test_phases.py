import math
import random

import datasets
import pytest

import zoo
from zoo.stages.landscape.phases import (
    PHASE_RULE,
    RULE_V1,
    RULE_V2,
    cell_inputs,
    label,
    label_cells,
    stability_bound,
)

from .conftest import tiny_recipe

CFG = {
    "rule": RULE_V1,
    "loss_fraction": 0.5,
    "hessian_log_margin": 0.0,
    "mc_k": 1.0,
    "mc_floor": 0.01,
    "cka_threshold": None,
}
V2 = {
    "rule": RULE_V2,
    "loss_fraction": 0.5,
    "sharp_fraction": 0.5,
    "mc_k": 1.0,
    "mc_floor_fraction": 0.02,
    "cka_level": 0.9,
    "uncertain_band": 0.2,
}
SGD = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}


def _rows(cell, loss, eig, mc, cka, loss_init=2.0, seeds=2):
    return [
        {
            "cell_id": cell,
            "epoch": 5,
            "probe_loss": loss,
            "probe_loss_init": loss_init,
            "hessian_top_eig": eig,
            "mc_mean": mc,
            "cka_mean": cka,
        }
        for _ in range(seeds)
    ]


def test_every_phase_from_a_hand_made_table():
    rows = (
        _rows("I", loss=1.8, eig=50.0, mc=-0.5, cka=0.2)  # high loss, sharp, barrier
        + _rows("II", loss=1.7, eig=60.0, mc=0.4, cka=0.3)  # high loss, sharp, mc > 0
        + _rows("III", loss=0.1, eig=0.5, mc=-0.3, cka=0.5)  # trained, flat, barrier
        + _rows("IV-A", loss=0.1, eig=0.4, mc=0.001, cka=0.2)  # trained, flat, connected, low CKA
        + _rows("IV-B", loss=0.05, eig=0.3, mc=-0.002, cka=0.95)  # … high CKA
    )
    expected = {"I": "I", "II": "II", "III": "III", "IV-A": "IV-A", "IV-B": "IV-B"}
    labels = label_cells(cell_inputs(rows), CFG)
    assert {cell: v["phase"] for (cell, _), v in labels.items()} == expected
    first = labels[("I", 5)]
    assert first["phase_rule"] == RULE_V1 and first["phase_sharp"] and not first["phase_trained"]
    assert first["phase_log_lambda_threshold"] == pytest.approx(math.log(0.5))  # median of 5 cells
    # v2 on the same table: λ_max against the stability bound 2/lr = 20 of plain SGD at lr 0.1
    trains = {cell: SGD for cell in expected}
    v2 = label_cells(cell_inputs(rows), V2, trains)
    assert {cell: v["phase"] for (cell, _), v in v2.items()} == expected
    assert v2[("I", 5)]["phase_sharpness"] == pytest.approx(50.0 / 20.0)
    assert v2[("I", 5)]["phase_stability_bound"] == pytest.approx(20.0)
    assert v2[("IV-B", 5)]["phase_mc_tol"] == pytest.approx(0.02 * 2.0)  # floor: 2 % of init
    assert v2[("IV-B", 5)]["phase_rule"] == RULE_V2 == PHASE_RULE  # v2 is the default


def test_barrier_stands_in_for_mc_and_tolerance_uses_seed_spread():
    rows = [
        {
            "cell_id": "c",
            "epoch": 1,
            "probe_loss": loss,
            "probe_loss_init": 2.0,
            "hessian_top_eig": 1.0,
            "barrier_mean": 0.05,
            "cka_mean": 0.9,
        }
        for loss in (0.1, 0.3)
    ]
    inputs = cell_inputs(rows)
    assert inputs[("c", 1)]["mc"] == -0.05
    out = label_cells(inputs, CFG)[("c", 1)]
    assert out["phase_mc_tol"] == pytest.approx(0.1414, abs=1e-3)  # std of (0.1, 0.3)
    assert out["phase"] == "IV-B"  # |mc| within tolerance: connected; CKA at the median


def test_v2_connectivity_prefers_bezier_then_the_aligned_barrier():
    row = {
        "cell_id": "c",
        "epoch": 1,
        "probe_loss": 0.1,
        "probe_loss_init": 2.0,
        "barrier_mean": 0.5,
        "barrier_aligned_mean": 0.01,
    }
    assert cell_inputs([row])[("c", 1)]["connectivity_source"] == "barrier_aligned"
    assert cell_inputs([row])[("c", 1)]["connectivity"] == -0.01
    assert cell_inputs([row])[("c", 1)]["mc"] == -0.5  # v1 keeps its own choice
    with_mc = cell_inputs([{**row, "mc_mean": 0.2}])[("c", 1)]
    assert (with_mc["connectivity_source"], with_mc["connectivity"]) == ("bezier", 0.2)


def _heavy_ball_stable(lam: float, lr: float, beta: float, nesterov: bool) -> bool:
    """Run torch.optim.SGD's update on f(x) = lam x² / 2 and see whether it shrinks."""
    x, buf = 1.0, 0.0
    for _ in range(4000):
        g = lam * x
        buf = beta * buf + g
        x -= lr * (g + beta * buf if nesterov else buf)
    return abs(x) < 1.0


@pytest.mark.parametrize(
    "beta,nesterov", [(0.0, False), (0.5, False), (0.9, False), (0.5, True), (0.9, True)]
)
def test_stability_bound_is_where_sgd_on_a_quadratic_diverges(beta, nesterov):
    train = {"optimizer": "sgd", "lr": 0.1, "momentum": beta, "nesterov": nesterov}
    bound = stability_bound(train)
    assert _heavy_ball_stable(0.99 * bound, 0.1, beta, nesterov)
    assert not _heavy_ball_stable(1.01 * bound, 0.1, beta, nesterov)


def test_adaptive_optimizers_have_no_bound_and_a_trained_cell_is_unknown():
    assert math.isnan(stability_bound({"optimizer": "adam", "lr": 1e-3}))
    rows = _rows("t", loss=0.1, eig=5.0, mc=-0.001, cka=0.95) + _rows(
        "u", loss=1.9, eig=5.0, mc=-0.5, cka=0.1
    )
    adam = {"optimizer": "adam", "lr": 1e-3}
    out = label_cells(cell_inputs(rows), V2, {"t": adam, "u": adam})
    assert out[("t", 5)]["phase"] == "unknown" and out[("t", 5)]["phase_sharp"] is None
    assert out[("u", 5)]["phase"] == "I"  # not trained: sharpness does not matter


def test_weight_decay_adds_to_the_curvature():
    rows = _rows("c", loss=0.1, eig=8.0, mc=-0.001, cka=0.95)
    out = label_cells(cell_inputs(rows), V2, {"c": {**SGD, "weight_decay": 4.0}})[("c", 5)]
    assert out["phase_sharpness"] == pytest.approx((8.0 + 4.0) / 20.0)
    assert out["phase"] == "II"  # 0.6 of the bound: sharp (without the decay, 0.4: IV-B)


def test_uncertain_cells_name_the_decision_near_its_threshold():
    rows = (
        _rows("near_sharp", loss=0.1, eig=11.0, mc=-0.001, cka=0.95)  # s = 0.55: 1.1 x 0.5
        + _rows("near_cka", loss=0.1, eig=1.0, mc=-0.001, cka=0.91)  # 1 - CKA = 0.09 vs 0.1
        + _rows("cka_moot", loss=0.1, eig=1.0, mc=-0.5, cka=0.91)  # III: CKA does not matter
        + _rows("clear", loss=0.1, eig=1.0, mc=-0.001, cka=0.99)
    )
    trains = {c: SGD for c in ("near_sharp", "near_cka", "cka_moot", "clear")}
    out = {c: v for (c, _), v in label_cells(cell_inputs(rows), V2, trains).items()}
    assert (out["near_sharp"]["phase"], out["near_sharp"]["phase_near"]) == ("II", "sharp")
    assert (out["near_cka"]["phase"], out["near_cka"]["phase_near"]) == ("IV-B", "cka_large")
    assert out["cka_moot"]["phase"] == "III" and not out["cka_moot"]["phase_uncertain"]
    assert out["clear"]["phase"] == "IV-B" and out["clear"]["phase_near"] == ""


def _random_zoo(n_cells=40, seeds=3, seed=0) -> tuple[list[dict], dict]:
    """Cells with inputs spread over every threshold: losses, sharpness, mc, CKA at random."""
    rng = random.Random(seed)
    rows, trains = [], {}
    for c in range(n_cells):
        cell = f"c{c:02d}"
        lr = rng.choice([0.01, 0.1, 0.5])
        trains[cell] = {**SGD, "lr": lr, "momentum": rng.choice([0.0, 0.9])}
        loss = rng.uniform(0.02, 1.6)
        eig = rng.uniform(0.05, 1.0) * stability_bound(trains[cell])
        mc, cka = rng.uniform(-0.12, 0.02), rng.uniform(0.7, 1.0)
        for s in range(seeds):
            rows.append(
                {
                    "cell_id": cell,
                    "run_id": f"{cell}-{s}",
                    "epoch": 3,
                    "probe_loss": loss * rng.uniform(0.9, 1.1),
                    "probe_loss_init": 2.2,
                    "hessian_top_eig": eig * rng.uniform(0.8, 1.2),
                    "barrier_aligned_mean": -mc,
                    "barrier_mean": -mc,
                    "cka_mean": cka,
                }
            )
    return rows, trains


def _phases(rows, cfg, trains) -> dict[str, str]:
    return {c: v["phase"] for (c, _), v in label_cells(cell_inputs(rows), cfg, trains).items()}


def test_v2_labels_of_a_sub_zoo_equal_those_of_the_full_zoo():
    rows, trains = _random_zoo()
    full = _phases(rows, V2, trains)
    assert len(set(full.values())) >= 4  # the random zoo spans the phases
    half = [r for r in rows if int(r["cell_id"][1:]) % 2 == 0]  # half the grid
    assert _phases(half, V2, trains) == {c: p for c, p in full.items() if int(c[1:]) % 2 == 0}
    dropped = {f"c{c:02d}" for c in range(0, 40, 3)}  # some cells lose a seed: other cells keep
    fewer = [r for r in rows if not (r["cell_id"] in dropped and r["run_id"].endswith("-2"))]
    kept = _phases(fewer, V2, trains)
    assert {c: p for c, p in kept.items() if c not in dropped} == {
        c: p for c, p in full.items() if c not in dropped
    }


def test_v1_labels_depend_on_the_rest_of_the_zoo():
    """Why v2 exists: v1 compares each cell with the zoo's median, so removing the flatter
    half of the zoo relabels cells that did not change."""
    rows, trains = _random_zoo()
    full = _phases(rows, CFG, trains)
    assert "unknown" not in full.values()
    sharp_half = sorted(cell_inputs(rows).items(), key=lambda kv: kv[1]["log_lambda"])[20:]
    keep = {c for (c, _), _ in sharp_half}
    sub = _phases([r for r in rows if r["cell_id"] in keep], CFG, trains)
    assert any(sub[c] != full[c] for c in keep)


def _labels(folder) -> dict[str, str]:
    rows = [r for ds in datasets.load_dataset(str(folder)).values() for r in ds.to_list()]
    return {r["cell_id"]: r["phase"] for r in rows if r["phase"] is not None}


def test_v2_labels_do_not_change_when_the_zoo_is_built_from_half_its_grid(tmp_path):
    landscape = {
        "metrics": ["hessian", "cka", "barrier", "phase"],
        "barrier": {"aligned": True},
        "probe": {"batches": 1, "batch_size": 64},
        "hessian": {"iterations": 10, "trace_probes": 4},
    }
    grid = {"train.lr": [0.05, 0.5], "train.batch_size": [16, 64]}
    full = _labels(zoo.run(tiny_recipe(tmp_path, grid=grid, landscape=landscape)))
    assert len(full) == 4
    half = {"train.lr": [0.5], "train.batch_size": [16, 64]}  # the same runs: no retraining
    sub = _labels(zoo.run(tiny_recipe(tmp_path, grid=half, landscape=landscape)))
    assert len(sub) == 2 and sub == {c: full[c] for c in sub}


def test_label_edge_cases():
    assert label(True, False, math.nan, 0.01, 0.5, 0.5) == "unknown"
    assert label(True, False, 0.0, 0.01, math.nan, 0.5) == "IV"
    assert label(False, False, 0.0, 0.01, 0.5, 0.5) == "II"


def test_coverage_reports_phases_axis_changes_and_uncertain_cells():
    from zoo.stages.build.phasecard import render_coverage
    from zoo.stages.landscape.coverage import Coverage, phase_coverage

    table = {(4, 8): "III", (4, 64): "III", (64, 8): "IV-B", (64, 64): "II"}
    rows = [
        {
            "cell_id": f"{w}-{b}",
            "epoch": e,
            "phase": p if e == 10 else "I",
            "seed": s,
            "phase_rule": RULE_V2,
            "model__width": w,
            "train__batch_size": b,
            "train__lr": 0.1,
            "phase_uncertain": (w, b) == (64, 64),
            "phase_near": "sharp" if (w, b) == (64, 64) else "",
        }
        for (w, b), p in table.items()
        for e in (3, 10)
        for s in (0, 1)
    ]
    cov = phase_coverage(rows)
    assert cov.epoch == 10 and cov.cells == 4 and cov.axes == ("model__width", "train__batch_size")
    assert cov.covered == ("II", "III", "IV-B") and cov.missing == ("I", "IV-A")
    steps = {(s.axis, s.low, s.high): (s.lines, s.changes) for s in cov.steps}
    assert steps[("model__width", 4, 64)] == (2, {"III->IV-B": 1, "III->II": 1})
    assert steps[("train__batch_size", 8, 64)] == (2, {"IV-B->II": 1})
    assert [(u.values, u.phase, u.near) for u in cov.uncertain] == [
        ({"model__width": 64, "train__batch_size": 64}, "II", "sharp")
    ]
    assert Coverage.from_dict(cov.to_dict()) == cov
    assert phase_coverage(rows, epoch=3).covered == ("I",)
    text = render_coverage(cov)
    assert "3 of 5 phases covered, missing: I, IV-A" in text
    assert "| `model.width` | 4 → 64 | 2 of 2 | III → II ×1, III → IV-B ×1 |" in text
    assert "| 64 | 64 | II | sharp |" in text
    assert phase_coverage([{**r, "phase": None} for r in rows]) is None
