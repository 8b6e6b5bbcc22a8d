"""zoo: generate, annotate and publish model zoos as weight-space datasets.

Public API (every name is listed, as a plain import, in ``zoo/__init__.pyi``)::

    recipe = zoo.load_recipe("pipelines/quickstart.yaml")
    runs = zoo.expand_recipe(recipe)              # one RunConfig per model
    folder = zoo.run(recipe)                      # train -> landscape -> build; the dataset folder
    ds, layout = zoo.load(folder, split="train")  # torch format, and the config's Layout
    net = zoo.to_module(ds[0], layout)            # a working torch.nn.Module

The package, by layer (imports point down only):

- ``cli/`` the ``zoo`` command; ``dist/`` where batches run (Dask) and ``pipeline``, the stages
  in order;
- ``stages/`` plan, train, landscape, build: each a function of the output folder;
- ``nn/`` architectures, population forward, inits, optimizers; ``tasks/`` data sources;
  ``store/`` shards, manifest, files; ``hub/`` push and load; ``weightspace/`` augment, align,
  learn, generators;
- ``recipe/`` recipes and runs; ``layout``, ``naming``, ``streams``, ``errors``: values.
"""

import ast
import importlib
from pathlib import Path

__version__ = "0.1.0"
SCHEMA_VERSION = 2  # 2: run ids exclude the checkpoint schedule (issue 13)


def _public_names() -> dict[str, str]:
    """Name -> module, from the ``from zoo.x import name as name`` lines of ``__init__.pyi``."""
    stub = ast.parse((Path(__file__).parent / "__init__.pyi").read_text())
    return {
        alias.asname or alias.name: node.module
        for node in stub.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


_PUBLIC = _public_names()
__all__ = sorted([*_PUBLIC, "SCHEMA_VERSION", "__version__"])


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
