"""Phase labels of grid cells by the taxonomy of Yang et al. 2021 — our rule, versioned.

Yang et al. 2021 ("Taxonomizing local versus global structure in neural network loss
landscapes") describe five phases but publish no numeric thresholds (phases were read off heat
maps; only the sign of mc is a hard rule). Rule ``yang2021-zoo-v1``, per cell (runs that differ
only by seed) and epoch:

1. ``trained``: mean probe loss ≤ ``loss_fraction`` × mean probe loss at initialization.
2. ``sharp``: log λ_max (mean over seeds) > the zoo's median log λ_max at that epoch +
   ``hessian_log_margin``.
3. ``mc``: Bezier mode connectivity when computed, else −(linear barrier) (a barrier > 0 is
   mc < 0); it counts as ≈ 0 when ``|mc| ≤ tol = max(mc_floor, mc_k × std over seeds of the
   probe loss)``.
4. Labels: not trained or sharp → ``I`` if mc < −tol else ``II`` (poorly trained; globally
   poorly / well connected). Trained and flat → ``III`` if mc < −tol, else ``IV-B`` if CKA ≥ the
   CKA threshold (``cka_threshold``, default the zoo's median CKA at that epoch), else ``IV-A``.

Every input is kept in the row (``phase_*`` columns) so users can re-threshold.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

PHASE_RULE = "yang2021-zoo-v1"
PHASES = ("I", "II", "III", "IV-A", "IV-B")


def cell_inputs(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Per (cell_id, epoch): the rule's raw inputs, from landscape rows (one per checkpoint)."""
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
        out[key] = {
            "loss": statistics.fmean(loss) if loss else math.nan,
            "loss_init": statistics.fmean(r["probe_loss_init"] for r in members),
            "loss_std": statistics.stdev(loss) if len(loss) > 1 else 0.0,
            "log_lambda": math.log(statistics.fmean(eig))
            if eig and statistics.fmean(eig) > 0
            else math.nan,
            "mc": mc if _finite(mc) else math.nan,
            "cka": first.get("cka_mean") if _finite(first.get("cka_mean")) else math.nan,
        }
    return out


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _median(values) -> float:
    good = [v for v in values if math.isfinite(v)]
    return statistics.median(good) if good else math.nan


def label_cells(inputs: dict[tuple[str, int], dict], cfg: dict) -> dict[tuple[str, int], dict]:
    """Apply the rule to every cell; returns per cell its label and the thresholds used."""
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
            "phase_rule": PHASE_RULE,
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


def label(trained: bool, sharp: bool, mc: float, tol: float, cka: float, cka_thr: float) -> str:
    """The phase of one cell from the rule's decisions (see the module docstring).

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
    """The rule with its settings, in words (the dataset card quotes it)."""
    cka = (
        f"{cfg['cka_threshold']:g}"
        if cfg["cka_threshold"] is not None
        else "the zoo's median CKA at that epoch"
    )
    return (
        f"Rule `{PHASE_RULE}`, per grid cell and epoch (Yang et al. 2021 publish no thresholds; "
        "this rule is ours, and every input is a column). trained: mean probe loss ≤ "
        f"{cfg['loss_fraction']:g} × its mean at initialization. sharp: log of the mean λ_max > "
        "the zoo's median of that at the epoch + "
        f"{cfg['hessian_log_margin']:g}. mc: Bezier mode connectivity when computed, else "
        "−barrier_mean; it counts as ≈ 0 when |mc| ≤ tol = max("
        f"{cfg['mc_floor']:g}, {cfg['mc_k']:g} × the seeds' std of the probe loss). Labels: not "
        "trained or sharp → I if mc < −tol, else II; trained and flat → III if mc < −tol, else "
        f"IV-B if the cell's mean CKA ≥ {cka}, else IV-A."
    )
