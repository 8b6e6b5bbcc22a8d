"""Publish while training (issue 17): ``zoo run RECIPE --push REPO`` (or the recipe's
``output.push``) pushes what is finished to the Hub at intervals, by time and by train batches.

A week-long zoo is then visible, and usable, from its first batches. Each push:

1. builds the dataset folder from the batches the manifest holds (only new or changed parts
   are written: :func:`zoo.stages.build.build_dataset`), so its card says how many of the
   recipe's runs it holds;
2. pushes it as one commit (data files, ``layout.json`` and the card together:
   :func:`zoo.hub.push.push` with ``single_commit``), so the repo moves from one loadable
   dataset to the next at once; a run killed at any moment leaves the last push, and the next
   ``zoo run`` trains what is missing and goes on pushing (only what the Hub lacks is sent).

A push that fails (the network, the Hub) does not stop training: it is reported and tried again
at the next interval; the last push, after the final build, is tagged and must succeed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from zoo.errors import ZooError
from zoo.hub.client import resolve_token
from zoo.hub.push import PushResult, push
from zoo.recipe import Recipe, expand_recipe
from zoo.stages.build import build_dataset
from zoo.store.manifest import Manifest

OnPush = Callable[["PushEvent"], None]


@dataclass(frozen=True)
class PushSettings:
    """``output.push`` of a recipe (see ``schemas/recipe.schema.json``)."""

    repo_id: str
    every_s: float = 1800.0
    every_batches: int = 0
    private: bool = False
    revision: str | None = None

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> PushSettings | None:
        """The recipe's settings; ``None`` where it names no repo."""
        push = dict(recipe.resolved["output"].get("push") or {})
        if not push.get("repo_id"):
            return None
        return cls(**push)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> PushSettings:
        return cls(**d)


@dataclass(frozen=True)
class PushEvent:
    """What a push did, for the command line: ``runs`` of ``planned`` pushed (``final``: the
    finished zoo), the commit and the bytes sent; or the error of a failed snapshot push."""

    repo_id: str
    runs: int
    planned: int
    final: bool
    result: PushResult | None = None
    error: str | None = None


class Publisher:
    """Pushes snapshots of a zoo as its train batches finish.

    Call :meth:`batch_done` after each finished batch (:meth:`watch` wraps a stage's progress
    callback to do so), and :meth:`push` with ``final=True`` once the zoo is built.
    """

    def __init__(
        self,
        recipe: Recipe,
        settings: PushSettings,
        on_push: OnPush | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        resolve_token()  # no token: say so before training starts, not after the first hour
        self.recipe, self.settings, self.on_push, self.clock = recipe, settings, on_push, clock
        self.run_ids = {r.run_id for r in expand_recipe(recipe)}
        self.planned = len(self.run_ids)
        self.pending, self.last = 0, clock()

    def watch(self, progress=None):
        """A stage progress callback that also counts finished batches (and pushes when due)."""

        def observe(event: str, batch, error: str | None) -> None:
            if progress is not None:
                progress(event, batch, error)
            if event == "done":
                self.batch_done()

        return observe

    def batch_done(self) -> None:
        """One more train batch is in the store; push if the interval has passed."""
        self.pending += 1
        if self.due():
            self.push()

    def due(self) -> bool:
        """A batch finished since the last push, and ``every_s`` seconds or ``every_batches``
        batches have passed."""
        s = self.settings
        by_batches = s.every_batches and self.pending >= s.every_batches
        return bool(self.pending) and (by_batches or self.clock() - self.last >= s.every_s)

    def push(self, final: bool = False) -> PushEvent:
        """Build what the store holds and push it as one commit; a failed snapshot push is
        reported (``PushEvent.error``) and training goes on, a failed final push raises."""
        s = self.settings
        try:
            folder = build_dataset(self.recipe, self.recipe.out_dir)
            runs = len(Manifest(self.recipe.out_dir).done_run_ids("train") & self.run_ids)
            kind = "zoo" if final else "snapshot"
            result = push(
                folder,
                s.repo_id,
                private=s.private,
                revision=s.revision,
                message=f"zoo run: {kind} of {runs} of {self.planned} planned runs",
                single_commit=True,
                tagged=final,
            )
            event = PushEvent(s.repo_id, runs, self.planned, final, result)
        except ZooError as err:  # the Hub, the network, a shard the build refuses
            if final:
                raise
            event = PushEvent(s.repo_id, 0, self.planned, final, error=str(err))
        self.pending, self.last = 0, self.clock()
        if self.on_push:
            self.on_push(event)
        return event
