"""zoo: generate, annotate and publish model zoos as weight-space datasets.

Public API::

    recipe = zoo.load_recipe("pipelines/quickstart.yaml")
    runs = zoo.expand_recipe(recipe)              # one RunConfig per model
    folder = zoo.run(recipe)                      # train -> build; returns the dataset folder
    ds = datasets.load_dataset(str(folder), split="train")
    net = zoo.to_module(ds[0], zoo.load_layout(folder))
"""

__version__ = "0.1.0"
SCHEMA_VERSION = 1

# name -> module: imported on first use (PEP 562), so `import zoo.training` in a Dask worker or
# `zoo --help` does not pay for `datasets`, the Hub client and matplotlib.
_EXPORTS = {
    "loss_barrier": "align", "match_weights": "align", "AUGMENTATIONS": "augment",
    "Augmenter": "augment", "build_dataset": "build", "load_layout": "build",
    "ZooError": "errors", "pull": "hub", "push": "hub", "Layout": "layout",
    "PermutationSpec": "layout", "apply_permutation": "layout", "flatten": "layout",
    "unflatten": "layout", "iter_weights": "loader", "load": "loader",
    "ARCHITECTURES": "models", "build_model": "models", "forward_population": "models",
    "to_module": "models", "plan": "pipeline", "run": "pipeline", "train": "pipeline",
    "Recipe": "recipe", "RunConfig": "recipe", "expand_recipe": "recipe",
    "load_recipe": "recipe", "TASKS": "tasks", "load_task": "tasks",
}  # fmt: skip


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "ARCHITECTURES", "Layout", "PermutationSpec", "Recipe", "RunConfig", "SCHEMA_VERSION",
    "TASKS", "ZooError", "__version__", "apply_permutation", "build_dataset", "build_model",
    "expand_recipe", "flatten", "forward_population", "load_layout", "load_recipe", "load_task",
    "plan", "run", "to_module", "train", "unflatten", "iter_weights", "load", "pull", "push",
    "AUGMENTATIONS", "Augmenter", "loss_barrier", "match_weights",
]  # fmt: skip
