"""The card's phase sections, as Markdown: coverage of the phases (which, where the label
changes, which cells are uncertain) and the studies (effects per phase, the test of whether the
phases differ, a figure). Kept apart from :mod:`zoo.stages.build.card`, which calls it once per
section."""

from __future__ import annotations

import math

import pyarrow as pa

from zoo.stages.landscape.coverage import Coverage, phase_coverage
from zoo.stages.landscape.phases import PHASES
from zoo.stages.study import COLUMN_DOCS as STUDY_DOCS

COVERAGE_COLUMNS = ("cell_id", "epoch", "phase", "phase_rule", "phase_uncertain", "phase_near")


def axis_name(column: str) -> str:
    """Dataset column ``train__batch_size`` -> recipe key ``train.batch_size``."""
    return column.replace("__", ".", 1)


def coverage_of_tables(tables: list[pa.Table]) -> Coverage | None:
    """The phase coverage of a zoo's built tables (one per config), or None without phases."""
    rows = []
    for table in tables:
        if "phase" not in table.column_names:
            continue
        keep = [c for c in table.column_names if c in COVERAGE_COLUMNS or "__" in c]
        rows += table.select(keep).to_pylist()
    return phase_coverage(rows)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def coverage_summary(cov: Coverage) -> str:
    """One sentence: the rule, the epoch, the cells, the phases covered and missing."""
    counts = ", ".join(f"{p} ({n})" for p, n in _ordered(cov.counts))
    missing = ", ".join(cov.missing) or "none"
    return (
        f"Rule `{cov.rule}` at epoch {cov.epoch}: {cov.cells} grid cells labelled {counts}; "
        f"{len(cov.covered)} of 5 phases covered, missing: {missing}."
    )


def _ordered(counts: dict[str, int]) -> list[tuple[str, int]]:
    order = ["I", "II", "III", "IV-A", "IV-B", "IV", "unknown"]
    return sorted(counts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)


def render_coverage(cov: Coverage | None) -> str:
    """The card's "Phase coverage" section ("" without phase labels)."""
    if cov is None:
        return ""
    parts = ["## Phase coverage", coverage_summary(cov)]
    if cov.steps:
        rows = [
            [
                f"`{axis_name(s.axis)}`",
                f"{s.low} → {s.high}",
                f"{s.changed} of {s.lines}",
                ", ".join(f"{k.replace('->', ' → ')} ×{n}" for k, n in sorted(s.changes.items()))
                or "–",
            ]
            for s in cov.steps
        ]
        parts.append(
            "Where the label changes along each grid axis (a line: the cells that share every "
            "other axis value):\n\n"
            + _table(["axis", "step", "lines that change", "changes"], rows)
        )
    if cov.uncertain:
        header = [f"`{axis_name(a)}`" for a in cov.axes] + ["phase", "near its threshold"]
        rows = [[u.values.get(a) for a in cov.axes] + [u.phase, u.near] for u in cov.uncertain]
        parts.append(
            f"{len(cov.uncertain)} of {cov.cells} cells are uncertain: an input lies within the "
            "rule's band (`uncertain_band`) of its threshold, and flipping that decision would "
            "change the label:\n\n" + _table(header, rows)
        )
    elif cov.rule.endswith("v2"):
        parts.append("No cell is uncertain (no input within the rule's band of a threshold).")
    return "\n\n".join(parts)


def _effect_cell(per_phase: dict, phase: str) -> str:
    if phase not in per_phase:
        return "–"
    n, mean, std = per_phase[phase]
    spread = f" ± {std:.3f}" if math.isfinite(std) else ""
    return f"{mean:+.3f}{spread} ({n})"


def render_effects(effects) -> str:
    """A Markdown table: one row per effect, one column per phase, the test's p and η²."""
    phases = [p for p in PHASES if any(p in e.per_phase for e in effects)]
    rows = [
        [
            f"`{e.column}`",
            *(_effect_cell(e.per_phase, p) for p in phases),
            f"{e.p_value:.4f}" if math.isfinite(e.p_value) else "–",
            f"{e.eta2:.2f}" if math.isfinite(e.eta2) else "–",
        ]
        for e in effects
    ]
    return _table(["effect", *phases, "p (permutation)", "η²"], rows)


def render_studies(studies) -> str:
    """The card's "Studies" section: per study, its effects per phase, the test of whether the
    phases differ, its figure and its columns ("" without studies)."""
    if not studies:
        return ""
    perms = next((e.permutations for s in studies for e in s.effects), 0)
    parts = [
        "## Studies",
        "What the phases mean downstream, computed by `zoo study OUT KIND` on this zoo's "
        "checkpoints. Each study is its own config (one split, `train`), one row per cell "
        "(averaging) or per checkpoint (pruning: per checkpoint and sparsity), with the cell's "
        "phase. Tables: per phase, the mean effect ± its standard deviation across cells "
        "(cells); p: a permutation test of whether the phases differ (the one-way ANOVA F of "
        f"the cell effects against {perms:,} shuffles of the phase labels across cells); η²: "
        "the share of the spread between cells that the phases explain.",
    ]
    for s in studies:
        parts.append(f"### {s.kind} (`{s.name}`, {s.counts['train']:,} rows)")
        parts.append(STUDY_TEXT.get(s.kind, ""))
        if s.effects:
            parts.append(f"At epoch {s.effects[0].epoch}:\n\n" + render_effects(s.effects))
        if s.image:
            parts.append(f"![{s.name}]({s.image})")
        docs = STUDY_DOCS.get(s.kind, {})
        columns = [c for c in s.table.column_names if c in docs]
        parts.append(_table(["column", "meaning"], [[f"`{c}`", docs[c]] for c in columns]))
    return "\n\n".join(p for p in parts if p)


STUDY_TEXT = {
    "averaging": "Each cell's seeds averaged in weight space, plainly and after weight matching "
    "every seed to the first (Git Re-Basin), scored on the test set against the mean of the "
    "seeds themselves. A gain near 0 means the seeds share a basin (up to permutation).",
    "pruning": "Global magnitude pruning of the weight matrices at each sparsity, scored as "
    "pruned and after a short fine-tune with the mask fixed (sparsity 0: the fine-tune alone). "
    "A drop near 0 means the checkpoint is robust to losing its smallest weights.",
    "transfer": "Each checkpoint's hidden layers with a fresh readout, trained on a second task "
    "for a fixed budget: the readout alone (linear probe) and every weight (full fine-tune), "
    "against the same budget from the run's initialization (from scratch; probe: random "
    "features). A gain above 0 means the checkpoint is a better start than its initialization.",
}
