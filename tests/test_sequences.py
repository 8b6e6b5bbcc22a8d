"""Sequence tasks (issue 15): modular arithmetic as tokens, copy/reverse/sort, and
character-level language modelling on a text that ships with the machine."""

from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.errors import TaskError
from zoo.nn.objectives import IGNORE, OBJECTIVES
from zoo.tasks import load_task
from zoo.tasks.text import windows

LICENSE = Path("/usr/share/common-licenses/GPL-3")


def test_modular_tokens_are_the_modular_pairs_as_sequences():
    cfg = {"modulus": 7, "operation": "sub", "train_fraction": 0.4, "split_seed": 3}
    tokens = load_task({"name": "modular_tokens", **cfg})
    onehot = load_task({"name": "modular", **cfg})
    assert tokens.n_classes == 9 and tokens.input_shape == (4,)
    assert tokens.x_train.dtype == torch.int64
    a, b = tokens.x_train[:, 0], tokens.x_train[:, 2]
    assert (tokens.x_train[:, 1] == 7).all() and (tokens.x_train[:, 3] == 8).all()
    assert torch.equal(tokens.y_train[:, -1], (a - b) % 7)
    assert (tokens.y_train[:, :-1] == IGNORE).all()
    # the same pairs in the same split as the one-hot task
    assert torch.equal(onehot.x_train[:, :7].argmax(1), a)
    assert torch.equal(onehot.x_train[:, 7:].argmax(1), b)
    assert torch.equal(onehot.y_train, tokens.y_train[:, -1])


@pytest.mark.parametrize("algorithm", ["copy", "reverse", "sort"])
def test_algorithmic_answers_follow_the_separator(algorithm):
    task = load_task(
        {
            "name": "algorithmic",
            "algorithm": algorithm,
            "length": 5,
            "symbols": 4,
            "n_train": 200,
            "n_test": 50,
        }
    )
    assert task.n_classes == 5 and task.input_shape == (10,)
    for x, y in ((task.x_train, task.y_train), (task.x_test, task.y_test)):
        s, answer = x[:, :5], y[:, 5:]
        expected = {"copy": s, "reverse": s.flip(1), "sort": s.sort(1).values}[algorithm]
        assert torch.equal(answer, expected)
        assert (x[:, 5] == 4).all() and torch.equal(x[:, 6:], answer[:, :-1])  # teacher forcing
        assert (y[:, :5] == IGNORE).all()
    train = {tuple(r) for r in task.x_train[:, :5].tolist()}
    test = {tuple(r) for r in task.x_test[:, :5].tolist()}
    assert len(train) == 200 and len(test) == 50 and not train & test


def test_algorithmic_is_seeded_and_explains_too_few_sequences():
    cfg = {"name": "algorithmic", "length": 3, "symbols": 3, "n_train": 10, "n_test": 5}
    a, b = load_task(cfg), load_task({**cfg, "split_seed": 1})
    assert not torch.equal(a.x_train, b.x_train)
    with pytest.raises(TaskError, match=r"only 3\^3 = 27 exist"):
        load_task({**cfg, "n_train": 25})


def test_char_lm_on_a_license_file_shipped_with_the_machine():
    text = LICENSE.read_text()
    task = load_task({"name": "char_lm", "path": str(LICENSE), "context": 16})
    vocab = sorted(set(text))
    assert task.n_classes == len(vocab) and task.objective == "language_model"
    assert task.input_shape == (16,)
    decoded = "".join(vocab[i] for i in task.x_train[0].tolist())
    assert decoded == text[:16] and vocab[task.y_train[0, -1]] == text[16]
    cut = round(0.9 * len(text))
    assert len(task.x_train) == (cut - 1) // 16 and len(task.x_test) == (len(text) - cut - 1) // 16
    test_first = "".join(vocab[i] for i in task.x_test[0].tolist())
    assert test_first == text[cut : cut + 16]  # the test text follows the training text
    small = load_task({"name": "char_lm", "path": str(LICENSE), "context": 16, "n_train": 30})
    assert len(small.x_train) == 30


def test_windows_and_char_lm_errors_teach():
    x, y = windows(np.arange(10), 4)
    assert x.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]] and y[:, -1].tolist() == [4, 8]
    with pytest.raises(TaskError, match="cannot read '/nonexistent' as UTF-8 text"):
        load_task({"name": "char_lm", "path": "/nonexistent"})
    with pytest.raises(TaskError, match="fewer than one window"):
        load_task({"name": "char_lm", "path": str(LICENSE), "context": 5000})


def test_perplexity_is_the_exponential_of_the_mean_loss_over_all_batches():
    objective = OBJECTIVES["language_model"]
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(2, 6, 5, 4, generator=g), torch.randint(0, 4, (2, 6, 5), generator=g)
    parts = [objective.sums(out[:, i : i + 3], y[:, i : i + 3]) for i in (0, 3)]
    totals = {k: parts[0][k] + parts[1][k] for k in parts[0]}
    means = objective.means(totals)
    loss = objective.loss(out, y).double()
    torch.testing.assert_close(means["loss"], loss)
    torch.testing.assert_close(means["ppl"], loss.exp())
