"""The card's phase sections: coverage of the phases (which, where the label changes, which
cells are uncertain), as Markdown. Kept apart from :mod:`zoo.stages.build.card`, which calls
it once per section."""

from __future__ import annotations

import pyarrow as pa

from zoo.stages.landscape.coverage import Coverage, phase_coverage

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
