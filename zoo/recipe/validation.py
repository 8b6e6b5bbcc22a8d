"""Recipe validation: every problem of a recipe dict, each with its dotted key path and what is
allowed, so that they are reported all at once before any work is done.

The JSON Schema comes first; the checks it cannot express follow once it passes: keys set for a
kind they don't apply to, grid and sampled values checked against the key they set, and
constraints across keys (checkpoint epochs within training, split fractions summing to 1).
"""

from __future__ import annotations

import math
from typing import Any

import jsonschema

from zoo.recipe.sampling import (
    checkpoint_epochs,
    distribution_problems,
    grid_values,
    space_size,
)
from zoo.recipe.schema import (
    SECTIONS,
    applies,
    key_schema,
    recipe_schema,
    section_schema,
    signal_tasks,
)


def recipe_problems(data: dict) -> list[str]:
    """Every problem of a recipe dict (empty: valid). The cross-key checks run only on a
    recipe the schema accepts, as they rely on its types."""
    problems = schema_problems(data)
    if problems:
        return problems
    return (
        applicability_problems(data)
        + grid_problems(data)
        + sample_problems(data)
        + consistency_problems(data)
    )


def schema_problems(data: dict) -> list[str]:
    """Every JSON Schema violation, described with its key path and the allowed values."""
    validator = jsonschema.Draft202012Validator(recipe_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    return [_describe(error) for error in errors]


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    schema, value = error.schema, error.instance
    kind = error.validator
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed))
        return f"{where}: unknown key(s) {extra}; allowed keys: {allowed}"
    if kind == "enum":
        return f"{where}: {value!r} is not allowed; allowed values: {schema['enum']}"
    if kind == "const":
        return f"{where}: must be {schema['const']!r}, got {value!r}"
    if kind == "required":
        return f"{where}: {error.message}"
    if kind == "type":
        return f"{where}: expected {schema['type']}, got {value!r} ({type(value).__name__})"
    if kind == "pattern" and where in ("grid", "sample.params"):
        return (
            f"{where}: key {value!r} is not a dotted path into task, model, init or train "
            f"(e.g. 'train.lr', 'model.width')"
        )
    if kind == "oneOf" and where.startswith("grid."):
        return (
            f"{where}: {value!r} is neither a list of values nor {{range: [start, stop]}} "
            "(integers, stop excluded)"
        )
    if kind == "oneOf" and where.startswith("sample.params."):
        return (
            f"{where}: {value!r} is not a distribution; use one of {{choice: [v, ...]}}, "
            "{uniform: [low, high]}, {log_uniform: [low, high]} or {int: [low, high]}"
        )
    return f"{where}: {error.message}"


def applicability_problems(data: dict) -> list[str]:
    """Keys set for a task/arch/optimizer they don't apply to (e.g. momentum with adam)."""
    out = []
    for section in SECTIONS:
        sch = section_schema(section)
        disc = sch.get("x-zoo-discriminator")
        if not disc:
            continue
        values = data.get(section, {})
        kind = values.get(disc, sch["properties"][disc].get("default"))
        for key in values:
            prop = sch["properties"][key]
            if not applies(prop, kind):
                users = sorted(prop["x-zoo-for"])
                out.append(
                    f"{section}.{key}: does not apply to {section}.{disc} {kind!r} "
                    f"(it applies to: {users}); remove it"
                )
    return out


