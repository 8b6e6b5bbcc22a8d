"""The build of a signal zoo (issue 14): what the card says about rendering each network, its
column docs, and its figures (images beside their renderings, the PSNR distribution).

The card must let someone without ``zoo`` render every row from its ``weights`` and
``layout.json`` alone: :func:`render_snippet` writes that code (plain torch), with the
coordinate convention, the value scaling and ``w0`` spelled out in :func:`signal_section`;
``tests/test_signal_zoo.py`` runs it on a built zoo.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from zoo.layout import Layout
from zoo.naming import IMAGES_DIR, REPO_PLACEHOLDER
from zoo.nn.architectures import to_module
from zoo.recipe import Recipe, RunConfig, signal_tasks
from zoo.stages.build.card import ConfigSummary
from zoo.store.fs import open_file
from zoo.tasks import Task, load_task
from zoo.tasks.signals import coordinate_grid

RENDERINGS = "inr_renderings.png"
PSNR = "inr_psnr.png"
MAX_SHOWN = 8

SIGNAL_COLUMN_DOCS = {
    "train_loss": "mean squared error of the network's outputs against the signal's values "
    "(scaled to [-1, 1]) at the training coordinates",
    "test_loss": "the same at the test coordinates (inr_image without task.holdout: the whole "
    "image again, so equal to train_loss; inr_sinusoid: the midpoints between training points)",
    "train_psnr": "10 log10(2² / train_loss) in dB: the PSNR of the signal in [0, 1] with peak 1",
    "test_psnr": "10 log10(2² / test_loss) in dB",
    "gen_gap_loss": "test_loss − train_loss",
    "image_index": "the fitted image's row in the source split (task.split all: the train rows, "
    "then the test rows)",
    "label": "the fitted image's class label in the source",
    "signal_frequency": "f of the fitted sinusoid a sin(2π f t + φ) (periods per unit t)",
    "signal_amplitude": "a of the fitted sinusoid",
    "signal_phase": "φ of the fitted sinusoid, in [0, 2π)",
}

_ACTIVATIONS = {
    "relu": "torch.relu",
    "tanh": "torch.tanh",
    "sigmoid": "torch.sigmoid",
    "gelu": "torch.nn.functional.gelu",
    "leaky_relu": "torch.nn.functional.leaky_relu",
    "sine": "torch.sin",
}


def is_signal_zoo(recipe: Recipe) -> bool:
    """Whether the recipe's runs fit one signal each (a task with ``task.index``)."""
    return recipe.resolved["task"]["name"] in signal_tasks()


# --- the card -------------------------------------------------------------------------------------


def render_snippet(config: str, layout: Layout, shape: tuple[int, ...], image: bool) -> str:
    """Plain-torch code that renders a row from its weights and ``layout.json`` (no ``zoo``)."""
    m = layout.model
    if m["arch"] == "siren":
        encode = '    w0 = layout["model"]["w0"]  # SIREN\'s omega_0\n'
        act, scale = "torch.sin", "w0 * "
    else:
        encode = (
            '    freq = math.pi * 2.0 ** torch.arange(layout["model"]["frequencies"])  # (L,)\n'
            "    z = (h[:, None, :] * freq[:, None]).reshape(len(h), -1)  # j outer, k inner\n"
            "    h = torch.cat([torch.sin(z), torch.cos(z)], dim=1)  # Fourier features\n"
        )
        act, scale = _ACTIVATIONS[m["activation"]], ""
    finish = (
        "    return ((out + 1) / 2).T.reshape(-1, *shape)  # (C, H, W) intensities in [0, 1]"
        if image
        else "    return out.T.reshape(-1, *shape)  # (C, T) values in [-1, 1]"
    )
    return (
        "import json, math\n\nimport datasets, torch\n\n"
        f'folder = "{REPO_PLACEHOLDER}"  # a local copy: zoo pull, or git clone the repo\n'
        f'layout = json.load(open(f"{{folder}}/layout.json"))["{config}"]\n'
        f'row = datasets.load_dataset(folder, "{config}", split="train")[0]\n\n\n'
        f"def render(weights, layout, shape={tuple(shape)!r}):\n"
        "    w = torch.as_tensor(weights, dtype=torch.float64)\n"
        '    spans = zip(layout["names"], layout["shapes"], layout["offsets"])\n'
        "    p = {n: w[o : o + math.prod(s)].reshape(s) for n, s, o in spans}\n"
        "    axes = [torch.linspace(-1, 1, n, dtype=torch.float64) for n in shape]\n"
        '    h = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(shape))\n'
        f"{encode}"
        '    for i in range(1, layout["model"]["depth"] + 1):\n'
        f'        h = {act}({scale}(h @ p[f"fc{{i}}.weight"].T + p[f"fc{{i}}.bias"]))\n'
        '    out = h @ p["out.weight"].T + p["out.bias"]  # (points, C) in [-1, 1]\n'
        f"{finish}\n\n\n"
        'signal = render(row["weights"], layout)'
    )


