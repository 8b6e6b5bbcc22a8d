"""Sampled hyperparameters and checkpoint schedules: the pure functions that turn a recipe's
``sample:`` and ``checkpoints:`` sections into values (validation: :mod:`zoo.recipe.validation`).

Sampling follows Unterthiner et al. 2020 ("Predicting neural network accuracy from weights"),
whose zoo draws every run's hyperparameters at random instead of from a grid. Draws are seeded
per point and per key, so a point's values never depend on how many points are drawn.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from zoo.errors import RecipeError
from zoo.naming import canonical_json

MAX_REDRAWS = 1000  # attempts to draw a point not drawn before


def distribution_problems(prop: dict, dist: dict, where: str, check: Callable) -> list[str]:
    """Problems of one distribution for the key whose schema is ``prop``: its values (choice)
    or both ends (uniform, log_uniform, int) are checked with ``check(prop, value, where)``,
    and a range must be ordered, positive for log_uniform, and fit the key's type."""
    ((kind, arg),) = dist.items()
    if kind == "choice":
        return [p for i, v in enumerate(arg) for p in check(prop, v, f"{where}[{i}]")]
    where, (low, high) = f"{where}.{kind}", arg
    types = prop.get("type", [])
    types = [types] if isinstance(types, str) else types
    wanted = "integer" if kind == "int" else "number"
    if wanted not in types and "number" not in types:
        allowed = types or prop.get("enum")
        return [f"{where}: draws {wanted}s but the key takes {allowed}; use choice"]
    out = []
    if not (low < high or (kind == "int" and low == high)):
        out.append(f"{where}: low {low} must be below high {high}")
    if kind == "log_uniform" and low <= 0:
        out.append(f"{where}: low must be > 0 for a log-uniform distribution, got {low}")
    return out + check(prop, low, f"{where}[0]") + check(prop, high, f"{where}[1]")


def space_size(dist: dict) -> float:
    """Number of distinct values of a distribution (``inf`` for continuous ones)."""
    ((kind, arg),) = dist.items()
    if kind == "choice":
        return len({canonical_json(v) for v in arg})
    return arg[1] - arg[0] + 1 if kind == "int" else math.inf


def _key_code(key: str) -> int:
    """A stable number for a dotted key (``hash()`` differs between processes)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)


def _draw(dist: dict, rng: np.random.Generator) -> Any:
    ((kind, arg),) = dist.items()
    if kind == "choice":
        return copy.deepcopy(arg[int(rng.integers(len(arg)))])
    low, high = arg
    if kind == "uniform":
        return float(rng.uniform(low, high))
    if kind == "log_uniform":
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return int(rng.integers(low, high + 1))


def sample_points(sample: dict) -> list[dict]:
    """The ``count`` points of a resolved ``sample:`` section, each ``{dotted key: value}``.

    Point i draws key k from ``SeedSequence([seed, i, code(k)])`` (``code``: sha256 of the key),
    so points do not depend on ``count`` or on the other keys: a larger ``count`` keeps the
    earlier points. A point equal to an earlier one is redrawn from
    ``SeedSequence([seed, i, code(k), attempt])``.

    Example:
        >>> pts = sample_points({"count": 3, "seed": 0,
        ...     "params": {"train.lr": {"log_uniform": [1e-4, 1e-1]}}})
        >>> len(pts), all(1e-4 <= p["train.lr"] < 1e-1 for p in pts)
        (3, True)
    """
    points, seen = [], set()
    for i in range(sample["count"]):
        for attempt in range(MAX_REDRAWS):
            extra = [attempt] if attempt else []
            point = {
                key: _draw(dist, np.random.default_rng([sample["seed"], i, _key_code(key), *extra]))
                for key, dist in sample["params"].items()
            }
            if canonical_json(point) not in seen:
                break
        else:
            raise RecipeError(
                "sample", [f"sample: point {i}: no new point after {MAX_REDRAWS} draws"]
            )
        seen.add(canonical_json(point))
        points.append(point)
    return points


def grid_values(values: list | dict) -> list:
    """The values of one grid key: a list as written, or the integers of ``{range: [start,
    stop(, step)]}`` (Python's ``range``: stop excluded), the compact form for keys with many
    values such as ``task.index``.

    Example:
        >>> grid_values({"range": [0, 3]}), grid_values({"range": [10, 0, -5]}), grid_values([1])
        ([0, 1, 2], [10, 5], [1])
    """
    if isinstance(values, dict):
        return list(range(*values["range"]))
    return list(values)


def log_epochs(count: int, epochs: int) -> list[int]:
    """``min(count, epochs)`` distinct epochs in 1..epochs, about evenly spaced in log(epoch),
    always 1 and ``epochs``: each is ``round(epochs ** (i / (n - 1)))``, pushed up to stay
    distinct (dense early: every epoch at the start, then wider gaps).

    Example:
        >>> log_epochs(6, 1000)
        [1, 4, 16, 63, 251, 1000]
    """
    n = min(count, epochs)
    if n == 1:
        return [epochs]
    out: list[int] = []
    for i in range(n):
        target = round(epochs ** (i / (n - 1)))
        out.append(min(max(target, out[-1] + 1 if out else 1), epochs - (n - 1 - i)))
    return out


def checkpoint_epochs(spec: dict, epochs: int) -> tuple[int, ...]:
    """The epochs a run saves: the union of ``spec``'s ``epochs``, ``every`` and ``log``
    (all empty: 0 and the last epoch), within 0..``epochs``.

    Example:
        >>> checkpoint_epochs({"epochs": [3], "every": 4, "log": None}, 10)
        (0, 3, 4, 8, 10)
    """
    wanted = set(spec.get("epochs") or [])
    if spec.get("every"):
        wanted |= {*range(0, epochs + 1, spec["every"]), epochs}
    if spec.get("log"):
        wanted |= {0, *log_epochs(spec["log"]["count"], epochs)}
    return tuple(sorted(e for e in (wanted or {0, epochs}) if e <= epochs))
