"""The study stage: what a zoo's phases mean downstream (``zoo study OUT KIND``).

Three studies, each a Dask task per batch of whole grid cells that writes one Parquet shard to
``shards/study_<kind>/`` and returns its receipt (resumable through the manifest, like the
landscape stage); the build publishes each as its own config ``study_<kind>`` beside the
weights, with the cell's phase joined in:

- ``averaging`` (:mod:`~zoo.stages.study.averaging`): per cell, the seeds' average, plain and
  after weight matching, against the mean of the endpoints;
- ``pruning`` (:mod:`~zoo.stages.study.pruning`): per checkpoint, global magnitude pruning at
  several sparsities, with and without a short fine-tune (a population);
- ``transfer`` (:mod:`~zoo.stages.study.transfer`): per checkpoint, a linear probe and a full
  fine-tune on a second task, against training from scratch with the same budget.

:mod:`~zoo.stages.study.effects` summarizes a study per phase (mean effect, spread across
cells, a permutation test of whether the phases differ).
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from zoo.stages.study.averaging import COLUMN_DOCS as AVERAGING_DOCS
from zoo.stages.study.averaging import run_averaging
from zoo.stages.study.context import StudyContext
from zoo.stages.study.plan import KINDS, StudyBatch, check_kind, plan_study, study_stage
from zoo.stages.study.pruning import COLUMN_DOCS as PRUNING_DOCS
from zoo.stages.study.pruning import run_pruning
from zoo.stages.study.transfer import COLUMN_DOCS as TRANSFER_DOCS
from zoo.stages.study.transfer import run_transfer
from zoo.store.shards import write_table_shard

STUDIES: dict[str, Callable[[StudyContext], pa.Table]] = {
    "averaging": run_averaging,
    "pruning": run_pruning,
    "transfer": run_transfer,
}
COLUMN_DOCS = {
    "averaging": AVERAGING_DOCS,
    "pruning": PRUNING_DOCS,
    "transfer": TRANSFER_DOCS,
}


def study_task(batch: dict, out_dir: str, options: dict) -> list[dict]:
    """One Dask task: run a study batch, write its shard, return the receipt. It runs on the
    worker's CPU threads, as the landscape stage does (``options["device"]`` is not used)."""
    sb = StudyBatch.from_dict(batch)
    table = STUDIES[sb.kind](StudyContext.load(sb, out_dir))
    ckpts = (
        table.column("checkpoint_id").to_pylist() if "checkpoint_id" in table.column_names else []
    )
    rec = write_table_shard(
        out_dir,
        study_stage(sb.kind),
        sb.batch_id,
        table,
        [r.run_id for r in sb.runs],
        list(dict.fromkeys(ckpts)),
        metadata={"study": sb.kind, "epochs": list(sb.epochs), "settings": sb.settings},
    )
    return [rec.to_dict()]


__all__ = [
    "COLUMN_DOCS",
    "KINDS",
    "STUDIES",
    "StudyBatch",
    "StudyContext",
    "check_kind",
    "plan_study",
    "study_stage",
    "study_task",
]
