"""Recall of random binary patterns from a fixed-size memory: the EBMM paper's Table 1 protocol.

Bartunov et al., *Meta-Learning Deep Energy-Based Memory Models* (ICLR 2020), Table 1: random
128-bit ±1 patterns; 16, 32, 48, 64 or 96 of them written to one memory; each then queried with
64 of its bits corrupted; the score is the number of wrong bits in the retrieved pattern, averaged
over the stored patterns and ``--trials`` independent pattern sets. Every memory is limited to
128·127/2 + 128 = 8,256 numbers, what a Hopfield network of 128 units holds.

What the paper does not say, and what we chose (the classical rows then reproduce the paper's):
the 64 corrupted bits are erased (set to 0, between −1 and +1) rather than flipped; the retrieval
dynamics hold the 64 known bits at their values and fill in the others (a memory told which
bits it was given); Hopfield networks update asynchronously in a random order until a sweep
changes nothing. Rows:

- ``hebb``, ``storkey``, ``pseudo-inverse``: :class:`HopfieldMemory` with that rule (8,128 or
  8,256 numbers);
- ``sdm``: :class:`SparseDistributedMemory` with 64 hard locations (64·128 contents + 64 counts =
  8,256 numbers) and the radius that selects about ``--sdm-activation`` of them;
- ``store-everything``: :class:`DenseAssociativeMemory` (β = ``--dense-beta``, 3 update steps, the
  retrieval's signs as bits). It keeps every pattern, N·128 numbers: over the budget beyond 64
  patterns (marked in the table), the reference a compressing memory is measured against.

Usage::

    python benchmarks/binary_recall.py              # the table, with the paper's rows beside ours
    python benchmarks/binary_recall.py --json       # one JSON object: {model: {patterns: error bits}}
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from episodic_memory.backends import DenseAssociativeMemory, HopfieldMemory, SparseDistributedMemory, binary_patterns

BITS = 128
CORRUPTED = 64
PATTERN_COUNTS = (16, 32, 48, 64, 96)
BUDGET = BITS * (BITS - 1) // 2 + BITS  # 8,256 numbers
SDM_LOCATIONS = BUDGET // (BITS + 1)  # 64: contents and a write count per location
# Bartunov et al. 2020, Table 1: error bits at 16, 32, 48, 64, 96 patterns.
PAPER = {
    "Hopfield, Hebb rule": (0.4, 5.0, 9.8, 13.0, 16.5),
    "Hopfield, Storkey rule": (0.0, 0.9, 6.3, 11.3, 17.1),
    "Hopfield, pseudo-inverse rule": (0.0, 0.0, 0.3, 4.3, 22.5),
    "EBMM": (0.0, 0.0, 0.1, 0.5, 4.2),
}


def corrupted_queries(patterns: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``patterns [B, N, C]`` with ``CORRUPTED`` random bits of each erased: (queries, known [B, N, C] bool)."""
    B, N, C = patterns.shape
    order = torch.rand(B, N, C, generator=generator).argsort(-1)  # a random permutation of the bits per pattern
    known = order >= CORRUPTED  # [B, N, C]
    return torch.where(known, patterns, torch.zeros_like(patterns)), known


def recall_errors(
    memory_factory: Callable[[int], object], patterns: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, int]:
    """Write ``patterns [B, N, C]`` into B fresh memories, query each corrupted; (error bits [B, N], numbers held)."""
    B, N, _ = patterns.shape
    memory = memory_factory(B)
    for n in range(N):
        memory.write(patterns[:, n])
    queries, known = corrupted_queries(patterns, generator)
    if isinstance(memory, DenseAssociativeMemory):
        retrieved = binary_patterns(torch.where(known, queries, memory.retrieve(queries)))
    else:
        retrieved = memory.retrieve(queries, known)
    return (retrieved != patterns).sum(-1).to(torch.float64), memory.state_floats


def models(args: argparse.Namespace) -> dict[str, Callable[[int], object]]:
    """Each row's memory, built for a batch of B pattern sets."""
    dtype = torch.float64
    rows: dict[str, Callable[[int], object]] = {
        "hebb": lambda B: HopfieldMemory(B, BITS, rule="hebb", seed=args.seed, dtype=dtype),
        "storkey": lambda B: HopfieldMemory(B, BITS, rule="storkey", seed=args.seed, dtype=dtype),
        "pseudo-inverse": lambda B: HopfieldMemory(B, BITS, rule="pseudo-inverse", seed=args.seed, dtype=dtype),
        "sdm": lambda B: SparseDistributedMemory(
            B, BITS, num_locations=SDM_LOCATIONS, activation=args.sdm_activation, seed=args.seed, dtype=dtype
        ),
        "store-everything": lambda B: DenseAssociativeMemory(B, BITS, beta=args.dense_beta, steps=3, dtype=dtype),
    }
    return {name: rows[name] for name in args.models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="independent pattern sets per pattern count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=["hebb", "storkey", "pseudo-inverse", "sdm", "store-everything"])
    parser.add_argument("--sdm-activation", type=float, default=0.1, help="fraction of the 64 locations a pattern selects")
    parser.add_argument("--dense-beta", type=float, default=0.25, help="inverse temperature of store-everything")
    parser.add_argument("--json", action="store_true", help="print one JSON object {model: {patterns: error bits}} only")
    args = parser.parse_args()
    torch.set_num_threads(1)

    results: dict[str, dict[str, float]] = {}
    spread: dict[str, dict[str, float]] = {}
    floats: dict[str, int] = {}
    started = time.perf_counter()
    for name, factory in models(args).items():
        results[name], spread[name] = {}, {}
        for count in PATTERN_COUNTS:
            generator = torch.Generator().manual_seed(args.seed * 1000 + count)  # the same pattern sets for every model
            bits = torch.randint(0, 2, (args.trials, count, BITS), generator=generator)
            patterns = (2 * bits - 1).to(torch.float64)  # [trials, N, C]
            errors, held = recall_errors(factory, patterns, generator)
            per_trial = errors.mean(-1)  # [trials]
            results[name][str(count)] = round(float(per_trial.mean()), 2)
            spread[name][str(count)] = float(per_trial.std() / args.trials**0.5) if args.trials > 1 else 0.0
            floats[name] = max(floats.get(name, 0), held)
    if args.json:
        print(json.dumps(results))
        return

    print(f"error bits of {BITS}-bit patterns with {CORRUPTED} bits erased, mean ± s.e. over {args.trials} pattern sets")
    print(f"(seed {args.seed}, {time.perf_counter() - started:.0f} s); memory budget {BUDGET:,} numbers\n")
    header = "| model | " + " | ".join(str(n) for n in PATTERN_COUNTS) + " | numbers held (most) |"
    print(header)
    print("|" + "---|" * (len(PATTERN_COUNTS) + 2))
    for name in results:
        cells = [f"{results[name][str(n)]:.1f} ± {spread[name][str(n)]:.1f}" for n in PATTERN_COUNTS]
        over = " (over budget)" if floats[name] > BUDGET else ""
        print(f"| {name} | " + " | ".join(cells) + f" | {floats[name]:,}{over} |")
    for name, row in PAPER.items():
        print(f"| paper: {name} | " + " | ".join(f"{v:.1f}" for v in row) + " | 8,256 |")


if __name__ == "__main__":
    main()
