"""Phase labels of grid cells by the taxonomy of Yang et al. 2021 — our rules, versioned.

Yang et al. 2021 ("Taxonomizing local versus global structure in neural network loss
landscapes") describe five phases but publish no numeric thresholds (phases were read off heat
maps; only the sign of mc is a hard rule). Both rules decide, per cell (runs that differ only by
seed) and epoch, four things and label the cell with one decision tree (:func:`label`):

- not trained or sharp → ``I`` if mc < −tol (a barrier) else ``II`` (poorly trained;
  globally poorly / well connected);
- trained and flat → ``III`` if mc < −tol, else ``IV-B`` if CKA is large, else ``IV-A``.

Rule ``yang2021-zoo-v2`` (the default) decides from the cell's own runs only, with fixed,
dimensionless thresholds, so a cell's label never changes when other runs join or leave the
zoo (``tests/test_phases.py`` labels sub-zoos to check it):

1. ``trained``: mean probe loss / mean probe loss at initialization ≤ ``loss_fraction`` (0.5:
   training has at least halved the loss it started from).
2. ``sharp``: the sharpness ratio ``s = (λ_max + weight_decay) / bound`` ≥ ``sharp_fraction``
   (0.5), where ``bound`` is the largest curvature the cell's optimizer is stable on along a
   quadratic direction: ``2/lr`` for SGD, ``(2 + 2β)/lr`` with heavy-ball momentum β,
   ``(2 + 2β)/((1 + 2β) lr)`` with Nesterov momentum (Cohen et al. 2021). ``s`` near 1 is the
   edge of stability where large-batch (low-temperature) training settles; small-batch SGD
   stays well below it. Half the bound splits the two regimes (a factor 2 on either side).
   The objective SGD descends is the loss plus ``wd/2 ‖θ‖²``, whose curvature is λ + wd.
   Adaptive optimizers (Adam) have no such bound on λ_max: ``s`` is NaN and a trained cell's
   label is ``unknown``.
3. ``barrier``: mc < −tol, tol = max(``mc_k`` (1) × std over seeds of the probe loss,
   ``mc_floor_fraction`` (0.02) × the initial loss): the seeds' own spread of loss, floored at
   a fixed fraction of the loss scale, so a cell whose seeds agree to 1e-4 does not call a
   negligible bump a barrier (2 %: the loss analogue of Frankle et al. 2020's 2 % error barrier
   for "stable" pairs). mc is Bezier mode connectivity when the recipe computes it, else minus
   the linear barrier after weight matching (``barrier: {aligned: true}``), else minus the plain
   linear barrier; ``phase_mc_source`` says which.
4. ``cka_large``: mean CKA between seeds ≥ ``cka_level`` (0.9: the seeds' representations
   agree to within 10 % of perfect alignment).

A decision is *uncertain* when its input lies within a factor (1 + ``uncertain_band``) of its
threshold and flipping it would change the label; ``phase_near`` names those decisions.

Rule ``yang2021-zoo-v1`` (kept selectable with ``landscape.phase.rule``) compares log λ_max with
the zoo's median at that epoch (+ ``hessian_log_margin``) and CKA with the zoo's median unless
``cka_threshold`` is set, so about half of any zoo is "sharp" by construction and a cell's
label depends on the rest of the zoo; its tolerance for mc ≈ 0 is ``max(mc_floor, mc_k × std)``
in loss units.

Every input is kept in the row (``phase_*`` columns) so users can re-threshold.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

RULE_V1 = "yang2021-zoo-v1"
RULE_V2 = "yang2021-zoo-v2"
PHASE_RULES = (RULE_V1, RULE_V2)
PHASE_RULE = RULE_V2  # the default
PHASES = ("I", "II", "III", "IV-A", "IV-B")
DECISIONS = ("trained", "sharp", "barrier", "cka_large")


def cell_inputs(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Per (cell_id, epoch): the rules' raw inputs, from landscape rows (one per checkpoint)."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["cell_id"], row["epoch"])].append(row)
    out = {}
    for key, members in groups.items():
        loss = [r["probe_loss"] for r in members if _finite(r.get("probe_loss"))]
        eig = [r["hessian_top_eig"] for r in members if _finite(r.get("hessian_top_eig"))]
        first = members[0]
        mc = first.get("mc_mean")
        if not _finite(mc) and _finite(first.get("barrier_mean")):
            mc = -first["barrier_mean"]
        source, connectivity = _connectivity(first)
        out[key] = {
            "loss": statistics.fmean(loss) if loss else math.nan,
            "loss_init": statistics.fmean(r["probe_loss_init"] for r in members),
            "loss_std": statistics.stdev(loss) if len(loss) > 1 else 0.0,
            "lambda": statistics.fmean(eig) if eig else math.nan,
            "log_lambda": math.log(statistics.fmean(eig))
            if eig and statistics.fmean(eig) > 0
            else math.nan,
            "mc": mc if _finite(mc) else math.nan,  # v1: Bezier mc, else -barrier
            "connectivity": connectivity,  # v2: Bezier mc, else -aligned barrier, else -barrier
            "connectivity_source": source,
            "cka": first.get("cka_mean") if _finite(first.get("cka_mean")) else math.nan,
        }
    return out


def _connectivity(row: dict) -> tuple[str, float]:
    """Rule v2's mc: Bezier mc when computed, else minus the barrier after weight matching,
    else minus the plain linear barrier (a barrier > 0 is mc < 0)."""
    for column, source, sign in (
        ("mc_mean", "bezier", 1.0),
        ("barrier_aligned_mean", "barrier_aligned", -1.0),
        ("barrier_mean", "barrier", -1.0),
    ):
        if _finite(row.get(column)):
            return source, sign * row[column]
    return "", math.nan


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _median(values) -> float:
    good = [v for v in values if math.isfinite(v)]
    return statistics.median(good) if good else math.nan


def stability_bound(train: dict) -> float:
    """The largest curvature λ on which the run's optimizer is stable along a quadratic
    direction: ``2/lr`` (SGD), ``(2 + 2β)/lr`` (heavy ball), ``(2 + 2β)/((1 + 2β) lr)``
    (Nesterov); NaN for adaptive optimizers.

    Example:
        >>> stability_bound({"optimizer": "sgd", "lr": 0.5, "momentum": 0.5, "nesterov": False})
        6.0
    """
    if train.get("optimizer") != "sgd" or not train.get("lr"):
        return math.nan
    beta = float(train.get("momentum") or 0.0)
    scale = 1 + 2 * beta if train.get("nesterov") else 1.0
    return (2 + 2 * beta) / (scale * float(train["lr"]))


def label_cells(
    inputs: dict[tuple[str, int], dict], cfg: dict, trains: dict[str, dict] | None = None
) -> dict[tuple[str, int], dict]:
    """Apply the rule ``cfg["rule"]`` (default v2) to every cell; returns per cell its label,
    the decisions and the thresholds used.

    Args:
        inputs: :func:`cell_inputs` of the landscape rows.
        cfg: the recipe's resolved ``landscape.phase`` section.
        trains: cell_id -> the cell's resolved ``train`` section (v2 reads the optimizer's
            stability bound from it; cells missing here get a NaN sharpness).
    """
    if cfg.get("rule", RULE_V1) == RULE_V1:
        return _label_cells_v1(inputs, cfg)
    trains = trains or {}
    return {key: label_cell_v2(v, cfg, trains.get(key[0], {})) for key, v in inputs.items()}


def _label_cells_v1(inputs: dict[tuple[str, int], dict], cfg: dict) -> dict:
    by_epoch = defaultdict(list)
    for (_cell, epoch), values in inputs.items():
        by_epoch[epoch].append(values)
    lam_thr = {
        e: _median(v["log_lambda"] for v in vs) + cfg["hessian_log_margin"]
        for e, vs in by_epoch.items()
    }
    cka_thr = {
        e: cfg["cka_threshold"]
        if cfg["cka_threshold"] is not None
        else _median(v["cka"] for v in vs)
        for e, vs in by_epoch.items()
    }
    out = {}
    for (cell, epoch), v in inputs.items():
        tol = max(cfg["mc_floor"], cfg["mc_k"] * v["loss_std"])
        trained = v["loss"] <= cfg["loss_fraction"] * v["loss_init"]
        sharp = v["log_lambda"] > lam_thr[epoch]  # NaN compares False: not sharp
        out[(cell, epoch)] = {
            "phase": label(trained, sharp, v["mc"], tol, v["cka"], cka_thr[epoch]),
            "phase_rule": RULE_V1,
            "phase_trained": trained,
            "phase_sharp": sharp,
            "phase_mc": v["mc"],
            "phase_mc_tol": tol,
            "phase_cka": v["cka"],
            "phase_log_lambda": v["log_lambda"],
            "phase_log_lambda_threshold": lam_thr[epoch],
            "phase_cka_threshold": cka_thr[epoch],
        }
    return out


def label_cell_v2(v: dict, cfg: dict, train: dict) -> dict:
    """Rule v2 on one cell's inputs (a :func:`cell_inputs` value) and its ``train`` section.

    Example:
        >>> cfg = {"loss_fraction": 0.5, "sharp_fraction": 0.5, "mc_k": 1.0,
        ...        "mc_floor_fraction": 0.02, "cka_level": 0.9, "uncertain_band": 0.2}
        >>> v = {"loss": 0.1, "loss_init": 2.3, "loss_std": 0.01, "lambda": 2.0,
        ...      "log_lambda": math.log(2.0), "connectivity": -0.001,
        ...      "connectivity_source": "barrier_aligned", "cka": 0.95}
        >>> label_cell_v2(v, cfg, {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0})["phase"]
        'IV-B'
    """
    bound = stability_bound(train)
    wd = float(train.get("weight_decay") or 0.0)
    sharpness = (v["lambda"] + wd) / bound if math.isfinite(bound) else math.nan
    mc = v["connectivity"]
    tol = max(cfg["mc_k"] * v["loss_std"], cfg["mc_floor_fraction"] * v["loss_init"])
    ratio = v["loss"] / v["loss_init"] if v["loss_init"] > 0 else math.nan
    # each decision: (input over threshold, decided); the input is "q >= 1" when decided True
    qs = {  # each decision's input over its threshold: the decision is True when q >= 1
        "trained": _ratio(cfg["loss_fraction"], ratio),
        "sharp": _ratio(sharpness, cfg["sharp_fraction"]),
        "barrier": _ratio(-mc, tol),
        "cka_large": _ratio(1 - cfg["cka_level"], 1 - v["cka"]),
    }
    decided = {k: None if math.isnan(q) else q >= 1 for k, q in qs.items()}
    phase = label_decisions(decided)
    near = _near(qs, decided, phase, cfg["uncertain_band"])
    return {
        "phase": phase,
        "phase_rule": RULE_V2,
        "phase_trained": decided["trained"],
        "phase_sharp": decided["sharp"],
        "phase_mc": mc,
        "phase_mc_source": v["connectivity_source"],
        "phase_mc_tol": tol,
        "phase_cka": v["cka"],
        "phase_log_lambda": v["log_lambda"],
        "phase_loss_ratio": ratio,
        "phase_sharpness": sharpness,
        "phase_stability_bound": bound,
        "phase_cka_threshold": cfg["cka_level"],
        "phase_uncertain": bool(near),
        "phase_near": ",".join(near),
    }


def _ratio(a: float, b: float) -> float:
    """``a / b`` for a threshold comparison: NaN when either is NaN, ±inf when ``b`` ≤ 0."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if b <= 0:
        return math.inf if a > 0 else -math.inf
    return a / b