def _convention(task: Task, layout: Layout) -> str:
    shape = task.signal.shape
    grid = " × ".join(map(str, shape))
    axes = ", ".join(f"u_{i} = -1 + 2 k_{i} / ({n} - 1)" for i, n in enumerate(shape))
    if task.name == "inr_image":
        values = (
            "The output channel `c` at pixel `(r, col)` is `2 v - 1` for the pixel's intensity "
            "`v` in [0, 1] (8-bit sources: `v = p / 255`; scikit-learn's digits: `v = p / 16`): "
            f"{layout.model['n_classes']} channel(s), so `(out + 1) / 2` is the image. Input "
            "`(u_0, u_1)` is (row, column): pixel `(r, col)` is grid point `r * W + col`."
        )
    else:
        values = (
            "The output is the signal's value `a sin(2π f t + φ)` at `t = u_0`; the coefficients "
            "are the row's `signal_*` columns. Training points are the even grid points (both "
            "ends included), test points the odd ones (the midpoints)."
        )
    model = layout.model
    net = (
        f"SIREN: every hidden layer computes `h ← sin(w0 (W h + b))` with `w0 = {model['w0']}` "
        "(`model.w0`, also in `layout.json`), the readout `out = W h + b` is linear."
        if model["arch"] == "siren"
        else f"A Fourier-feature MLP: `γ(v) = [sin(π 2^j v_k)]_(j,k) ++ [cos(π 2^j v_k)]_(j,k)` "
        f"for `j = 0 .. {model['frequencies'] - 1}` (j outer, k inner), then hidden layers "
        f"`h ← {model['activation']}(W h + b)` and a linear readout."
    )
    return (
        f"Each network maps a coordinate on the {grid} grid to the signal's value there. Grid "
        f"point `(k_0, …)` has coordinates `{axes}` (each axis spans [-1, 1], ends included), "
        f"listed in row-major order. {values} {net} Parameters are stored in PyTorch's "
        "`(out, in)` order (`layout.json`)."
    )


def signal_section(recipe: Recipe, config: str, layout: Layout, first: Task) -> str:
    """The card's "Rendering a network" section for a signal zoo."""
    res = recipe.resolved
    task = res["task"]
    if first.name == "inr_image":
        which = (
            f"Each run fits one image of `{task['source']}` (split `{task['split']}`): "
            f"`task.index` k is the k-th image of the `{task['order']}` order (seed "
            f"`task.order_seed`), its row in the source is the `image_index` column and its "
            "class the `label` column; the seeds of a grid cell are that image's views "
            "(networks fitted from different inits)."
        )
    else:
        which = (
            "Each run fits one sinusoid, drawn for its `task.index`; its coefficients are the "
            "`signal_frequency`, `signal_amplitude` and `signal_phase` columns (regression targets "
            "for weight-space models)."
        )
    init = (
        "Every network of a signal starts from its own draw (seed and `task.index`)."
        if not task.get("shared_init")
        else "View s of every signal starts from the same weights (seed s)."
    )
    snippet = render_snippet(config, layout, first.signal.shape, first.name == "inr_image")
    return (
        "## Rendering a network: coordinates, values, w0\n\n"
        f"{which} {init}\n\n{_convention(first, layout)}\n\n"
        "Render a row from its weights and `layout.json` alone (plain PyTorch):\n\n"
        f"```python\n{snippet}\n```"
    )


def card_extras(
    recipe: Recipe, configs: list[ConfigSummary], runs: dict[str, RunConfig]
) -> tuple[str, dict[str, str]]:
    """The signal section and the column docs of a signal zoo (``("", {})`` for others)."""
    if not is_signal_zoo(recipe):
        return "", {}
    first = configs[0]
    task = load_task(runs[first.table["run_id"][0].as_py()].task)
    return signal_section(recipe, first.name, first.layout, task), SIGNAL_COLUMN_DOCS


METRICS_TEXT = (
    "**Metrics.** Each network fits one signal (see Rendering a network). `train_loss` is the "
    "mean squared error of its outputs against the signal's values (scaled to [-1, 1]) at the "
    "training coordinates, `test_loss` at the test coordinates (`inr_image` without "
    "`task.holdout`: the whole image again; `inr_sinusoid`: the midpoints), computed from the "
    "weights as stored (float32); `train_psnr` / `test_psnr` are `10 log10(2² / loss)` dB (the "
    "PSNR of the signal in [0, 1] with peak 1); `gen_gap_loss` = test_loss − train_loss. A "
    "full-batch epoch (batch_size at least the number of points) visits the coordinates in grid "
    "order, one step per epoch."
)


