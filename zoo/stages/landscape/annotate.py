"""The landscape stage: loss-landscape metadata for the checkpoints of a trained zoo.

Per checkpoint (at the recipe's ``landscape.at`` epochs): Hessian top eigenvalues and trace
(:mod:`zoo.stages.landscape.hessian`), weight metrics
(:func:`zoo.stages.landscape.metrics.weight_metrics`), and the loss on the probe data. Per grid
cell (runs that differ only by seed): CKA between seeds, the linear-path loss barrier and Bezier
mode connectivity between seed pairs — copied into every row of the cell. Phase labels are
assigned at build time (:func:`zoo.stages.landscape.phases.label_cells`) from these columns, so
a new rule or new thresholds relabel a zoo without recomputing its metrics.

A landscape batch is one grid cell; its id hashes its run ids *and* the landscape settings, so
changing the settings recomputes, a grown recipe annotates its new cells, and nothing else runs.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from zoo import streams
from zoo.errors import LandscapeError
from zoo.layout import unflatten
from zoo.naming import checkpoint_id, short_hash, tensor_name
from zoo.nn.architectures import build_model
from zoo.nn.inits import init_model
from zoo.recipe import Recipe, RunConfig, expand_recipe
from zoo.stages.landscape.hessian import PopulationHVP, hutchinson_trace, lanczos_top, rademacher
from zoo.stages.landscape.metrics import (
    bezier_mc,
    fit_bezier,
    interpolation_losses,
    linear_cka,
    population_losses,
    population_outputs,
    weight_metrics,
)
from zoo.store.manifest import Manifest
from zoo.store.shards import read_tensor_metadata, read_tensors, write_table_shard
from zoo.streams import numpy_rng, torch_generator
from zoo.tasks import Task, load_task
from zoo.weightspace.align import align, barrier_height


@dataclass(frozen=True)
class LandscapeBatch:
    """Whole grid cells annotated together, and the settings they are annotated with."""

    batch_id: str
    runs: tuple[RunConfig, ...]
    settings: dict  # the resolved `landscape` section, with `at` resolved to epochs

    def to_dict(self) -> dict:
        return {
            "batch_id": self.batch_id,
            "runs": [r.to_dict() for r in self.runs],
            "settings": self.settings,
        }

    @classmethod
    def from_dict(cls, d: dict) -> LandscapeBatch:
        return cls(d["batch_id"], tuple(RunConfig.from_dict(r) for r in d["runs"]), d["settings"])


def at_epochs(settings: dict, run: RunConfig) -> list[int]:
    return sorted(settings["at"]) if settings.get("at") else [max(run.checkpoints)]


def plan_landscape(runs: list[RunConfig], settings: dict) -> list[LandscapeBatch]:
    """One batch per grid cell (its seeds are annotated together: CKA, barriers and mode
    connectivity compare them). A batch's id hashes its runs and the settings, so a grown recipe
    annotates only its new and changed cells (a cell with more seeds is a new batch)."""
    cells: dict[str, list[RunConfig]] = {}
    for run in runs:
        cells.setdefault(run.cell_id, []).append(run)
    return [_batch(cell, settings) for cell in cells.values()]


def plan_landscape_batches(recipe: Recipe) -> list[LandscapeBatch]:
    """The landscape batches of a recipe: one per grid cell (:func:`plan_landscape`)."""
    return plan_landscape(expand_recipe(recipe), recipe.resolved["landscape"])


def _batch(runs: list[RunConfig], settings: dict) -> LandscapeBatch:
    # the phase rule runs at build time: re-thresholding it must not recompute the metrics
    computed = {k: v for k, v in settings.items() if k != "phase"}
    ident = short_hash([sorted(r.run_id for r in runs), computed], n=15)
    return LandscapeBatch("L" + ident, tuple(runs), settings)


def probe_sample(task: Task, probe: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed, seeded probe data: ``batches × batch_size`` training examples."""
    n = min(len(task.x_train), probe["batches"] * probe["batch_size"])
    rng = numpy_rng(probe["seed"], streams.PROBE)
    idx = torch.from_numpy(np.sort(rng.choice(len(task.x_train), n, replace=False)))
    return task.x_train[idx], task.y_train[idx]


# --- the task --------------------------------------------------------------------------------