def _near(qs: dict, decided: dict, phase: str, band: float) -> list[str]:
    """Decisions within a factor (1 + band) of their threshold whose flip changes the label."""
    out = []
    for key, q in qs.items():
        if decided[key] is None or not (0 < q < math.inf):
            continue
        if abs(math.log(q)) <= math.log1p(band):
            flipped = {**decided, key: not decided[key]}
            if label_decisions(flipped) != phase:
                out.append(key)
    return out


def label_decisions(d: dict) -> str:
    """The phase from the four decisions (True, False or None: unknown input).

    Example:
        >>> label_decisions({"trained": True, "sharp": False, "barrier": True, "cka_large": None})
        'III'
    """
    if d["barrier"] is None or d["trained"] is None:
        return "unknown"
    if not d["trained"] or d["sharp"]:
        return "I" if d["barrier"] else "II"
    if d["sharp"] is None:
        return "unknown"
    if d["barrier"]:
        return "III"
    if d["cka_large"] is None:
        return "IV"
    return "IV-B" if d["cka_large"] else "IV-A"


def label(trained: bool, sharp: bool, mc: float, tol: float, cka: float, cka_thr: float) -> str:
    """The phase of one cell from rule v1's decisions (see the module docstring).

    Example:
        >>> label(trained=True, sharp=False, mc=0.0, tol=0.01, cka=0.95, cka_thr=0.9)
        'IV-B'
    """
    if math.isnan(mc):
        return "unknown"
    if not trained or sharp:
        return "I" if mc < -tol else "II"
    if mc < -tol:
        return "III"
    if math.isnan(cka) or math.isnan(cka_thr):
        return "IV"
    return "IV-B" if cka >= cka_thr else "IV-A"


