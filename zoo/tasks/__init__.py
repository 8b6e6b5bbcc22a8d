"""Tasks: the data a population trains and is evaluated on, one module per data source.

:data:`TASKS` maps a recipe's ``task.name`` to its loader; :func:`load_task` dispatches on it and
caches the result per process, so a worker reads the data once and all models of a population
share the same tensors (callers must not modify them in place). The contract every loader
returns is :class:`zoo.tasks.base.Task`.

Sources: ``digits`` (scikit-learn's bundled digits), ``fashion_mnist`` (idx files,
:mod:`zoo.tasks.idx`), ``hf`` (any Hugging Face dataset, :mod:`zoo.tasks.hf`), and the generated
``teacher_student`` and ``modular`` (:mod:`zoo.tasks.teacher_student`, :mod:`zoo.tasks.modular`).
Sequence tasks (token ids, for transformers): ``modular_tokens`` (:mod:`zoo.tasks.modular`),
``algorithmic`` (copy, reverse, sort; :mod:`zoo.tasks.sequences`) and ``char_lm`` (a text file or
a Hugging Face text dataset; :mod:`zoo.tasks.text`). Signal tasks ``inr_image`` and
``inr_sinusoid`` (:mod:`zoo.tasks.signals`), where each run fits its own signal (``task.index``)
on coordinates shared by its population.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable

from zoo.errors import TaskError
from zoo.naming import canonical_json
from zoo.tasks import digits, hf, idx, modular, sequences, signals, teacher_student, text
from zoo.tasks.base import Signal, Task, make_task
from zoo.tasks.digits import load_digits_task
from zoo.tasks.hf import load_hf
from zoo.tasks.idx import load_fashion_mnist
from zoo.tasks.modular import load_modular, load_modular_tokens
from zoo.tasks.sequences import load_algorithmic
from zoo.tasks.signals import load_inr_image, load_inr_sinusoid
from zoo.tasks.teacher_student import load_teacher_student
from zoo.tasks.text import load_char_lm

__all__ = [
    "TASKS",
    "Signal",
    "Task",
    "clear_task_cache",
    "describe_task",
    "load_task",
    "make_task",
]

_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()

TASKS: dict[str, Callable[[dict], Task]] = {
    "digits": load_digits_task,
    "fashion_mnist": load_fashion_mnist,
    "teacher_student": load_teacher_student,
    "modular": load_modular,
    "hf": load_hf,
    "modular_tokens": load_modular_tokens,
    "algorithmic": load_algorithmic,
    "char_lm": load_char_lm,
    "inr_image": load_inr_image,  # signal tasks: one signal per run (zoo/tasks/signals.py)
    "inr_sinusoid": load_inr_sinusoid,
}


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _load_cached(key: str) -> Task:
    """Load the task whose canonical JSON config is ``key`` (cached per process)."""
    cfg = json.loads(key)
    return TASKS[cfg["name"]](cfg)


def load_task(cfg: dict) -> Task:
    """Load the task a config names, once per process per config.

    Args:
        cfg: the recipe's ``task:`` section (a dict with ``name`` and the task's keys); equal
            configs (as canonical JSON) share one cached Task and so the same tensors. A
            value ``""`` is read as null (absent): published rows write a null text so, and a
            config rebuilt from a row's ``task__`` columns then loads the same task.

    Returns:
        The Task; callers must not modify its tensors in place.

    Raises:
        TaskError: for an unknown name (listing the allowed ones) or data that cannot be loaded.
    """
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise TaskError(f"task config must be a mapping with a 'name' key, got {cfg!r}")
    if cfg["name"] not in TASKS:
        raise TaskError(
            f"task.name={cfg['name']!r} is not a known task; allowed: {', '.join(sorted(TASKS))}"
        )
    cfg = {k: (None if v == "" else v) for k, v in cfg.items()}
    try:
        key = canonical_json(cfg)
    except (TypeError, ValueError) as exc:
        raise TaskError(f"task config {cfg!r} is not plain JSON data ({exc}); use str/num") from exc
    # The lock makes concurrent threads of one worker wait for a single load, not race two.
    with _CACHE_LOCK:
        return _load_cached(key)


def clear_task_cache() -> None:
    """Forget every cached Task (e.g. in tests, or to free memory after a population)."""
    _load_cached.cache_clear()


DESCRIPTIONS: dict[str, Callable[[dict], str]] = {
    "digits": digits.describe,
    "fashion_mnist": idx.describe,
    "teacher_student": teacher_student.describe,
    "modular": modular.describe,
    "hf": hf.describe,
    "modular_tokens": modular.describe_tokens,
    "algorithmic": sequences.describe,
    "char_lm": text.describe,
    "inr_image": signals.describe_image,
    "inr_sinusoid": signals.describe_sinusoid,
}


def describe_task(cfg: dict) -> str:
    """How a task config's data is made, in words a consumer can reimplement: preprocessing,
    how the test set and the training subset are drawn (the card's "Data" section)."""
    return DESCRIPTIONS[cfg["name"]](cfg)
