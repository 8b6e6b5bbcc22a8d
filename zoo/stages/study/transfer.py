"""The transfer study: is a checkpoint a good start for a second task?

Per checkpoint: its hidden layers get a fresh readout for the second task (the same seeded
readout for every checkpoint of a run, :data:`zoo.streams.STUDY_HEAD`), then a fixed budget of
SGD on the second task's training set, twice: a **linear probe** (the readout alone trains on
frozen features) and a **full fine-tune** (every weight trains). The same two, from the run's
initialization instead of a checkpoint, are training **from scratch** with the same budget (and
a probe of random features). Everything is scored on the second task's test set; probes and
fine-tunes of a batch each train as one population.
"""

from __future__ import annotations

import math

import pyarrow as pa
import torch

from zoo import streams
from zoo.errors import StudyError
from zoo.layout import unflatten
from zoo.naming import checkpoint_id
from zoo.nn.architectures import build_model
from zoo.nn.inits import init_model
from zoo.stages.study.context import StudyContext
from zoo.stages.study.finetune import Budget, finetune
from zoo.streams import torch_generator
from zoo.tasks import Task, load_task

TRANSFER_KEY = 2  # the transfer study's key of streams.STUDY_ORDER

COLUMN_DOCS = {
    "probe_acc": "second-task test accuracy of the linear probe on the checkpoint's features",
    "probe_loss": "second-task test loss of the linear probe",
    "full_acc": "second-task test accuracy after fine-tuning every weight from the checkpoint",
    "full_loss": "second-task test loss of the full fine-tune",
    "scratch_probe_acc": "the probe's accuracy on the run's initial (random) features",
    "scratch_full_acc": "accuracy of training from the run's initialization, same budget",
    "scratch_full_loss": "test loss of training from scratch",
    "probe_gain": "probe_acc − scratch_probe_acc",
    "full_gain": "full_acc − scratch_full_acc",
}


def _readout(layout) -> tuple[str, ...]:
    """The readout's parameter names: the last weight and its bias."""
    return tuple(layout.names[-2:])


def with_fresh_readout(body: torch.Tensor, src_layout, dst_layout, seeds: list[int]):
    """Rows ``(M, P_src)`` -> ``(M, P_dst)``: every parameter but the readout copied, the
    readout drawn per seed like ``nn.Linear``'s default (U(±1/sqrt(fan_in)))."""
    src = unflatten(body, src_layout)
    w_name, b_name = _readout(dst_layout)
    out = []
    for i, seed in enumerate(seeds):
        gen = torch_generator(seed, streams.STUDY_HEAD)
        params = {n: src[n][i] for n in dst_layout.names[:-2]}
        shape_w, shape_b = dst_layout.shapes[-2], dst_layout.shapes[-1]
        bound = 1 / math.sqrt(shape_w[1])
        params[w_name] = (torch.rand(*shape_w, generator=gen) * 2 - 1) * bound
        params[b_name] = (torch.rand(*shape_b, generator=gen) * 2 - 1) * bound
        out.append(torch.cat([params[n].reshape(-1) for n in dst_layout.names]))
    return torch.stack(out)


def second_task(ctx: StudyContext) -> Task:
    target = load_task(ctx.batch.settings["task"])
    if target.input_shape != ctx.task.input_shape:
        raise StudyError(
            f"studies.transfer.task gives inputs of shape {target.input_shape}, but the zoo's "
            f"models take {ctx.task.input_shape}; choose a second task of the same input shape"
        )
    return target


def run_transfer(ctx: StudyContext) -> pa.Table:
    """One row per checkpoint of the batch (see the module docstring)."""
    target = second_task(ctx)
    budget = Budget.from_dict(ctx.batch.settings)
    module, layout = build_model(ctx.batch.runs[0].model, target.input_shape, target.n_classes)
    runs = list(ctx.batch.runs)
    ckpts = [(r, e) for e in ctx.batch.epochs for r in runs]
    trained = torch.stack([ctx.weights[checkpoint_id(r.run_id, e)] for r, e in ckpts])
    init = torch.stack([_flat(init_model(r, ctx.task)[0]) for r in runs])
    starts = torch.nan_to_num(torch.cat([trained, init]))  # checkpoints, then the inits
    seeds = [r.seed for r, _ in ckpts] + [r.seed for r in runs]
    start = with_fresh_readout(starts, ctx.layout, layout, seeds)
    args = (module, layout, start, target, seeds, budget, TRANSFER_KEY)
    probe = finetune(*args, trainable=_readout(layout), chunk=ctx.chunk)
    full = finetune(*args, chunk=ctx.chunk)
    p = ctx.evaluate(probe, target, module, layout)
    f = ctx.evaluate(full, target, module, layout)
    scratch = {r.run_id: len(ckpts) + i for i, r in enumerate(runs)}
    rows = []
    for i, (run, epoch) in enumerate(ckpts):
        s = scratch[run.run_id]
        rows.append(
            {
                "checkpoint_id": checkpoint_id(run.run_id, epoch),
                "run_id": run.run_id,
                "cell_id": run.cell_id,
                "epoch": epoch,
                "probe_acc": float(p["acc"][i]),
                "probe_loss": float(p["loss"][i]),
                "full_acc": float(f["acc"][i]),
                "full_loss": float(f["loss"][i]),
                "scratch_probe_acc": float(p["acc"][s]),
                "scratch_full_acc": float(f["acc"][s]),
                "scratch_full_loss": float(f["loss"][s]),
                "probe_gain": float(p["acc"][i] - p["acc"][s]),
                "full_gain": float(f["acc"][i] - f["acc"][s]),
            }
        )
    return pa.Table.from_pylist(rows)


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in module.state_dict().values()]).float()
