"""algorithmic: copy, reverse and sort as token sequences (generated, no files).

A random sequence of ``length`` symbols is followed by a separator, then the answer, predicted
one token at a time (teacher forcing, as a decoder-only transformer reads it)::

    x = s_1 … s_L  SEP  o_1 … o_{L-1}         (2L tokens)
    y = ·   …  ·   o_1  o_2 … o_L             (· = IGNORE: the question is not scored)

with ``o = s`` (copy), ``reversed(s)`` (reverse) or ``sorted(s)`` (sort). Symbols are the tokens
``0 … symbols-1`` and the separator is ``symbols`` (a vocabulary of symbols + 1).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from zoo import streams
from zoo.errors import TaskError
from zoo.nn.objectives import IGNORE
from zoo.streams import numpy_rng
from zoo.tasks.base import Task, config_int, make_sequence_task

ALGORITHMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "copy": lambda s: s,
    "reverse": lambda s: s[:, ::-1],
    "sort": lambda s: np.sort(s, axis=1),
}


def distinct_sequences(n: int, length: int, symbols: int, seed: int) -> np.ndarray:
    """``(n, length)`` distinct random sequences over ``symbols`` symbols, in the order drawn
    (seeded by ``seed`` on stream ``SEQUENCES``; the first ``k`` rows do not depend on ``n``
    beyond the draws needed)."""
    if symbols**length < n:
        raise TaskError(
            f"algorithmic: {n} distinct sequences are asked for but only {symbols}^{length} = "
            f"{symbols**length} exist; raise task.length or task.symbols, or lower task.n_train "
            "and task.n_test"
        )
    rng = numpy_rng(seed, streams.SEQUENCES)
    rows = np.empty((0, length), dtype=np.int64)
    while len(rows) < n:  # draw, keep first occurrences in draw order, top up
        rows = np.concatenate([rows, rng.integers(0, symbols, (n, length))])
        _, first = np.unique(rows, axis=0, return_index=True)
        rows = rows[np.sort(first)]
    return rows[:n]


def load_algorithmic(cfg: dict) -> Task:
    """Copy, reverse or sort: distinct random sequences, the first ``n_train`` for training and
    the next ``n_test`` (none of them a training sequence) for testing.

    Args:
        cfg: task config; keys ``algorithm`` (``copy``, ``reverse``, ``sort``), ``length`` (8),
            ``symbols`` (10), ``n_train`` (2048), ``n_test`` (512), ``split_seed`` (0).
    Returns:
        A sequence Task over symbols + 1 tokens; accuracy is per answer token.
    """
    where = "algorithmic"
    algorithm = cfg.get("algorithm", "copy")
    if algorithm not in ALGORITHMS:
        raise TaskError(f"{where}: task.algorithm={algorithm!r}; allowed: {sorted(ALGORITHMS)}")
    length = config_int(cfg, "length", 8, where, minimum=1)
    symbols = config_int(cfg, "symbols", 10, where, minimum=2)
    n_train = config_int(cfg, "n_train", 2048, where, minimum=1)
    n_test = config_int(cfg, "n_test", 512, where, minimum=1)
    seed = config_int(cfg, "split_seed", 0, where)
    s = distinct_sequences(n_train + n_test, length, symbols, seed)  # (N, L)
    o = np.ascontiguousarray(ALGORITHMS[algorithm](s))
    sep = np.full((len(s), 1), symbols)
    x = np.concatenate([s, sep, o[:, :-1]], axis=1)  # (N, 2L)
    y = np.concatenate([np.full_like(s, IGNORE), o], axis=1)
    splits = (x[:n_train], y[:n_train], x[n_train:], y[n_train:])
    return make_sequence_task(where, splits, symbols + 1)


def describe(cfg: dict) -> str:
    """The data pipeline in words a consumer can reimplement (the dataset card quotes it)."""
    return (
        "Generated (algorithmic): `rng = numpy.random.default_rng(numpy.random.SeedSequence("
        "[split_seed, 70]))`; draw `rng.integers(0, symbols, (n_train + n_test, length))` "
        "blocks, keep each distinct sequence at its first draw (in draw order) and draw again "
        "until n_train + n_test distinct ones exist; the first n_train are the training set, "
        "the next n_test the test set. For a sequence s the answer o is s (copy), s reversed "
        "(reverse) or sorted(s) (sort); `x = s + [symbols] + o[:-1]` and `y = [−100] × length "
        "+ o` (int64, length 2·length; −100 is not scored), over a vocabulary of symbols + 1 "
        "tokens (the separator is `symbols`)."
    )
