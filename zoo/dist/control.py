"""The operator's view and control of a stage on a Dask cluster (issue 13, item 8).

- **Stop.** Dask cannot kill a running task, so stopping is cooperative: the driver names a
  Dask ``Event`` per stage; each task gets a check (:func:`stop_check`) that it calls between
  epochs (train) or checkpoint epochs (landscape) and that raises :class:`BatchStopped` once the
  driver sets the event (:func:`stop_batches`, on Ctrl-C or SIGTERM). A stopped task has written
  nothing, so no shard is half-recorded; the queued tasks are cancelled.
- **Watch.** :class:`ClusterWatch` reports, as :class:`ClusterEvent`\\ s: a scheduler without
  workers (after ``no_workers_warning_s`` and again every as many seconds, with the last job
  submission error of a SLURM/PBS cluster), workers that come after such a wait, a worker lost
  (from the scheduler's ``remove-worker`` events) and each of this stage's batches Dask runs
  again because its worker was lost.
"""

from __future__ import annotations

import queue
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from zoo.errors import BatchStopped

STOP_CHECK_S = 1.0  # a task asks the scheduler at most this often whether to stop
STOP_WAIT_S = 15.0  # how long an interrupted driver waits for running batches to stop
POLL_S = 1.0  # how often the driver looks at the cluster's workers


@dataclass(frozen=True)
class ClusterEvent:
    """Something the operator should see that is not a batch finishing.

    ``kind``: ``no_workers``, ``workers``, ``worker_lost``, ``batch_rerun``, ``stopping`` or
    ``stopped``; ``message``: one line for a person; ``fields``: JSON-ready details (the JSON
    log writes them as they are).
    """

    kind: str
    message: str
    fields: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "fields": dict(self.fields)}

    @classmethod
    def from_dict(cls, d: dict) -> ClusterEvent:
        return cls(d["kind"], d["message"], dict(d.get("fields", {})))


OnEvent = Callable[[ClusterEvent], None]