def load_checkpoints(out_dir: str, runs, epochs: list[int]) -> dict[str, torch.Tensor]:
    """Flat float32 weights ``{checkpoint_id: (P,)}`` of the runs at ``epochs`` from the store
    (only those tensors are read from each shard)."""
    wanted = {checkpoint_id(r.run_id, e) for r in runs for e in epochs}
    found: dict[str, torch.Tensor] = {}
    for rec in Manifest(out_dir).records("train"):
        here = sorted(wanted.intersection(rec.checkpoint_ids))
        if rec.ext != "safetensors" or not here:
            continue
        names = json.loads(read_tensor_metadata(out_dir, rec.path)["layout"])["names"]
        tensors = read_tensors(out_dir, rec.path, [tensor_name(c, n) for c in here for n in names])
        for ckpt in here:
            found[ckpt] = torch.cat([tensors[tensor_name(ckpt, n)].reshape(-1) for n in names])
    missing = wanted - set(found)
    if missing:
        raise LandscapeError(
            f"{len(missing)} checkpoints are not in the store (e.g. {sorted(missing)[0]}); "
            f"run `zoo train` first, or set landscape.at to checkpoint epochs"
        )
    return found


def landscape_task(batch: dict, out_dir: str, options: dict) -> list[dict]:
    """One Dask task: annotate a landscape batch, write its metric shard, return the receipt."""
    torch.set_num_threads(options.get("threads_per_worker", 1))
    lb = LandscapeBatch.from_dict(batch)
    dtype = torch.float64 if options.get("float64") else torch.float32
    table = annotate(lb, out_dir, dtype=dtype, check_stop=options.get("check_stop"))
    ckpts = table.column("checkpoint_id").to_pylist()
    rec = write_table_shard(
        out_dir,
        "landscape",
        lb.batch_id,
        table,
        [r.run_id for r in lb.runs],
        ckpts,
        metadata={"landscape": lb.settings},
    )
    return [rec.to_dict()]


def annotate(lb: LandscapeBatch, out_dir: str, dtype=torch.float32, check_stop=None) -> pa.Table:
    """Every metric of the batch's checkpoints at its ``at`` epochs, one row per checkpoint;
    ``check_stop`` (if given) is called before each epoch's checkpoints (it raises to stop)."""
    first = lb.runs[0]
    task = load_task(first.task)
    module, layout = build_model(first.model, task.input_shape, task.n_classes)
    module = module.to(dtype)
    x, y = probe_sample(task, lb.settings["probe"])
    x = x.to(dtype)
    init = torch.stack(
        [
            torch.cat([v.reshape(-1) for v in init_model(r, task)[0].state_dict().values()])
            for r in lb.runs
        ]
    ).to(dtype)
    epochs = at_epochs(lb.settings, first)
    weights = load_checkpoints(out_dir, lb.runs, epochs)
    rows = []
    for epoch in epochs:
        if check_stop:
            check_stop()
        flat = torch.stack([weights[checkpoint_id(r.run_id, epoch)] for r in lb.runs]).to(dtype)
        rows += _epoch_rows(lb, module, layout, flat, init, x, y, epoch)
    keys = list(dict.fromkeys(k for row in rows for k in row))  # cells may lack pair columns
    return pa.Table.from_pylist([{k: row.get(k) for k in keys} for row in rows])


def _epoch_rows(lb, module, layout, flat, init, x, y, epoch) -> list[dict]:
    metrics, settings = set(lb.settings["metrics"]), lb.settings
    probe_loss = population_losses(module, unflatten(flat, layout), x, y)
    finite_w = torch.isfinite(flat).all(1)
    ok = finite_w & torch.isfinite(probe_loss)  # a diverged model is left out of the estimators
    notes = [
        ""
        if bool(ok[i])
        else "non-finite weights: metrics are NaN"
        if not bool(finite_w[i])
        else "non-finite loss: Hessian and cell metrics are NaN"
        for i in range(len(flat))
    ]
    rows = [
        {
            "checkpoint_id": checkpoint_id(r.run_id, epoch),
            "run_id": r.run_id,
            "cell_id": r.cell_id,
            "epoch": epoch,
            "landscape_note": notes[i],
        }
        for i, r in enumerate(lb.runs)
    ]
    cols = {
        "probe_loss": probe_loss.tolist(),
        "probe_loss_init": population_losses(module, unflatten(init, layout), x, y).tolist(),
    }
    if "weights" in metrics:
        cols.update(weight_metrics(flat, init, layout))
    if "hessian" in metrics or "phase" in metrics:
        cols.update(_hessian_columns(lb, module, layout, flat, ok, x, y, epoch))
    for key, values in cols.items():
        for row, value in zip(rows, values, strict=True):
            row[key] = value
    for row in rows:
        if not row["landscape_note"] and not math.isfinite(row.get("hessian_top_eig", 0.0)):
            row["landscape_note"] = "non-finite Hessian estimate (overflow): Hessian is NaN"
    _cell_columns(lb, module, layout, flat, ok, x, y, rows, metrics, settings, epoch)
    return rows


