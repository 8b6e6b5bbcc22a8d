import math

import pytest

from zoo.stages.landscape.phases import PHASE_RULE, cell_inputs, label, label_cells

CFG = {
    "loss_fraction": 0.5,
    "hessian_log_margin": 0.0,
    "mc_k": 1.0,
    "mc_floor": 0.01,
    "cka_threshold": None,
}


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
    labels = label_cells(cell_inputs(rows), CFG)
    assert {cell: v["phase"] for (cell, _), v in labels.items()} == {
        "I": "I",
        "II": "II",
        "III": "III",
        "IV-A": "IV-A",
        "IV-B": "IV-B",
    }
    first = labels[("I", 5)]
    assert first["phase_rule"] == PHASE_RULE and first["phase_sharp"] and not first["phase_trained"]
    assert first["phase_log_lambda_threshold"] == pytest.approx(math.log(0.5))  # median of 5 cells


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


def test_label_edge_cases():
    assert label(True, False, math.nan, 0.01, 0.5, 0.5) == "unknown"
    assert label(True, False, 0.0, 0.01, math.nan, 0.5) == "IV"
    assert label(False, False, 0.0, 0.01, 0.5, 0.5) == "II"
