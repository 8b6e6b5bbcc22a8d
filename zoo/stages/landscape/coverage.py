"""Phase coverage of a zoo: which phases its cells reach, where along each grid axis the label
changes, and which cells carry an uncertain label.

A zoo structured by phases is only useful if it covers them; :func:`phase_coverage` says how
far it does, from the labelled rows alone (any rule; ``phase_uncertain``/``phase_near`` come
from rule v2). Grid axes are the hyperparameter columns (``<section>__<key>``) that vary
between cells; a line along an axis is the cells that share every other axis value.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from zoo.stages.landscape.phases import PHASES


@dataclass(frozen=True)
class AxisStep:
    """Between two consecutive values of one axis: in how many lines the label changes.

    Attributes:
        axis: the hyperparameter column (``model__width``).
        low, high: the two consecutive values.
        lines: lines along the axis that hold both values.
        changes: ``"III->IV-B"`` -> how many of those lines change so.
    """

    axis: str
    low: object
    high: object
    lines: int
    changes: dict[str, int]

    @property
    def changed(self) -> int:
        return sum(self.changes.values())

    def to_dict(self) -> dict:
        return {
            "axis": self.axis,
            "low": self.low,
            "high": self.high,
            "lines": self.lines,
            "changes": dict(self.changes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> AxisStep:
        return cls(d["axis"], d["low"], d["high"], int(d["lines"]), dict(d["changes"]))


@dataclass(frozen=True)
class UncertainCell:
    """A cell whose label hangs on an input near its threshold."""

    values: dict[str, object]  # axis -> value
    phase: str
    near: str  # the decisions near their thresholds, comma-separated

    def to_dict(self) -> dict:
        return {"values": dict(self.values), "phase": self.phase, "near": self.near}

    @classmethod
    def from_dict(cls, d: dict) -> UncertainCell:
        return cls(dict(d["values"]), d["phase"], d["near"])


@dataclass(frozen=True)
class Coverage:
    """The phases a zoo covers at one epoch (see the module docstring)."""

    epoch: int
    rule: str
    cells: int
    counts: dict[str, int]  # phase -> cells (``unknown``/``IV`` included where they occur)
    axes: tuple[str, ...]
    steps: tuple[AxisStep, ...]
    uncertain: tuple[UncertainCell, ...]

    @property
    def covered(self) -> tuple[str, ...]:
        """The phases of the taxonomy with at least one cell, in taxonomy order."""
        return tuple(p for p in PHASES if self.counts.get(p))

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(p for p in PHASES if not self.counts.get(p))

    def to_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "rule": self.rule,
            "cells": self.cells,
            "counts": dict(self.counts),
            "axes": list(self.axes),
            "steps": [s.to_dict() for s in self.steps],
            "uncertain": [u.to_dict() for u in self.uncertain],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Coverage:
        return cls(
            int(d["epoch"]),
            d["rule"],
            int(d["cells"]),
            dict(d["counts"]),
            tuple(d["axes"]),
            tuple(AxisStep.from_dict(s) for s in d["steps"]),
            tuple(UncertainCell.from_dict(u) for u in d["uncertain"]),
        )


def phase_coverage(rows: list[dict], epoch: int | None = None) -> Coverage | None:
    """The coverage of labelled rows at ``epoch`` (default: the last labelled epoch).

    Args:
        rows: dataset rows (dicts) with ``cell_id``, ``epoch``, ``phase`` and the
            hyperparameter columns; rows without a phase are ignored.
        epoch: the epoch to read.
    Returns:
        a :class:`Coverage`, or None when no row has a phase.

    Example:
        >>> rows = [{"cell_id": c, "epoch": 5, "phase": p, "model__width": w}
        ...         for c, p, w in (("a", "III", 8), ("b", "IV-B", 64))]
        >>> cov = phase_coverage(rows)
        >>> cov.covered, cov.steps[0].changes
        (('III', 'IV-B'), {'III->IV-B': 1})
    """
    labelled = [r for r in rows if r.get("phase")]  # "" (or null): not annotated
    if not labelled:
        return None
    epoch = max(r["epoch"] for r in labelled) if epoch is None else epoch
    cells = {r["cell_id"]: r for r in labelled if r["epoch"] == epoch}
    if not cells:
        return None
    axes = grid_axes(list(cells.values()))
    steps = tuple(s for axis in axes for s in _axis_steps(cells, axes, axis))
    uncertain = tuple(
        UncertainCell({a: r.get(a) for a in axes}, r["phase"], r.get("phase_near") or "")
        for r in sorted(cells.values(), key=lambda r: _sort_key([r.get(a) for a in axes]))
        if r.get("phase_uncertain")
    )
    rule = next(iter(cells.values())).get("phase_rule") or ""
    counts = Counter(r["phase"] for r in cells.values())
    return Coverage(epoch, rule, len(cells), dict(counts), axes, steps, uncertain)


def grid_axes(cells: list[dict]) -> tuple[str, ...]:
    """Hyperparameter columns (``<section>__<key>``) whose value differs between cells."""
    keys = sorted({k for r in cells for k in r if "__" in k})
    return tuple(k for k in keys if len({_hashable(r.get(k)) for r in cells}) > 1)


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def _sort_key(values: list) -> list:
    """Order mixed values (numbers, strings, None) without comparing across types."""
    return [
        (v is None, isinstance(v, str), str(v) if isinstance(v, str | list) else v or 0)
        for v in values
    ]


def _axis_steps(cells: dict[str, dict], axes: tuple[str, ...], axis: str) -> list[AxisStep]:
    """Per pair of consecutive values of ``axis``: the lines holding both and how they change."""
    lines: dict[tuple, dict] = defaultdict(dict)
    for r in cells.values():
        rest = tuple(_hashable(r.get(a)) for a in axes if a != axis)
        lines[rest][_hashable(r.get(axis))] = r["phase"]
    values = sorted({v for line in lines.values() for v in line}, key=lambda v: _sort_key([v]))
    steps = []
    for low, high in zip(values, values[1:], strict=False):
        both = [line for line in lines.values() if low in line and high in line]
        changes = Counter(f"{ln[low]}->{ln[high]}" for ln in both if ln[low] != ln[high])
        steps.append(AxisStep(axis, low, high, len(both), dict(changes)))
    return steps