def _hessian_columns(lb, module, layout, flat, ok, x, y, epoch) -> dict[str, list]:
    h = lb.settings["hessian"]
    m, p = flat.shape
    nan = [math.nan] * m
    cols = {
        "hessian_top_eigs": [[math.nan] * h["top_k"] for _ in range(m)],
        "hessian_top_eig": list(nan),
        "hessian_eig_residual": list(nan),
        "hessian_eig_iterations": [0] * m,
        "hessian_eig_converged": [False] * m,
        "hessian_trace": list(nan),
        "hessian_trace_se": list(nan),
        "hessian_trace_probes": [0] * m,
    }
    chunk = h["models_per_graph"] or (1 if lb.runs[0].model["arch"] == "mlp" else 4)
    good = ok.nonzero().flatten().tolist()
    for c in range(0, len(good), chunk):
        idx = good[c : c + chunk]
        runs = [lb.runs[i] for i in idx]
        hvp = PopulationHVP(module, unflatten(flat[idx], layout), x, y)
        starts = torch.stack(
            [
                torch.randn(
                    p, generator=torch_generator(r.seed, streams.LANCZOS, epoch), dtype=flat.dtype
                )
                for r in runs
            ]
        )
        eig = lanczos_top(hvp, p, len(idx), starts, h["top_k"], h["iterations"], h["tol"])
        probes = torch.stack(
            [
                rademacher(
                    torch_generator(r.seed, streams.TRACE, epoch), h["trace_probes"], p, flat.dtype
                )
                for r in runs
            ],
            1,
        )
        tr = hutchinson_trace(hvp, probes, h["trace_tol"])
        for j, i in enumerate(idx):
            cols["hessian_top_eigs"][i] = eig.values[j].tolist()
            cols["hessian_top_eig"][i] = float(eig.values[j, 0])
            cols["hessian_eig_residual"][i] = float(eig.residual[j])
            cols["hessian_eig_iterations"][i] = int(eig.iterations[j])
            cols["hessian_eig_converged"][i] = bool(eig.converged[j])
            cols["hessian_trace"][i] = float(tr.trace[j])
            cols["hessian_trace_se"][i] = float(tr.stderr[j])
            cols["hessian_trace_probes"][i] = int(tr.probes[j])
    return cols


def _cell_columns(lb, module, layout, flat, ok, x, y, rows, metrics, settings, epoch) -> None:
    """CKA, barrier and Bezier mc over the seed pairs of each cell, written into its rows."""
    cells: dict[str, list[int]] = {}
    for i, run in enumerate(lb.runs):
        if bool(ok[i]):
            cells.setdefault(run.cell_id, []).append(i)
    for cell, members in cells.items():
        pairs = list(itertools.combinations(members, 2))
        stats: dict[str, float] = {"cell_pairs": len(pairs)}
        if pairs:
            a = flat[[i for i, _ in pairs]]
            b = flat[[j for _, j in pairs]]
            stats.update(
                _pair_stats(
                    lb, module, layout, flat, members, pairs, a, b, x, y, metrics, settings, epoch
                )
            )
        for i, run in enumerate(lb.runs):
            if run.cell_id == cell:
                rows[i].update(stats)


def _pair_stats(lb, module, layout, flat, members, pairs, a, b, x, y, metrics, settings, epoch):
    out = {}
    if "cka" in metrics or "phase" in metrics:
        reps = population_outputs(
            module,
            unflatten(flat[members], layout),
            x,
            penultimate=settings["cka"]["representation"] == "penultimate",
        )
        pos = {i: k for k, i in enumerate(members)}
        cka = [
            float(linear_cka(reps[pos[i]], reps[pos[j]], settings["cka"]["debiased"]))
            for i, j in pairs
        ]
        out.update(_mean_std("cka", cka))
    if "barrier" in metrics or "phase" in metrics:
        losses = interpolation_losses(module, layout, a, b, x, y, settings["barrier"]["points"])
        out.update(_mean_std("barrier", barrier_height(losses).tolist()))
    if "barrier" in metrics and settings["barrier"]["aligned"]:
        matched = align(b, a, layout, seed=epoch).weights  # b's units permuted to match a's
        losses = interpolation_losses(
            module, layout, a, matched, x, y, settings["barrier"]["points"]
        )
        out.update(_mean_std("barrier_aligned", barrier_height(losses).tolist()))
    if "bezier" in metrics:
        gen = torch_generator(lb.runs[members[0]].seed, streams.BEZIER, epoch)
        bend = fit_bezier(module, layout, a, b, x, y, settings["bezier"], gen)
        mc = bezier_mc(module, layout, a, b, bend, x, y, settings["bezier"]["points"])
        out.update(_mean_std("mc", mc.tolist()))
    return out


