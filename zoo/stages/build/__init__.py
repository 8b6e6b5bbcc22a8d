"""The build stage: the store -> a Hugging Face dataset folder (Parquet, layout.json, card).

``collect`` gathers the rows, ``parquet`` types and writes them, ``plot`` draws the figures,
``card`` writes the dataset card, ``dataset`` runs those steps (:func:`build_dataset`).
"""

from zoo.stages.build.collect import plan_build
from zoo.stages.build.dataset import build_dataset, finish_build, parts_to_write

__all__ = ["build_dataset", "finish_build", "parts_to_write", "plan_build"]
