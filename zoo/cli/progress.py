"""Reporting a stage's progress: :class:`StageLog` counts :func:`zoo.dist.run.run_stage`'s events
(batches, models, rate, ETA) and hands each, as a JSON-ready dict, to its listeners:
:class:`JsonLog` (one JSON object a line in a file) and :class:`StageBar` (a rich progress bar).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.dist.run import run_ids

if TYPE_CHECKING:
    from zoo.dist.control import ClusterEvent
    from zoo.dist.run import RunSummary, StageStart


class StageLog:
    """Counts a stage's progress from :func:`zoo.dist.run.run_stage`'s callbacks and hands each
    event, as a JSON-ready dict, to its listeners (a progress display, a JSON log).

    Pass ``on_start=log.start``, ``progress=log`` and ``on_event=log.cluster``; call
    ``log.end(summary)`` at the end.
    """

    def __init__(self, stage: str, batches: list, listeners: list | None = None):
        self.stage, self.listeners = stage, list(listeners or [])
        self.runs = {b.batch_id: len(b.runs) for b in batches}
        self.batches, self.models = len(batches), sum(self.runs.values())
        self.done = self.failed = self.models_done = self.models_failed = self.skipped_models = 0
        self.started = self.last = time.monotonic()
        self.stopped: dict = {}  # the fields of the last "stopped" event, after an interrupt

    def emit(self, event: str, **extra) -> None:
        elapsed = self.last - self.started  # up to the last batch, not the cluster's shutdown
        rate = self.models_done / elapsed if elapsed > 0 else 0.0
        left = self.models - self.skipped_models - self.models_done - self.models_failed
        state = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "stage": self.stage,
            "event": event,
            "batches": self.batches,
            "batches_done": self.done,
            "batches_failed": self.failed,
            "models": self.models,
            "models_done": self.models_done,
            "models_failed": self.models_failed,
            "models_skipped": self.skipped_models,
            "models_per_s": round(rate, 3),
            "eta_s": round(left / rate, 1) if rate > 0 else None,
            **extra,
        }
        for listener in self.listeners:
            listener(state)

    def start(self, info: StageStart) -> None:
        self.started = self.last = time.monotonic()
        self.skipped_models = info.skipped_runs
        self.emit("start", batches_skipped=info.skipped, dashboard=info.dashboard)

    def __call__(self, event: str, batch, error: str | None) -> None:
        self.last = time.monotonic()
        if event == "done":
            self.done, self.models_done = self.done + 1, self.models_done + len(batch.runs)
            self.emit("done", batch_id=batch.batch_id)
        else:
            self.failed, self.models_failed = self.failed + 1, self.models_failed + len(batch.runs)
            runs = run_ids(batch)
            self.emit("failed", batch_id=batch.batch_id, run_ids=runs, error=error)

    def cluster(self, event: ClusterEvent) -> None:
        """A :class:`zoo.dist.control.ClusterEvent` (no workers, a worker lost, a batch rerun,
        stopping): emitted with its ``message`` and fields."""
        if event.kind == "stopped":
            self.stopped = dict(event.fields)
        self.emit(event.kind, message=event.message, **event.fields)

    def end(self, summary: RunSummary | None, interrupted: bool = False) -> None:
        counts = {"skipped": len(summary.skipped)} if summary else {}
        self.emit("interrupted" if interrupted else "end", **counts)


class JsonLog:
    """A listener of :class:`StageLog` that appends one JSON object per event to a file."""

    def __init__(self, path: str | Path):
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def __call__(self, state: dict) -> None:
        self.file.write(json.dumps(state) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


WARNINGS = ("no_workers", "worker_lost", "batch_rerun", "stopping", "stopped")


class ClusterWarnings:
    """A listener of :class:`StageLog` for ``--quiet`` runs: no bar, but what the operator must
    know about the cluster (no workers, lost workers, reruns, stopping) still prints."""

    def __init__(self, console):
        self.console = console

    def __call__(self, s: dict) -> None:
        from rich.markup import escape

        if s["event"] in WARNINGS:
            self.console.print(f"[yellow]{escape(s['message'])}[/]")


class StageBar:
    """A listener of :class:`StageLog` that draws a rich progress bar (batches, models,
    models/s, failures, ETA) and prints the dashboard address and each failure."""

    def __init__(self, console, stage: str, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = console
        columns = (
            TextColumn(f"[bold]{stage}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("batches · {task.fields[info]}"),
        )
        self.bar = Progress(*columns, console=console, transient=False)
        self.task = self.bar.add_task(stage, total=total, info="starting workers")
        self.skipped = 0

    def __enter__(self) -> StageBar:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def __call__(self, s: dict) -> None:
        from rich.markup import escape

        if s["event"] in (*WARNINGS, "workers"):  # a cluster event: say it
            color = "cyan" if s["event"] in ("workers", "stopped") else "yellow"
            self.console.print(f"[{color}]{escape(s['message'])}[/]")
            if s["event"] == "no_workers":
                wait = time.strftime("%H:%M:%S", time.gmtime(s["waited_s"]))
                self.bar.update(self.task, info=f"waiting for workers for {wait}")
                return
        if s["event"] == "start":
            self.skipped = s["batches_skipped"]
            if s["dashboard"]:
                self.console.print(f"Dask dashboard: {s['dashboard']}")
            if s["models_skipped"]:
                self.console.print(f"{s['models_skipped']} runs already stored: resuming")
        elif s["event"] == "failed":
            runs = ", ".join(s["run_ids"][:4]) + (" …" if len(s["run_ids"]) > 4 else "")
            last = escape(s["error"].splitlines()[-1])
            self.console.print(f"[red]batch {s['batch_id']} failed[/] (runs {runs}): {last}")
        eta = "–" if s["eta_s"] is None else time.strftime("%H:%M:%S", time.gmtime(s["eta_s"]))
        todo = s["models"] - s["models_skipped"]
        info = f"{s['models_done']}/{todo} models · {s['models_per_s']:.1f} models/s · "
        info += f"{s['batches_failed']} failed · ETA {eta}"
        done = self.skipped + s["batches_done"] + s["batches_failed"]
        self.bar.update(self.task, completed=done, info=info)
