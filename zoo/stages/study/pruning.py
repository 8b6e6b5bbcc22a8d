"""The pruning study: how much of a checkpoint survives global magnitude pruning?

Per checkpoint and sparsity s: the fraction s of the entries of all weight matrices with the
smallest magnitudes (one threshold over all layers; biases are kept) is set to zero; the pruned
model is evaluated on the test set, then fine-tuned for a short budget with its mask fixed and
evaluated again. Sparsity 0 is always studied too: the dense model fine-tuned with the same
budget, the control that tells the fine-tune's own gain from recovery. Every pruned model of a
batch is fine-tuned in one population (:func:`zoo.stages.study.finetune.finetune`).
"""

from __future__ import annotations

import pyarrow as pa
import torch

from zoo.layout import Layout, weight_matrices
from zoo.naming import checkpoint_id
from zoo.stages.study.context import StudyContext
from zoo.stages.study.finetune import Budget, finetune

PRUNING_KEY = 1  # the pruning study's key of streams.STUDY_ORDER

COLUMN_DOCS = {
    "sparsity": "fraction of the weight-matrix entries set to zero (0: the dense control)",
    "dense_acc": "test accuracy of the checkpoint before pruning",
    "dense_loss": "test loss of the checkpoint before pruning",
    "pruned_acc": "test accuracy right after pruning",
    "pruned_loss": "test loss right after pruning",
    "finetuned_acc": "test accuracy after the fine-tune with the mask fixed",
    "finetuned_loss": "test loss after the fine-tune",
    "pruned_acc_drop": "dense_acc − pruned_acc",
    "finetuned_acc_drop": "dense_acc − finetuned_acc",
}


def prune_masks(flat: torch.Tensor, layout: Layout, sparsity: float) -> torch.Tensor:
    """Global magnitude pruning masks ``(M, P)`` (True: kept) of rows ``flat: (M, P)``: per
    row, the ``round(sparsity × W)`` weight-matrix entries of smallest magnitude are dropped
    (W: entries of all weight matrices; ties broken by position); biases are always kept.

    Example:
        >>> from zoo.nn.architectures import build_model
        >>> _, lay = build_model({"arch": "mlp", "width": 4, "depth": 1, "activation": "relu"},
        ...                      (3,), 2)
        >>> keep = prune_masks(torch.randn(1, lay.num_params), lay, 0.5)
        >>> int((~keep).sum()), lay.num_params  # half of the 12 + 8 weight-matrix entries
        (10, 26)
    """
    m, p = flat.shape
    matrix = torch.zeros(p, dtype=torch.bool)
    for name in weight_matrices(layout):
        start = layout.offsets[layout.names.index(name)]
        size = int(torch.tensor(layout.shapes[layout.names.index(name)]).prod())
        matrix[start : start + size] = True
    idx = matrix.nonzero().flatten()
    drop = round(sparsity * len(idx))
    masks = torch.ones(m, p, dtype=torch.bool)
    if drop:
        order = flat[:, idx].abs().argsort(dim=1, stable=True)[:, :drop]  # (M, drop)
        masks[torch.arange(m)[:, None], idx[order]] = False
    return masks


def run_pruning(ctx: StudyContext) -> pa.Table:
    """One row per (checkpoint, sparsity) of the batch (see the module docstring)."""
    settings = ctx.batch.settings
    sparsities = [0.0, *sorted(settings["sparsities"])]
    budget = Budget.from_dict(settings)
    ckpts = [(r, e) for e in ctx.batch.epochs for r in ctx.batch.runs]
    flat = torch.stack([ctx.weights[checkpoint_id(r.run_id, e)] for r, e in ckpts])  # (C, P)
    flat = torch.nan_to_num(flat)  # a diverged checkpoint is scored (chance), never trained on
    masks = torch.cat([prune_masks(flat, ctx.layout, s) for s in sparsities])  # (S*C, P)
    pruned = flat.repeat(len(sparsities), 1) * masks
    seeds = [r.seed for r, _ in ckpts] * len(sparsities)
    tuned = (
        finetune(
            ctx.module,
            ctx.layout,
            pruned,
            ctx.task,
            seeds,
            budget,
            PRUNING_KEY,
            masks=masks,
            chunk=ctx.chunk,
        )
        if budget.epochs
        else pruned
    )
    before, after = ctx.evaluate(pruned), ctx.evaluate(tuned)
    rows, c = [], len(ckpts)
    for k, s in enumerate(sparsities):
        for i, (run, epoch) in enumerate(ckpts):
            j = k * c + i
            dense_acc, dense_loss = float(before["acc"][i]), float(before["loss"][i])
            rows.append(
                {
                    "checkpoint_id": checkpoint_id(run.run_id, epoch),
                    "run_id": run.run_id,
                    "cell_id": run.cell_id,
                    "epoch": epoch,
                    "sparsity": s,
                    "dense_acc": dense_acc,
                    "dense_loss": dense_loss,
                    "pruned_acc": float(before["acc"][j]),
                    "pruned_loss": float(before["loss"][j]),
                    "finetuned_acc": float(after["acc"][j]),
                    "finetuned_loss": float(after["loss"][j]),
                    "pruned_acc_drop": dense_acc - float(before["acc"][j]),
                    "finetuned_acc_drop": dense_acc - float(after["acc"][j]),
                }
            )
    return pa.Table.from_pylist(rows)