def _mean_std(name: str, values: list[float]) -> dict[str, float]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {f"{name}_mean": statistics.fmean(values), f"{name}_std": std}


COLUMN_DOCS = {
    "probe_loss": "mean cross-entropy on the landscape probe sample",
    "probe_loss_init": "the same at the run's initialization (recomputed from its seed)",
    "landscape_note": "why some metrics are NaN (non-finite weights or loss), else empty",
    "hessian_top_eigs": "top-k eigenvalues of the probe-loss Hessian (Lanczos Ritz values)",
    "hessian_top_eig": "largest eigenvalue of the probe-loss Hessian",
    "hessian_eig_residual": "relative residual ‖Hv − λv‖/|λ| of the top Ritz pair",
    "hessian_eig_iterations": "Lanczos iterations used",
    "hessian_eig_converged": "whether the residual reached landscape.hessian.tol",
    "hessian_trace": "Hutchinson estimate of the Hessian trace (Rademacher probes)",
    "hessian_trace_se": "standard error of hessian_trace",
    "hessian_trace_probes": "probes used for hessian_trace",
    "weight_l2": "L2 norm of all weights",
    "distance_from_init_l2": "‖θ − θ₀‖",
    "distance_from_init_rel": "‖θ − θ₀‖ / ‖θ₀‖",
    "layer_l2": "L2 norm of each weight matrix (state_dict order)",
    "layer_stable_rank": "‖W‖_F² / ‖W‖₂² per weight matrix (conv as out × in·k·k)",
    "layer_effective_rank": "exp(entropy of normalised singular values) per weight matrix",
    "layer_alpha": "power-law exponent of each layer's WᵀW eigenvalues (MLE, KS x_min; NaN < 10)",
    "alpha_mean": "mean of layer_alpha over layers that have one",
    "cell_pairs": "seed pairs of the grid cell used for cka/barrier/mc",
    "cka_mean": "mean linear CKA between the cell's seeds (probe data)",
    "cka_std": "std of CKA over the cell's seed pairs",
    "barrier_mean": "mean linear-path loss barrier between the cell's seeds",
    "barrier_std": "std of the barrier over seed pairs",
    "barrier_aligned_mean": "mean barrier after weight matching each pair (barrier.aligned)",
    "barrier_aligned_std": "std of the aligned barrier over seed pairs",
    "mc_mean": "mean Bezier mode connectivity mc (< 0: barrier, ≈ 0: connected)",
    "mc_std": "std of mc over seed pairs",
    "phase": "phase of the cell (Yang et al. 2021 taxonomy; rule in phase_rule)",
    "phase_rule": "version of the phase rule (zoo/stages/landscape/phases.py; settings below)",
    "phase_trained": "cell's probe loss ≤ loss_fraction × its loss at init",
    "phase_sharp": "v2: sharpness ratio ≥ sharp_fraction; v1: log λ_max above the zoo median",
    "phase_mc": "mc used by the rule (Bezier mc, else −barrier)",
    "phase_mc_tol": "mc < −this is a barrier; |mc| ≤ this counts as ≈ 0",
    "phase_cka": "cell's mean CKA used by the rule",
    "phase_log_lambda": "cell's log mean λ_max",
    "phase_log_lambda_threshold": "v1: the 'sharp' threshold at that epoch (zoo median + margin)",
    "phase_cka_threshold": "the 'large CKA' threshold (v2: cka_level; v1: zoo median or set)",
    "phase_loss_ratio": "v2: cell's mean probe loss / its mean probe loss at init",
    "phase_sharpness": "v2: (λ_max + weight decay) / the optimizer's stability bound",
    "phase_stability_bound": "v2: 2/lr (SGD), (2+2β)/lr (momentum β), (2+2β)/((1+2β)lr) Nesterov",
    "phase_uncertain": "v2: an input lies near its threshold and flipping it changes the label",
    "phase_near": "v2: the decisions near their thresholds (trained, sharp, barrier, cka_large)",
}
