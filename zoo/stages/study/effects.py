"""Do the phases matter? A study's effect per phase, and a permutation test across phases.

Cells are the units: a study's effect column is first averaged over the rows of each grid cell
(its seeds and, for per-checkpoint studies, their checkpoints) at one epoch, so a cell with more
seeds does not weigh more. Per phase: the number of cells, the mean of their effects and the
standard deviation across cells. Whether the phases differ: the one-way ANOVA statistic F of
the cell effects grouped by phase, against its distribution when the phase labels are shuffled
across cells (a permutation test: no normality assumed; p = (1 + #{F_perm ≥ F}) / (1 + n)).
η² = between-phase / total sum of squares says how much of the spread the phases explain.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np

from zoo import streams
from zoo.stages.landscape.phases import PHASES
from zoo.streams import numpy_rng

# study -> the effect columns a summary reports, each with what it means
EFFECTS: dict[str, dict[str, str]] = {
    "averaging": {
        "avg_acc_gain": "test accuracy of the seeds' plain average − mean of the endpoints",
        "avg_aligned_acc_gain": "the same after weight matching the seeds",
    },
    "pruning": {
        "pruned_acc_drop": "test accuracy lost by pruning (no fine-tune)",
        "finetuned_acc_drop": "test accuracy lost after the short fine-tune",
    },
    "transfer": {
        "full_gain": "second-task accuracy of the full fine-tune − training from scratch",
        "probe_gain": "second-task accuracy of the linear probe − probe of random features",
    },
}


@dataclass(frozen=True)
class PhaseEffect:
    """One effect column summarized per phase, with the test of whether the phases differ."""

    column: str
    epoch: int
    per_phase: dict[str, tuple[int, float, float]]  # phase -> (cells, mean, std across cells)
    f_stat: float
    p_value: float
    eta2: float
    permutations: int

    def to_dict(self) -> dict:
        return {
            "column": self.column,
            "epoch": self.epoch,
            "per_phase": {k: list(v) for k, v in self.per_phase.items()},
            "f_stat": self.f_stat,
            "p_value": self.p_value,
            "eta2": self.eta2,
            "permutations": self.permutations,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PhaseEffect:
        per = {k: (int(v[0]), float(v[1]), float(v[2])) for k, v in d["per_phase"].items()}
        return cls(
            d["column"],
            int(d["epoch"]),
            per,
            float(d["f_stat"]),
            float(d["p_value"]),
            float(d["eta2"]),
            int(d["permutations"]),
        )


def cell_effects(rows: list[dict], column: str, epoch: int) -> dict[str, tuple[str, float]]:
    """Per cell: its phase and the mean of ``column`` over its rows at ``epoch`` (rows without
    a finite value or a taxonomy phase are left out)."""
    values, phase = defaultdict(list), {}
    for r in rows:
        v = r.get(column)
        if r.get("epoch") != epoch or r.get("phase") not in PHASES:
            continue
        if isinstance(v, int | float) and math.isfinite(v):
            values[r["cell_id"]].append(v)
            phase[r["cell_id"]] = r["phase"]
    return {c: (phase[c], statistics.fmean(v)) for c, v in values.items()}


def f_statistic(values: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """One-way ANOVA F and η² of ``values`` grouped by the integer labels ``groups``."""
    labels = np.unique(groups)
    k, n = len(labels), len(values)
    if k < 2 or n <= k:
        return math.nan, math.nan
    grand = values.mean()
    between = float(
        sum((groups == g).sum() * (values[groups == g].mean() - grand) ** 2 for g in labels)
    )
    within = float(
        sum(((values[groups == g] - values[groups == g].mean()) ** 2).sum() for g in labels)
    )
    total = between + within
    eta2 = between / total if total > 0 else math.nan
    if within <= 0:
        return (math.inf if between > 0 else math.nan), eta2
    return (between / (k - 1)) / (within / (n - k)), eta2


def phase_effect(
    rows: list[dict],
    column: str,
    epoch: int | None = None,
    permutations: int = 9999,
    seed: int = 0,
) -> PhaseEffect | None:
    """Summarize ``column`` per phase at ``epoch`` (default: the last epoch with a phase) and
    test whether the phases differ (see the module docstring); None without labelled rows.

    Example:
        >>> rows = [{"cell_id": f"c{i}", "epoch": 1, "phase": p, "gain": g}
        ...         for i, (p, g) in enumerate([("III", 0.0), ("III", 0.1), ("IV-B", 0.9),
        ...                                     ("IV-B", 1.0)])]
        >>> effect = phase_effect(rows, "gain", permutations=999)
        >>> effect.per_phase["IV-B"][:2], round(effect.eta2, 3)
        ((2, 0.95), 0.988)
    """
    epochs = [r["epoch"] for r in rows if r.get("phase") in PHASES]
    if not epochs:
        return None
    epoch = max(epochs) if epoch is None else epoch
    cells = cell_effects(rows, column, epoch)
    if not cells:
        return None
    by_phase = defaultdict(list)
    for phase, value in cells.values():
        by_phase[phase].append(value)
    per_phase = {
        p: (len(v), statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else math.nan)
        for p in PHASES
        if (v := by_phase.get(p))
    }
    values = np.array([v for _, v in cells.values()])
    groups = np.array([PHASES.index(p) for p, _ in cells.values()])
    f, eta2 = f_statistic(values, groups)
    p_value = _permutation_p(values, groups, f, permutations, seed)
    return PhaseEffect(column, epoch, per_phase, f, p_value, eta2, permutations)


def _permutation_p(values, groups, f: float, permutations: int, seed: int) -> float:
    """P(F of shuffled phase labels ≥ the observed F), with the observed one counted; the
    shuffles are scored at once (group sizes do not change under a shuffle)."""
    if math.isnan(f) or permutations < 1:
        return math.nan
    rng = numpy_rng(seed, streams.STUDY_PERMUTATION)
    shuffled = np.stack([rng.permutation(groups) for _ in range(permutations)])  # (R, n)
    n, labels = len(values), np.unique(groups)
    k, total = len(labels), float(((values - values.mean()) ** 2).sum())
    between = _between(shuffled, values, groups, labels)
    within = total - between
    with np.errstate(divide="ignore", invalid="ignore"):
        f_perm = np.where(within > 1e-12 * total, (between / (k - 1)) / (within / (n - k)), np.inf)
    tol = 1e-9 * abs(f) if math.isfinite(f) else 0.0
    hits = int((f_perm >= f - tol).sum())
    return (1 + hits) / (1 + permutations)


def _between(shuffled: np.ndarray, values: np.ndarray, groups, labels) -> np.ndarray:
    """Between-group sum of squares of every shuffle ``(R,)``: Σ_g S_g² / n_g − (Σ v)² / n."""
    out = -(values.sum() ** 2) / len(values)
    for g in labels:
        sums = (shuffled == g).astype(float) @ values  # (R,)
        out = out + sums**2 / (groups == g).sum()
    return out


def study_effects(kind: str, rows: list[dict], permutations: int = 9999) -> list[PhaseEffect]:
    """Every effect of :data:`EFFECTS` for a study's rows; pruning: one per sparsity (its
    ``column`` reads ``pruned_acc_drop @ 0.9``)."""
    if kind != "pruning":
        found = (phase_effect(rows, c, permutations=permutations) for c in EFFECTS[kind])
        return [e for e in found if e is not None]
    out = []
    for sparsity in sorted({r["sparsity"] for r in rows} - {0.0}):
        part = [r for r in rows if r["sparsity"] == sparsity]
        for column in EFFECTS[kind]:
            effect = phase_effect(part, column, permutations=permutations)
            if effect is not None:
                out.append(replace(effect, column=f"{column} @ {sparsity:g}"))
    return out