# --- figures ------------------------------------------------------------------------------------


def _shown(table: pa.Table, limit: int = MAX_SHOWN) -> list[int]:
    """Rows to show: the last epoch, the first seed, one per label (or index) first."""
    cols = table.select(
        [c for c in ("epoch", "seed", "task__index", "label") if c in table.column_names]
    ).to_pydict()
    last = max(cols["epoch"])
    cand = [i for i, e in enumerate(cols["epoch"]) if e == last]
    view = min(cols["seed"][i] for i in cand)
    cand = sorted(
        (i for i in cand if cols["seed"][i] == view), key=lambda i: cols["task__index"][i]
    )
    key = "label" if "label" in cols else "task__index"
    firsts = list({cols[key][i]: i for i in reversed(cand)}.values())[::-1]
    rest = [i for i in cand if i not in firsts]
    return (firsts + rest)[:limit]


def _weights(config: ConfigSummary, folder: Path, ckpts: list[str]) -> dict[str, np.ndarray]:
    """checkpoint_id -> weights of the wanted rows, reading the weights of their files only."""
    out: dict[str, np.ndarray] = {}
    for paths in config.files.values():
        for rel in paths:
            with open_file(folder / rel) as f:
                ids = pq.read_table(f, columns=["checkpoint_id"])["checkpoint_id"].to_pylist()
            rows = [i for i, c in enumerate(ids) if c in ckpts]
            if rows:
                with open_file(folder / rel) as f:
                    weights = pq.read_table(f, columns=["weights"])["weights"]
                out.update({ids[i]: np.asarray(weights[i].as_py(), np.float32) for i in rows})
    return out


def _render(weights: np.ndarray, layout: Layout, task: Task) -> np.ndarray:
    """A network on the signal's whole grid, ``(points, C)``."""
    module = to_module(weights, layout)
    with torch.no_grad():
        return module(coordinate_grid(task.signal.shape)).numpy()


def draw_signal_figures(
    recipe: Recipe, configs: list[ConfigSummary], folder: Path, runs: dict[str, RunConfig]
) -> list[Path]:
    """``images/inr_renderings.png`` (signals above, their networks' renderings below, at the
    last epoch) and ``images/inr_psnr.png`` (the PSNR of every network at the last epoch)."""
    if not is_signal_zoo(recipe):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = configs[0]
    out = folder / IMAGES_DIR
    out.mkdir(parents=True, exist_ok=True)
    shown = _shown(config.table)
    ckpts = [config.table["checkpoint_id"][i].as_py() for i in shown]
    weights = _weights(config, folder, ckpts)
    psnr = config.table["train_psnr"].to_pylist()
    fig, axes = plt.subplots(2, len(shown), figsize=(1.6 * len(shown), 4.0), squeeze=False)
    for j, (i, ckpt) in enumerate(zip(shown, ckpts, strict=True)):
        task = load_task(runs[ckpt.rpartition("-")[0]].task)
        _panel(axes[0, j], task.signal.values.numpy(), task, "signal")
        rendered = _render(weights[ckpt], config.layout, task)
        _panel(axes[1, j], rendered, task, f"{psnr[i]:.1f} dB")
    fig.suptitle("signals (top) and their networks (bottom), last epoch", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / RENDERINGS, dpi=110)
    plt.close(fig)
    return [out / RENDERINGS, _psnr_histogram(config.table, out / PSNR)]


def _panel(ax, values: np.ndarray, task: Task, title: str) -> None:
    shape = task.signal.shape
    if len(shape) == 2:
        image = ((values + 1) / 2).T.reshape(-1, *shape).transpose(1, 2, 0).clip(0, 1)
        ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.plot(coordinate_grid(shape)[:, 0].numpy(), values[:, 0], lw=1)
        ax.set_ylim(-1.05, 1.05)
        ax.tick_params(labelsize=6)
    label = task.signal.columns.get("label")
    ax.set_title(title if label is None or title != "signal" else f"label {label}", fontsize=8)


def _psnr_histogram(table: pa.Table, path: Path) -> Path:
    import matplotlib.pyplot as plt

    cols = table.select(["epoch", "train_psnr"]).to_pydict()
    last = max(cols["epoch"])
    psnr = [p for p, e in zip(cols["train_psnr"], cols["epoch"], strict=True) if e == last]
    finite = [p for p in psnr if p is not None and math.isfinite(p)]
    fig, ax = plt.subplots(figsize=(4.8, 3.0), dpi=110)
    ax.hist(finite, bins=min(40, max(5, len(finite) // 5)), color="#4c72b0")
    ax.set_xlabel("train PSNR (dB)")
    ax.set_ylabel("networks")
    median = float(np.median(finite)) if finite else float("nan")
    ax.set_title(f"PSNR at epoch {last}: {len(psnr)} networks, median {median:.1f} dB", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
