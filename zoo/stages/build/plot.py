"""Phase diagrams: heatmaps of a metric over two grid axes, with phase labels overlaid."""

from __future__ import annotations

import io
import math
import statistics
from collections import defaultdict
from pathlib import Path

from zoo.store.fs import atomic_write_bytes

DEFAULT_METRICS = (
    "test_acc",
    "hessian_top_eig",
    "hessian_trace",
    "cka_mean",
    "barrier_mean",
    "barrier_aligned_mean",
    "mc_mean",
    "distance_from_init_rel",
    "alpha_mean",
)
LOG_METRICS = {"hessian_top_eig", "hessian_trace"}


def column_of(key: str) -> str:
    """Recipe key ``train.batch_size`` -> dataset column ``train__batch_size``."""
    return key.replace(".", "__")


def cell_grid(rows: list[dict], x: str, y: str, metric: str, epoch: int):
    """Mean of ``metric`` per (x, y) grid point at ``epoch``, and the phase labels seen there."""
    values, phases = defaultdict(list), defaultdict(set)
    for row in rows:
        if row.get("epoch") != epoch or not _number(row.get(metric)):
            continue
        key = (row[column_of(x)], row[column_of(y)])
        values[key].append(row[metric])
        if row.get("phase"):
            phases[key].add(row["phase"])
    xs = sorted({k[0] for k in values})
    ys = sorted({k[1] for k in values})
    grid = [
        [statistics.fmean(values[(a, b)]) if values[(a, b)] else math.nan for a in xs] for b in ys
    ]
    labels = [["/".join(sorted(phases[(a, b)])) for a in xs] for b in ys]
    return xs, ys, grid, labels


def plot_phase_diagram(
    rows: list[dict], x: str, y: str, metric: str, epoch: int, path: Path, title: str = ""
) -> Path | None:
    """Draw one heatmap PNG; returns its path, or None when the metric has no values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    xs, ys, grid, labels = cell_grid(rows, x, y, metric, epoch)
    if not xs or not ys:
        return None
    data = np.array(grid, dtype=float)
    if metric in LOG_METRICS:
        data = np.log10(np.where(data > 0, data, np.nan))
    size = (max(4.8, 1.6 + 0.9 * len(xs)), max(3.2, 1.2 + 0.7 * len(ys)))
    fig, ax = plt.subplots(figsize=size, dpi=110)
    image = ax.imshow(data, origin="lower", cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=("log10 " if metric in LOG_METRICS else "") + metric)
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    for i in range(len(ys)):
        for j in range(len(xs)):
            if labels[i][j]:
                ax.text(
                    j,
                    i,
                    labels[i][j],
                    ha="center",
                    va="center",
                    color="white",
                    fontsize=9,
                    fontweight="bold",
                )
    ax.set_title(title or f"{metric} at epoch {epoch}", fontsize=10)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())  # a local folder or the store's URL
    return path


def _number(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def plot_metrics(
    rows: list[dict], x: str, y: str, epoch: int, folder: Path, prefix: str, metrics=DEFAULT_METRICS
) -> list[Path]:
    """One heatmap per metric present in ``rows``; returns the written paths."""
    written = []
    for metric in metrics:
        if not any(_number(row.get(metric)) for row in rows):
            continue
        path = folder / f"{prefix}{metric}.png"
        title = f"{metric} at epoch {epoch} (labels: phase)"
        if plot_phase_diagram(rows, x, y, metric, epoch, path, title):
            written.append(path)
    return written
