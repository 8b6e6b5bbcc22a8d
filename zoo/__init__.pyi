# The public API of `zoo`: what `zoo.X` is. `zoo/__init__.py` reads these lines to load each
# name on first use (PEP 562; the pattern of Scientific Python's SPEC 1), so `import zoo` and
# `zoo --help` do not import torch, `datasets` and matplotlib; editors and type checkers read
# them as plain imports.
from zoo.dist.pipeline import run as run
from zoo.dist.pipeline import study as study
from zoo.dist.pipeline import train as train
from zoo.errors import ZooError as ZooError
from zoo.hub.load import iter_weights as iter_weights
from zoo.hub.load import load as load
from zoo.hub.load import pull as pull
from zoo.hub.push import push as push
from zoo.layout import Layout as Layout
from zoo.layout import PermutationSpec as PermutationSpec
from zoo.layout import apply_permutation as apply_permutation
from zoo.layout import flatten as flatten
from zoo.layout import unflatten as unflatten
from zoo.nn.architectures import ARCHITECTURES as ARCHITECTURES
from zoo.nn.architectures import build_model as build_model
from zoo.nn.architectures import to_module as to_module
from zoo.nn.population import forward_population as forward_population
from zoo.recipe import Recipe as Recipe
from zoo.recipe import RunConfig as RunConfig
from zoo.recipe import expand_recipe as expand_recipe
from zoo.recipe import load_recipe as load_recipe
from zoo.stages.build import build_dataset as build_dataset
from zoo.stages.plan import plan as plan
from zoo.store.dataset import load_layout as load_layout
from zoo.tasks import TASKS as TASKS
from zoo.tasks import load_task as load_task
from zoo.weightspace.align import loss_barrier as loss_barrier
from zoo.weightspace.align import match_weights as match_weights
from zoo.weightspace.augment import AUGMENTATIONS as AUGMENTATIONS
from zoo.weightspace.augment import Augmenter as Augmenter

__version__: str
SCHEMA_VERSION: int
