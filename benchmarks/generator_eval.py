"""Generator evaluation cost: alignment-based nearest-neighbour search of 100 generated CNN-s
models over a training split of 1,000 checkpoints, with the signature prefilter.

Run:  python benchmarks/generator_eval.py [--train 1000] [--generated 100] [--candidates 5]
Prints the time of each step (signatures, prefilter, alignments) and, for scale, the time the
search would take aligning against every training checkpoint (estimated from the per-alignment
time). Weights are random CNN-s initializations with per-model scale jitter; generated models
are permuted, noised copies of training rows, so the true nearest neighbour is known.
"""

from __future__ import annotations

import argparse
import time

import torch

from zoo.layout import apply_permutation, flatten, unflatten
from zoo.nn.architectures import build_model
from zoo.weightspace.generators import nearest_after_alignment, signature


def population(layout, n: int, gen: torch.Generator) -> torch.Tensor:
    rows = []
    for _ in range(n):
        module, _ = build_model(layout.model | {}, (1, 28, 28), 10)
        scale = 0.5 + torch.rand(1, generator=gen).item()
        rows.append(flatten(module.state_dict(), layout) * scale)
    return torch.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--generated", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cfg = {"arch": "cnn_s", "activation": "relu"}
    _, layout = build_model(cfg, (1, 28, 28), 10)
    train = population(layout, args.train, gen)
    src = torch.randint(0, args.train, (args.generated,), generator=gen)
    generated = []
    for i in src.tolist():
        perms = {p: torch.randperm(k, generator=gen) for p, k in layout.perm_spec.sizes.items()}
        row = flatten(
            apply_permutation(unflatten(train[i], layout), layout.perm_spec, perms), layout
        )
        generated.append(row + 0.01 * row.abs().mean() * torch.randn(row.shape, generator=gen))
    generated = torch.stack(generated)

    t0 = time.perf_counter()
    signature(train, layout), signature(generated, layout)
    t_sig = time.perf_counter() - t0
    t0 = time.perf_counter()
    novelty, nearest, _ = nearest_after_alignment(generated, train, layout, args.candidates, 0)
    t_search = time.perf_counter() - t0
    hits = sum(int(n == s) for n, s in zip(nearest, src.tolist(), strict=True))
    per_alignment = t_search / (args.generated * args.candidates)
    print(
        f"CNN-s ({layout.num_params} params), {args.train} training checkpoints, "
        f"{args.generated} generated, {args.candidates} candidates each, 1 thread"
    )
    print("| step | seconds |\n|---|---|")
    print(f"| signatures (all rows) | {t_sig:.2f} |")
    print(f"| prefilter + {args.generated * args.candidates} alignments | {t_search:.2f} |")
    print(f"| per alignment | {per_alignment * 1e3:.1f} ms |")
    print(
        f"| aligning against every checkpoint (estimate) | "
        f"{per_alignment * args.generated * args.train:.0f} |"
    )
    print(
        f"true source found as nearest: {hits}/{args.generated}; "
        f"median novelty {sorted(novelty)[len(novelty) // 2]:.4f}"
    )


if __name__ == "__main__":
    main()
