"""The averaging study: does averaging a cell's seeds in weight space work?

Per grid cell and epoch: the seeds' endpoints are evaluated on the task's test set (their mean
and spread), then their plain average and, with ``aligned``, their average after weight matching
every seed to the first (Git Re-Basin, :func:`zoo.weightspace.align.align`). A cell whose seeds
lie in one basin (up to permutation) keeps its accuracy when averaged; one whose seeds are
separated by barriers loses it. All averages of a batch are evaluated as one population.
"""

from __future__ import annotations

import math
import statistics

import pyarrow as pa
import torch

from zoo.naming import checkpoint_id
from zoo.stages.study.context import StudyContext
from zoo.weightspace.align import align

COLUMN_DOCS = {
    "seeds": "seeds of the cell averaged (those with finite weights)",
    "endpoint_acc": "mean test accuracy of the seeds' own checkpoints",
    "endpoint_acc_std": "std of the seeds' test accuracy",
    "endpoint_loss": "mean test loss of the seeds' own checkpoints",
    "avg_acc": "test accuracy of the plain average of the seeds' weights",
    "avg_loss": "test loss of the plain average",
    "avg_aligned_acc": "test accuracy of the average after weight matching each seed to the first",
    "avg_aligned_loss": "test loss of the aligned average",
    "avg_acc_gain": "avg_acc − endpoint_acc",
    "avg_aligned_acc_gain": "avg_aligned_acc − endpoint_acc",
}


def run_averaging(ctx: StudyContext) -> pa.Table:
    """One row per (cell, epoch) of the batch (see the module docstring)."""
    aligned = ctx.batch.settings["aligned"]
    cells: dict[str, list] = {}
    for run in ctx.batch.runs:
        cells.setdefault(run.cell_id, []).append(run)
    rows = []
    for epoch in ctx.batch.epochs:
        models, spans = [], []  # every endpoint and average of the epoch: one population
        for cell, runs in cells.items():
            flats = [ctx.weights[checkpoint_id(r.run_id, epoch)] for r in runs]
            flats = torch.stack([f for f in flats if bool(torch.isfinite(f).all())])
            start = len(models)
            models += list(flats)
            if len(flats) > 1:
                models.append(flats.mean(0))
                if aligned:
                    matched = align(flats[1:], flats[0], ctx.layout, seed=epoch).weights
                    models.append(torch.cat([flats[:1], matched]).mean(0))
            spans.append((cell, runs, start, len(flats)))
        scores = ctx.evaluate(torch.stack(models)) if models else {}
        rows += [
            _row(cell, runs, epoch, start, n, scores, aligned) for cell, runs, start, n in spans
        ]
    return pa.Table.from_pylist(rows)


def _row(cell, runs, epoch, start, n, scores, aligned) -> dict:
    acc = scores["acc"][start : start + n].tolist() if n else []
    loss = scores["loss"][start : start + n].tolist() if n else []
    row = {
        "cell_id": cell,
        "epoch": epoch,
        "run_ids": [r.run_id for r in runs],
        "seeds": n,
        "endpoint_acc": statistics.fmean(acc) if acc else math.nan,
        "endpoint_acc_std": statistics.stdev(acc) if n > 1 else math.nan,
        "endpoint_loss": statistics.fmean(loss) if loss else math.nan,
    }
    names = ["avg"] + (["avg_aligned"] if aligned else [])
    for k, name in enumerate(names):
        i = start + n + k
        ok = n > 1
        row[f"{name}_acc"] = float(scores["acc"][i]) if ok else math.nan
        row[f"{name}_loss"] = float(scores["loss"][i]) if ok else math.nan
        row[f"{name}_acc_gain"] = row[f"{name}_acc"] - row["endpoint_acc"]
    return row
