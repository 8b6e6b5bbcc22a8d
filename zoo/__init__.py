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

from .align import loss_barrier, match_weights  # noqa: E402
from .augment import AUGMENTATIONS, Augmenter  # noqa: E402
from .build import build_dataset, load_layout  # noqa: E402
from .errors import ZooError  # noqa: E402
from .hub import pull, push  # noqa: E402
from .layout import Layout, PermutationSpec, apply_permutation, flatten, unflatten  # noqa: E402
from .loader import iter_weights, load  # noqa: E402
from .models import ARCHITECTURES, build_model, forward_population, to_module  # noqa: E402
from .pipeline import plan, run, train  # noqa: E402
from .recipe import Recipe, RunConfig, expand_recipe, load_recipe  # noqa: E402
from .tasks import TASKS, load_task  # noqa: E402

__all__ = [
    "ARCHITECTURES", "Layout", "PermutationSpec", "Recipe", "RunConfig", "SCHEMA_VERSION",
    "TASKS", "ZooError", "__version__", "apply_permutation", "build_dataset", "build_model",
    "expand_recipe", "flatten", "forward_population", "load_layout", "load_recipe", "load_task",
    "plan", "run", "to_module", "train", "unflatten", "iter_weights", "load", "pull", "push",
    "AUGMENTATIONS", "Augmenter", "loss_barrier", "match_weights",
]  # fmt: skip