def duration(seconds: float) -> str:
    """``45 s``, ``2 min 30 s``, ``1 h 05 min``."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# --- stopping -------------------------------------------------------------------------------


def _never() -> None:
    return None


def in_dask_worker() -> bool:
    """Whether this code runs in a Dask worker (not in the driver's own process)."""
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def stop_check(name: str | None, every_s: float = STOP_CHECK_S) -> Callable[[], None]:
    """The check a task calls between units of work: raises :class:`BatchStopped` once the
    driver has set the Dask event ``name``. A no-op outside a Dask worker or without a name.
    It asks the scheduler at most every ``every_s`` seconds (one small message)."""
    if not name or not in_dask_worker():  # not on a Dask worker: Ctrl-C reaches the task itself
        return _never
    from distributed import Event

    event, last = Event(name), [float("-inf")]

    def check() -> None:
        now = time.monotonic()
        if now - last[0] < every_s:
            return
        last[0] = now
        if event.is_set():
            raise BatchStopped(
                "stopped by the driver (Ctrl-C or SIGTERM) before it finished; nothing of this "
                "batch was written, and the next run of the same command does it again"
            )

    return check


def _running_keys(dask_worker) -> list[str]:
    """The keys this worker is running now (called on every worker by ``client.run``)."""
    return [str(key) for key in list(dask_worker.active_threads.values())]


def running(client, keys: set[str]) -> dict[str, list[str]]:
    """worker -> keys of ``keys`` it is running now."""
    try:
        found = client.run(_running_keys, on_error="ignore")
    except Exception:  # a worker that cannot answer is not running our batches for long
        return {}
    return {w: [k for k in ks if k in keys] for w, ks in found.items() if set(ks) & keys}


def stop_batches(
    client,
    name: str,
    futures: list,
    on_event: OnEvent | None,
    wait: bool,
    wait_s: float = STOP_WAIT_S,
) -> int:
    """Stop a stage's batches: set the stop event (running batches stop at their next check),
    cancel the queued ones and, when the workers outlive this process (``wait``: an existing
    scheduler), wait up to ``wait_s`` for the running ones to stop. Returns how many batches
    still run on the workers (0 when all stopped)."""
    from distributed import Event

    emit = on_event or (lambda e: None)
    keys = {str(f.key) for f in futures}
    Event(name, client=client).set()
    client.cancel(futures)
    busy = running(client, keys) if wait else {}
    if not busy:
        return 0
    count = sum(map(len, busy.values()))
    emit(
        ClusterEvent(
            "stopping",
            f"stopping {count} batch(es) running on the workers (at their next epoch)",
            {"running": count, "workers": sorted(busy)},
        )
    )
    deadline = time.monotonic() + wait_s
    while busy and time.monotonic() < deadline:
        time.sleep(0.2)
        busy = running(client, keys)
    left = sum(map(len, busy.values()))
    if left == 0:
        Event(name, client=client).clear()  # nothing will ask again: forget it on the scheduler
        emit(ClusterEvent("stopped", f"stopped {count} running batch(es)", {"stopped": count}))
    else:
        emit(
            ClusterEvent(
                "stopped",
                f"{left} batch(es) still running after {wait_s:.0f} s: they stop at their next "
                "epoch",
                {"stopped": count - left, "still_running": left},
            )
        )
    return left


# --- watching -------------------------------------------------------------------------------


class ClusterWatch:
    """Watches a stage's batches from the driver and reports what the operator should know.

    Use as a context manager around the wait for results and call :meth:`poll` often (it does
    its work at most every :data:`POLL_S`). ``batches``: Dask key -> batch (``batch_id``,
    ``runs``); ``hint``: what to do when no worker comes; ``job_errors``: a callable giving the
    last job submission error of a jobqueue cluster, or ``None``.
    """

    def __init__(
        self,
        client,
        batches: dict,
        on_event: OnEvent | None,
        warn_after_s: float,
        hint: str = "",
        job_errors: Callable[[], str | None] | None = None,
    ):
        self.client, self.batches, self.on_event = client, batches, on_event
        self.warn_after_s, self.hint, self.job_errors = warn_after_s, hint, job_errors
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.deaths: Counter = Counter()
        self.started = self.last_poll = time.monotonic()
        self.waiting_since: float | None = None
        self.warned = 0  # no_workers events emitted in the current wait

    def __enter__(self) -> ClusterWatch:
        if self.on_event:
            self.client.subscribe_topic("all", self.events.put)
        return self

    def __exit__(self, *exc) -> None:
        if self.on_event:
            with suppress(Exception):
                self.client.unsubscribe_topic("all")

    def emit(self, kind: str, message: str, **fields) -> None:
        if self.on_event:
            self.on_event(ClusterEvent(kind, message, fields))

    def poll(self, force: bool = False) -> None:
        """Report lost workers and rerun batches, and a wait without workers."""
        now = time.monotonic()
        if not self.on_event or (not force and now - self.last_poll < POLL_S):
            return
        self.last_poll = now
        while not self.events.empty():
            _, msg = self.events.get()
            if isinstance(msg, dict) and msg.get("action") == "remove-worker":
                self._removed(msg)
        self._check_workers(now)

    def _removed(self, msg: dict) -> None:
        worker = str(msg.get("worker"))
        ours = sorted(str(k) for k in msg.get("processing-tasks", ()) if str(k) in self.batches)
        if msg.get("expected") and not ours:
            return  # a worker retired on purpose (e.g. adaptive scaling), holding none of ours
        ids = [self.batches[k].batch_id for k in ours]
        how = "closed" if msg.get("expected") else "lost (died or disconnected)"
        self.emit("worker_lost", f"worker {worker} was {how}", worker=worker, batch_ids=ids)
        for key in ours:
            batch = self.batches[key]
            self.deaths[key] += 1
            self.emit(
                "batch_rerun",
                f"batch {batch.batch_id} was on {worker} when it was lost: Dask runs it again "
                "on another worker",
                batch_id=batch.batch_id,
                run_ids=[r.run_id for r in batch.runs],
                worker=worker,
                worker_losses=self.deaths[key],
            )

    def _check_workers(self, now: float) -> None:
        try:
            count = len(self.client.nthreads())
        except Exception:  # the scheduler is busy or gone: the results loop will say so
            return
        if count:
            if self.warned:
                waited = now - self.waiting_since
                self.emit(
                    "workers",
                    f"{count} worker(s) connected after {duration(waited)}",
                    workers=count,
                    waited_s=round(waited, 1),
                )
            self.waiting_since, self.warned = None, 0
            return
        self.waiting_since = self.waiting_since or now
        waited = now - self.waiting_since
        if waited >= self.warn_after_s * (self.warned + 1):
            self.warned += 1
            error = self.job_errors() if self.job_errors else None
            text = f"no Dask worker has connected for {duration(waited)}"
            text += f"; {self.hint}" if self.hint else ""
            text += f"; the last worker job submission failed: {error}" if error else ""
            self.emit("no_workers", text, waited_s=round(waited, 1), job_error=error)
