"""Every random stream of ``zoo``, declared once, and the two seeding helpers that use them.

All randomness is drawn from ``np.random.SeedSequence([seed, stream, *keys])``: one stream
number per use of randomness, so that the same seed used for two purposes (a run's init and its
data order, a task's train and test subsets) still gives independent draws. Never ``hash()``,
never a global RNG.

Two seeds are in play, and the numbers are distinct within each:

- **data seeds** (a task's ``split_seed``, ``teacher_seed``, ``order_seed`` or ``coef_seed``):
  the task streams 1-7, 60-62 and 70;
- **run and tool seeds** (a run's ``seed``, a landscape probe's ``seed``, an augmenter's or a
  baseline's ``seed``): every other stream.

The task streams 1-3 share their numbers with the run streams 1-3 (a task with split seed 0
and a run with seed 0 both draw from ``SeedSequence([0, 1])``): that was so before this
registry existed, and renumbering would change the bytes of every published zoo. New streams
take numbers of their own, distinct from every other (``tests/test_streams.py``).
Sampled hyperparameters are keyed by point and key instead (:mod:`zoo.recipe.sampling`).
Keys tell draws of one stream apart (epoch, worker, call); numpy's ``SeedSequence`` ignores
trailing zero words, so a last key of 0 draws what no key draws: count keys from 1 where that
matters.
"""

from __future__ import annotations

import numpy as np
import torch

# -- data seeds: a task's split_seed / teacher_seed ----------------------------------------------
SPLIT = 1  # train/test split of a dataset
SUBSET_TRAIN = 2  # seeded subset of the training split (task.n_train)
SUBSET_TEST = 3  # seeded subset of the test split (task.n_test)
TEACHER = 4  # teacher network of teacher_student
X_TRAIN = 5  # teacher_student training inputs
X_TEST = 6  # teacher_student test inputs
LABEL_NOISE = 7  # which training labels are replaced, and by what
SIGNAL_ORDER = 60  # signal tasks: which source image is task.index k (seed: task.order_seed)
SIGNAL_COEFFS = 61  # inr_sinusoid: the coefficients of signal task.index (seed: task.coef_seed)
PIXEL_HOLDOUT = 62  # inr_image: the pixels held out as the test split (seed: task.order_seed)
SEQUENCES = 70  # the random sequences of the algorithmic tasks (copy, reverse, sort)

DATA_STREAMS = {
    "SPLIT": SPLIT,
    "SUBSET_TRAIN": SUBSET_TRAIN,
    "SUBSET_TEST": SUBSET_TEST,
    "TEACHER": TEACHER,
    "X_TRAIN": X_TRAIN,
    "X_TEST": X_TEST,
    "LABEL_NOISE": LABEL_NOISE,
    "SIGNAL_ORDER": SIGNAL_ORDER,
    "SIGNAL_COEFFS": SIGNAL_COEFFS,
    "PIXEL_HOLDOUT": PIXEL_HOLDOUT,
    "SEQUENCES": SEQUENCES,
}

# -- run and tool seeds ----------------------------------------------------------------------------
INIT = 1  # a run's initial weights (seed: the run's)
DATA_ORDER = 2  # a run's minibatch order, per epoch (keys: epoch)
DROPOUT = 3  # a run's dropout masks
LANCZOS = 11  # start vector of the Hessian's Lanczos iteration (keys: epoch)
TRACE = 12  # Rademacher probes of the Hutchinson trace (keys: epoch)
PROBE = 13  # the landscape probe sample (seed: landscape.probe.seed)
BEZIER = 14  # Bezier-curve fitting minibatches (keys: epoch)
ALIGN_ORDER = 21  # order of the weight-matching sweeps over permutation groups
AUGMENT = 31  # weight-space augmentations (keys: worker, call)
GENERATOR_NOISE = 41  # generator evaluation: the noise baseline
GENERATOR_AVERAGE = 42  # generator evaluation: the average-of-k baseline
GENERATOR_GAUSSIAN = 43  # generator evaluation: the per-coordinate Gaussian baseline
LEARN = 51  # downstream baselines: weight-space nets' init (key 1) and augmentations (key 2)
INIT_SIGNAL = 63  # signal tasks: a run's initial weights from its seed and task.index
STUDY_ORDER = 80  # studies: fine-tune minibatch order (keys: study, epoch)
STUDY_HEAD = 81  # studies: the fresh readout of a transfer fine-tune (seed: the run's)
STUDY_PERMUTATION = 82  # studies: phase-label shuffles of the permutation test

RUN_STREAMS = {
    "INIT": INIT,
    "DATA_ORDER": DATA_ORDER,
    "DROPOUT": DROPOUT,
    "LANCZOS": LANCZOS,
    "TRACE": TRACE,
    "PROBE": PROBE,
    "BEZIER": BEZIER,
    "ALIGN_ORDER": ALIGN_ORDER,
    "AUGMENT": AUGMENT,
    "GENERATOR_NOISE": GENERATOR_NOISE,
    "GENERATOR_AVERAGE": GENERATOR_AVERAGE,
    "GENERATOR_GAUSSIAN": GENERATOR_GAUSSIAN,
    "LEARN": LEARN,
    "INIT_SIGNAL": INIT_SIGNAL,
    "STUDY_ORDER": STUDY_ORDER,
    "STUDY_HEAD": STUDY_HEAD,
    "STUDY_PERMUTATION": STUDY_PERMUTATION,
}


def numpy_rng(seed: int, stream: int, *keys: int) -> np.random.Generator:
    """A numpy generator on ``SeedSequence([seed, stream, *keys])``.

    Example:
        >>> int(numpy_rng(0, SPLIT).integers(100))
        52
    """
    return np.random.default_rng(np.random.SeedSequence([seed, stream, *keys]))


def torch_generator(seed: int, stream: int, *keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``SeedSequence([seed, stream, *keys])`` (its first
    64-bit word, less the top bit: ``manual_seed`` takes a non-negative int64)."""
    state = np.random.SeedSequence([seed, stream, *keys]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] % (2**63)))