def describe_rule(cfg: dict) -> str:
    """The rule a recipe's ``landscape.phase`` settings choose, with its thresholds, in words (the
    dataset card quotes it)."""
    tree = (
        "Labels: not trained or sharp → I if mc < −tol (a barrier), else II; trained and flat → "
        "III if mc < −tol, else IV-B if CKA is large, else IV-A."
    )
    if cfg.get("rule", PHASE_RULE) == RULE_V1:
        cka = (
            f"{cfg['cka_threshold']:g}"
            if cfg["cka_threshold"] is not None
            else "the zoo's median CKA at that epoch"
        )
        return (
            f"Rule `{RULE_V1}` (Yang et al. 2021 publish no thresholds; every input is a column): "
            f"trained: mean probe loss ≤ {cfg['loss_fraction']:g} × its mean at initialization; "
            "sharp: log of the mean λ_max > the zoo's median of that at the epoch + "
            f"{cfg['hessian_log_margin']:g}; mc: Bezier mode connectivity when computed, else "
            f"−barrier_mean, ≈ 0 when |mc| ≤ tol = max({cfg['mc_floor']:g}, {cfg['mc_k']:g} × "
            f"the seeds' std of the probe loss); CKA large: ≥ {cka}. " + tree
        )
    return (
        f"Rule `{RULE_V2}`, per grid cell and epoch from the cell's own runs only (Yang et al. "
        "2021 publish no thresholds; every input is a column): trained: mean probe loss / mean "
        f"probe loss at initialization ≤ {cfg['loss_fraction']:g}; sharp: (λ_max + weight decay) / "
        "the optimizer's stability bound (2/lr for SGD, (2 + 2β)/lr with momentum β, "
        f"(2 + 2β)/((1 + 2β)·lr) with Nesterov) ≥ {cfg['sharp_fraction']:g} (Adam has no such "
        "bound: a trained Adam cell is `unknown`); barrier: mc < −tol with tol = max("
        f"{cfg['mc_k']:g} × the seeds' std of the probe loss, {cfg['mc_floor_fraction']:g} × the "
        "initial loss), mc from Bezier mode connectivity when computed, else −(aligned barrier), "
        "else −barrier (`phase_mc_source`); CKA large: mean CKA between seeds ≥ "
        f"{cfg['cka_level']:g}. A cell is uncertain (`phase_uncertain`, `phase_near`) when an "
        f"input lies within a factor 1 + {cfg['uncertain_band']:g} of its threshold and "
        "flipping it would change the label. " + tree
    )
