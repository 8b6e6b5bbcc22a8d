"""Helpers for the exact-symmetry tests of the residual network and the transformer (issue 15):
every generator of a permutation spec keeps a network's outputs, and each wrong variant (a
block crossed, one axis left out) changes them."""

from __future__ import annotations

from dataclasses import replace

import torch

from zoo.layout import PermutationSpec, apply_permutation, compose_blocks
from zoo.nn.architectures import build_model


def randomized(cfg: dict, shape: tuple[int, ...], n_classes: int, seed: int = 0):
    """A module in eval mode whose every state entry is random (norm gains and biases too, so
    a permutation left out of any axis shows; running variances positive), and its layout."""
    module, layout = build_model(cfg, shape, n_classes)
    gen = torch.Generator().manual_seed(seed)
    state = {
        name: torch.rand(v.shape, generator=gen) + 0.5
        if name.endswith("running_var")
        else 0.5 * torch.randn(v.shape, generator=gen)
        for name, v in module.state_dict().items()
    }
    module.load_state_dict(state)
    return module.eval(), layout


def outputs_with(cfg, shape, n_classes, state: dict, x: torch.Tensor) -> torch.Tensor:
    module, _ = build_model(cfg, shape, n_classes)
    module.load_state_dict(state)
    with torch.no_grad():
        return module.eval()(x)


def derangement(n: int, gen: torch.Generator) -> torch.Tensor:
    """A random permutation that moves every unit (so every axis it acts on changes)."""
    while True:
        perm = torch.randperm(n, generator=gen)
        if n < 2 or not (perm == torch.arange(n)).any():
            return perm


def generators(spec: PermutationSpec, gen: torch.Generator) -> list[tuple[str, dict]]:
    """One random move per generator of the spec's group: each plain group alone; each outer
    group moving its members' whole blocks; each blocked group within its blocks alone."""
    out = []
    for g, n in sorted(spec.sizes.items()):
        if g in spec.blocks:
            outer, s = spec.blocks[g]
            k = spec.sizes[outer]
            inner = torch.stack([derangement(s, gen) for _ in range(k)])
            out.append((f"{g} within blocks", {g: compose_blocks(torch.arange(k), inner)}))
        elif g in spec.outer_groups:
            perm = derangement(n, gen)
            moves = {g: perm}
            for member in spec.outer_groups[g]:
                s = spec.blocks[member][1]
                moves[member] = compose_blocks(perm, torch.arange(s).expand(n, s))
            out.append((f"{g} whole blocks", moves))
        else:
            out.append((g, {g: derangement(n, gen)}))
    return out


def wrong_moves(
    spec: PermutationSpec, gen: torch.Generator
) -> list[tuple[str, PermutationSpec, dict]]:
    """Moves that are not symmetries: each group's permutation with one of its axes left out
    (for every axis), and each blocked group's units moved across two blocks."""
    out = []
    for g, entries in spec.perm_to_axes.items():
        n = spec.sizes[g]
        perm = torch.roll(torch.arange(n), 1)  # no unit stays: every axis it acts on moves
        if g in spec.blocks:
            s = spec.blocks[g][1]
            perm = compose_blocks(
                torch.arange(n // s), torch.roll(torch.arange(s), 1).expand(n // s, s)
            )
        for name, axis in entries:
            axes = dict(spec.axes)
            axes[name] = tuple(None if i == axis else p for i, p in enumerate(axes[name]))
            out.append((f"{g} without {name}[{axis}]", replace(spec, axes=axes), {g: perm}))
    for g, (_, s) in spec.blocks.items():
        crossed = torch.arange(spec.sizes[g])
        crossed[[0, s]] = crossed[[s, 0]]  # unit 0 of block 0 <-> unit 0 of block 1
        out.append((f"{g} across blocks", spec, {g: crossed}))
    return out


def check_symmetries(cfg, shape, n_classes, x, atol=1e-5, invisible=()) -> int:
    """Assert the generators keep the outputs and the wrong moves change them; returns the
    number of wrong moves checked. Parameters named with a suffix in ``invisible`` do not act on
    the outputs at all (a key bias adds the same score to every key of a query, which softmax
    cancels), so leaving them out of a permutation changes nothing either."""
    module, layout = randomized(cfg, shape, n_classes)
    state = module.state_dict()
    with torch.no_grad():
        ref = module(x)
    gen = torch.Generator().manual_seed(1)
    for label, perms in generators(layout.perm_spec, gen):
        moved = apply_permutation(state, layout.perm_spec, perms)
        assert any(not torch.equal(moved[k], state[k]) for k in state), label
        got = outputs_with(cfg, shape, n_classes, moved, x)
        torch.testing.assert_close(got, ref, atol=atol, rtol=0, msg=label)
    wrong = wrong_moves(layout.perm_spec, gen)
    for label, spec, perms in wrong:
        if any(f"without {name}[" in label for name in invisible):
            continue
        got = outputs_with(cfg, shape, n_classes, apply_permutation(state, spec, perms), x)
        assert (got - ref).abs().max() > 100 * atol, label
    return len(wrong)