def _value_problems(prop: dict, value: Any, where: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(prop)
    return [_describe(e).replace("(top level)", where, 1) for e in validator.iter_errors(value)]


def _key_problems(key: str, where: str) -> list[str]:
    section, name = key.split(".")
    props = section_schema(section)["properties"]
    if name not in props:
        return [f"{where}: {section} has no key {name!r}; allowed keys: {sorted(props)}"]
    return []


def grid_problems(data: dict) -> list[str]:
    """Each grid value checked against the schema of the key it sets."""
    out = []
    for key, values in data.get("grid", {}).items():
        problems = _key_problems(key, f"grid.{key}")
        if not problems and isinstance(values, dict):
            problems += _range_problems(key, values["range"])
        elif not problems:
            for i, value in enumerate(values):
                problems += _value_problems(key_schema(key), value, f"grid.{key}[{i}]")
        out += problems
    return out + _never_applied(data)


def _range_problems(key: str, bounds: list[int]) -> list[str]:
    """A grid ``range`` must be non-empty, and its first and last values fit the key."""
    where, values = f"grid.{key}.range", grid_values({"range": bounds})
    if len(bounds) == 3 and bounds[2] == 0:
        return [f"{where}: step must not be 0, got {bounds}"]
    if not values:
        return [f"{where}: {bounds} is empty (Python's range: stop is excluded); e.g. [0, 10]"]
    prop = key_schema(key)
    return _value_problems(prop, values[0], f"{where}[first]") + _value_problems(
        prop, values[-1], f"{where}[last]"
    )


def _never_applied(data: dict) -> list[str]:
    """Grid or sampled keys that apply to none of the runs (e.g. ``init.rank`` while no run uses
    ``init.scheme: low_rank``): they would be dropped silently."""
    varied = {k: grid_values(v) for k, v in data.get("grid", {}).items()}
    for key, dist in ((data.get("sample") or {}).get("params") or {}).items():
        varied[key] = dist.get("choice", [])
    out = []
    for key in varied:
        section, name = key.split(".")
        sch = section_schema(section)
        disc, prop = sch.get("x-zoo-discriminator"), sch["properties"].get(name, {})
        if not disc or "x-zoo-for" not in prop:
            continue
        base = data.get(section, {}).get(disc, sch["properties"][disc].get("default"))
        kinds = varied.get(f"{section}.{disc}") or [base]
        if not set(kinds) & set(prop["x-zoo-for"]):
            out.append(
                f"{key}: varied, but it applies only to {section}.{disc} "
                f"{sorted(prop['x-zoo-for'])} and every run has {section}.{disc} in {kinds}"
            )
    return out


def consistency_problems(data: dict) -> list[str]:
    """Constraints across keys: checkpoint epochs within training, split fractions sum to 1."""
    out = []
    epochs = [data["train"]["epochs"], *grid_values(data.get("grid", {}).get("train.epochs", []))]
    sampled = ((data.get("sample") or {}).get("params") or {}).get("train.epochs", {})
    epochs += [min(v) for v in sampled.values()]
    wanted = (data.get("checkpoints") or {}).get("epochs") or []
    too_late = [e for e in wanted if e > min(epochs)]
    if too_late:
        out.append(
            f"checkpoints.epochs: {too_late} exceed train.epochs ({min(epochs)}); "
            f"checkpoint epochs must lie in 0..train.epochs"
        )
    out += _landscape_at_problems(data, epochs) + _signal_problems(data)
    splits = (data.get("output") or {}).get("splits")
    if splits is not None and abs(sum(splits.values()) - 1.0) > 1e-6:
        out.append(f"output.splits: fractions {splits} sum to {sum(splits.values())}, not 1")
    split_by = (data.get("output") or {}).get("split_by", "run")
    if "." in split_by:
        out += _key_problems(split_by, "output.split_by")
    return out


def _signal_problems(data: dict) -> list[str]:
    """Signal tasks train on per-model targets; the landscape stage scores shared labels."""
    task = data["task"]["name"]
    if task in signal_tasks() and (data.get("landscape") or {}).get("metrics"):
        return [
            f"landscape.metrics: the landscape stage needs a classification task, and task.name "
            f"{task!r} fits one signal per run (regression); remove landscape.metrics"
        ]
    return []


def _landscape_at_problems(data: dict, epochs: list[int]) -> list[str]:
    """``landscape.at`` must name epochs that every run saves a checkpoint at."""
    at = (data.get("landscape") or {}).get("at") or []
    if not at or not (data.get("landscape") or {}).get("metrics"):
        return []
    spec = data.get("checkpoints") or {}
    saved = set.intersection(*(set(checkpoint_epochs(spec, e)) for e in set(epochs)))
    missing = sorted(set(at) - saved)
    if not missing:
        return []
    return [
        f"landscape.at: {missing} are not checkpoint epochs of every run; allowed: "
        f"{sorted(saved)} (add them to checkpoints.epochs)"
    ]


def sample_problems(data: dict) -> list[str]:
    """Each sampled key checked: it exists, is not also gridded, and its distribution fits it."""
    sample = data.get("sample")
    if not sample:
        return []
    out = []
    for key, dist in sample["params"].items():
        where = f"sample.params.{key}"
        problems = _key_problems(key, where)
        if not problems and key in data.get("grid", {}):
            problems = [f"{where}: {key} is also in grid; a key is either gridded or sampled"]
        out += problems or distribution_problems(key_schema(key), dist, where, _value_problems)
    size = math.prod(space_size(d) for d in sample["params"].values())
    if not out and size < sample["count"]:
        out.append(
            f"sample.count: {sample['count']} distinct points asked for, but sample.params has "
            f"only {size}; lower sample.count, add a continuous distribution or use grid"
        )
    return out
