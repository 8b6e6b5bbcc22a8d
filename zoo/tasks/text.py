"""char_lm: character-level language modelling on a text file or a Hugging Face text dataset.

The text is read whole (a file as UTF-8; a dataset's ``text_column`` of split ``train_split``,
rows joined by newlines). Its vocabulary is the sorted set of its distinct characters (Unicode
code-point order: token ``i`` is ``sorted(set(text))[i]``). The first ``1 - test_fraction`` of
the characters are the training text, the rest the test text, so no window of the test text
overlaps a training one. Each text is cut into non-overlapping windows of ``context + 1``
characters; a window gives ``x = w[:-1]`` and ``y = w[1:]`` (every position scored: next-token
prediction). ``n_train`` / ``n_test`` keep seeded subsets of the windows. The objective is
``language_model``: loss, token accuracy and perplexity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo import streams
from zoo.errors import TaskError
from zoo.tasks.base import Task, config_fraction, config_int, make_sequence_task, subset_indices


def read_text(cfg: dict) -> str:
    """The task's text: ``path`` as a UTF-8 file, or (with ``text_column``) a Hugging Face
    dataset's column of split ``train_split``, rows joined by newlines."""
    path, column = cfg.get("path"), cfg.get("text_column")
    if not isinstance(path, str) or not path:
        raise TaskError("char_lm: task.path must name a text file or a Hugging Face dataset")
    if column is None:
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TaskError(
                f"char_lm: cannot read {path!r} as UTF-8 text ({exc}); set task.path to a text "
                "file (e.g. /usr/share/common-licenses/GPL-3), or set task.text_column to read "
                "a Hugging Face dataset"
            ) from exc
    import datasets  # lazy: importing datasets is slow and only this source needs it

    split = cfg.get("train_split", "train")
    try:
        ds = datasets.load_dataset(
            path, name=cfg.get("config"), split=split, cache_dir=cfg.get("cache_dir")
        )
        return "\n".join(ds[column])
    except Exception as exc:  # third-party boundary: any failure becomes one clear TaskError
        raise TaskError(
            f"char_lm: cannot read column {column!r} of split {split!r} of dataset {path!r} "
            f"({type(exc).__name__}: {exc}); check task.path, task.config, task.train_split "
            "and task.text_column"
        ) from exc


def windows(ids: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of ``context + 1`` tokens: ``(x, y)``, each ``(N, context)``.

    Example:
        >>> x, y = windows(np.arange(7), 3)
        >>> x.tolist(), y.tolist()
        ([[0, 1, 2], [3, 4, 5]], [[1, 2, 3], [4, 5, 6]])
    """
    n = (len(ids) - 1) // context
    idx = np.arange(n)[:, None] * context + np.arange(context + 1)  # (N, context + 1)
    w = ids[idx]
    return w[:, :-1], w[:, 1:]


def load_char_lm(cfg: dict) -> Task:
    """Character-level language modelling (see the module docstring).

    Args:
        cfg: task config; keys ``path``, ``text_column`` (null: ``path`` is a file),
            ``config``, ``train_split``, ``cache_dir`` (datasets only), ``context`` (32),
            ``test_fraction`` (0.1), ``n_train``, ``n_test`` (null: all windows),
            ``split_seed`` (0).
    Returns:
        A sequence Task over the text's characters, objective ``language_model``.
    """
    where = "char_lm"
    text = read_text(cfg)
    context = config_int(cfg, "context", 32, where, minimum=1)
    fraction = config_fraction(cfg, "test_fraction", 0.1, where, 0.0, 1.0)
    seed = config_int(cfg, "split_seed", 0, where)
    vocab = sorted(set(text))
    lookup = {ch: i for i, ch in enumerate(vocab)}
    ids = np.fromiter((lookup[ch] for ch in text), dtype=np.int64, count=len(text))
    cut = round((1.0 - fraction) * len(ids))
    splits = []
    for name, part, stream in (
        ("train", ids[:cut], streams.SUBSET_TRAIN),
        ("test", ids[cut:], streams.SUBSET_TEST),
    ):
        x, y = windows(part, context)
        if len(x) == 0:
            raise TaskError(
                f"{where}: the {name} text has {len(part)} characters, fewer than one window of "
                f"task.context + 1 = {context + 1}; lower task.context or change "
                "task.test_fraction"
            )
        n = config_int(cfg, f"n_{name}", None, where, minimum=1)
        rows = subset_indices(len(x), n, seed, stream, f"{where}: task.n_{name}")
        splits += [x[rows], y[rows]]
    return make_sequence_task(where, tuple(splits), len(vocab), objective="language_model")


def describe(cfg: dict) -> str:
    """The data pipeline in words a consumer can reimplement (the dataset card quotes it)."""
    source = (
        f"the column `{cfg['text_column']}` of split `{cfg.get('train_split', 'train')}` of "
        "the Hugging Face dataset named by task.path, rows joined by newlines"
        if cfg.get("text_column")
        else "the UTF-8 text file task.path, read whole"
    )
    subsets = (
        " n_train / n_test keep the windows at `sorted(rng.permutation(N)[:n])`, "
        "`rng = numpy.random.default_rng(numpy.random.SeedSequence([split_seed, k]))`, k = 2 "
        "for training and 3 for test."
    )
    return (
        f"Character-level language modelling (char_lm) on {source}. Vocabulary: "
        "`sorted(set(text))` (token i is its i-th character). The first "
        "`round((1 − test_fraction) × len(text))` characters are the training text, the rest "
        "the test text. Each text is cut into non-overlapping windows of context + 1 "
        "characters starting at 0, context, 2·context, …; a window w gives `x = w[:-1]` and "
        "`y = w[1:]` (int64, every position scored)." + subsets
    )
