"""The registry of random streams: every stream declared once, numbers distinct, one seeding
helper pair (issue 12: learn's stream 41 collided with the generators' noise baseline)."""

import ast
from pathlib import Path

import numpy as np
import torch

from zoo import streams

ZOO = Path(__file__).parent.parent / "zoo"


def test_stream_numbers_are_distinct_within_each_seed():
    for family in (streams.DATA_STREAMS, streams.RUN_STREAMS):
        numbers = list(family.values())
        assert len(numbers) == len(set(numbers)), family


def test_only_the_historical_streams_share_numbers_across_seeds():
    # task streams 1-3 and run streams 1-3 predate the registry (renumbering would change the
    # bytes of every published zoo); every stream since has a number of its own
    shared = set(streams.DATA_STREAMS.values()) & set(streams.RUN_STREAMS.values())
    assert shared == {streams.INIT, streams.DATA_ORDER, streams.DROPOUT} == {1, 2, 3}


def test_registry_lists_every_stream_constant():
    declared = {k: v for k, v in vars(streams).items() if k.isupper() and isinstance(v, int)}
    assert declared == {**streams.DATA_STREAMS, **streams.RUN_STREAMS}
    generators = (streams.GENERATOR_NOISE, streams.GENERATOR_AVERAGE, streams.GENERATOR_GAUSSIAN)
    assert streams.LEARN not in generators  # the collision issue 12 found


def test_seeding_happens_in_the_registry_only():
    """No module but zoo/streams.py seeds a generator from a stream; sampling keys its draws by
    point and key (zoo/recipe/sampling.py) and mixup seeds numpy from its own generator's draw."""
    allowed = {"streams.py", "sampling.py", "augment.py"}
    seeding = {"SeedSequence", "default_rng", "manual_seed"}
    for path in ZOO.rglob("*.py"):
        calls = [
            node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name)
        ]
        if path.name not in allowed:
            assert not seeding & set(calls), f"{path}: seeds a generator itself; use zoo.streams"


def test_helpers_draw_from_seed_stream_and_keys():
    a = streams.numpy_rng(3, streams.SPLIT).permutation(10)
    b = np.random.default_rng(np.random.SeedSequence([3, streams.SPLIT])).permutation(10)
    assert (a == b).all()

    def draw(*key):
        return torch.rand(5, generator=streams.torch_generator(*key))

    assert torch.equal(draw(3, streams.INIT), draw(3, streams.INIT))
    assert not torch.equal(draw(3, streams.INIT), draw(3, streams.INIT, 1))
    # numpy's SeedSequence ignores trailing zero words: key 0 at the end is no key at all
    assert torch.equal(draw(3, streams.INIT), draw(3, streams.INIT, 0))
    assert not torch.equal(draw(3, streams.INIT), draw(3, streams.DROPOUT))
