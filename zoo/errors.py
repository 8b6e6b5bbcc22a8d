"""The tree of errors `zoo` raises: one root, one subclass per stage.

Each stage error also inherits the builtin it refines, so callers that catch ``ValueError``
or ``OSError`` keep working. Messages say what went wrong, where (file, key path, run id),
what is allowed, and how to fix it.
"""

from __future__ import annotations


class ZooError(Exception):
    """Root of every error raised by `zoo`."""


class RecipeError(ZooError, ValueError):
    """A recipe is malformed: unknown keys, wrong types, values outside the allowed set.

    ``problems`` lists every problem found, each as ``"<dotted.path>: <message>"``.
    """

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"{source}: {n} problem{'s' if n != 1 else ''} in the recipe:\n{lines}")


class TaskError(ZooError, ValueError):
    """A task's data cannot be found or read, or does not fit the model."""


class ModelError(ZooError, ValueError):
    """An architecture cannot be built for the given task or configuration."""


class TrainingError(ZooError, RuntimeError):
    """Training failed for a reason other than a diverged model (those are rows, not errors)."""


class LandscapeError(ZooError, RuntimeError):
    """The landscape stage cannot annotate: checkpoints it needs are not in the store."""


class StudyError(ZooError, ValueError):
    """A study cannot run: an epoch that is not a checkpoint, a second task that does not fit
    the models, or an unknown study kind."""


class StoreError(ZooError, OSError):
    """A shard or the manifest is missing, unreadable or corrupt."""


class BuildError(ZooError, ValueError):
    """The dataset folder cannot be built from the store."""


class DistError(ZooError, RuntimeError):
    """Some population batches failed on the cluster; the message lists them and how to retry."""


class BatchStopped(DistError):
    """A batch stopped early on its worker because the driver was interrupted (Ctrl-C, SIGTERM):
    it wrote nothing, and the next run of the same command does it again."""


class AugmentError(ZooError, ValueError):
    """A weight-space transform cannot apply: not a symmetry of the layout's activation, a
    setting out of range, or a column the batch does not have."""


class HubError(ZooError, RuntimeError):
    """Publishing to or loading from the Hugging Face Hub failed: no or a refused token, a repo
    that holds another dataset, or a network failure (the message says how to resume)."""


class GeneratorError(ZooError, ValueError):
    """Generated weights that cannot be evaluated (wrong layout, NaN, unreadable file)."""
