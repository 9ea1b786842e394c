"""EBMM written online, one code per env step, against its batch write: the cost per step and what retrieval loses.

EBMM writes a set at once (eq. 4); the RL backend (:class:`~episodic_memory.backends.OnlineEnergyMemory`)
must write each code as it comes. On the ``binary_recall`` protocol (random 128-bit ±1 patterns as the
episode's codes, queries with 64 bits replaced by random bits and the known bits held, memories of
8,256 numbers), an episode of ``--patterns`` codes is written by:

- ``batch``: the paper's write of the whole set at the end (the reference; not an online memory),
  by the memory meta-trained for it (``binary_recall``'s column of as many patterns, shared cache);
- ``incremental (online-trained)``: each code by T = 2 gradient steps from the θ the others left, with a
  memory meta-trained through that very write (``meta_loss(online=True)``, cached in ``--cache``; T = 2
  because meta-training backpropagates through all N·T steps of an episode);
- ``incremental (batch-trained)``: the same with the batch-trained memory's rules (its T = 10);
- ``rewrite every R``: every R codes the batch write of the episode so far, with the batch-trained
  rules (R in ``--rewrite-every``); codes since the last rewrite wait, so where R does not divide the
  episode's length its last codes are not in the memory at the end;
- for scale, the ``dkm`` backend's step on codes of the same size (an untrained DKM of 64 slots: the
  cost does not depend on the weights).

The step cost is the median wall time of one backend step (read-outs, then the write) for ``--envs``
memories; the rewrite's is its mean over the episode (a rewrite step costs T gradients over every code
kept) with the dearest step beside it.

Usage::

    python benchmarks/energy_online.py                  # 32 codes, rewrites every 1, 4 and 12 codes, 96 episodes
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from binary_recall import BITS, EBMM_WIDTH, cached_energy_memory, corrupted_queries, trained_ebmm

from episodic_memory import DynamicKanervaMachine
from episodic_memory.backends import MemoryBackend, OnlineEnergyMemory, binary_patterns
from episodic_memory.energy import EnergyMemory, meta_train
from episodic_memory.registry import BACKENDS

ONLINE_WRITE_STEPS = 2  # T per code: meta-training backpropagates through N·T second-order steps (3 s a step at T = 5)


def online_trained(args: argparse.Namespace) -> EnergyMemory:
    """The memory meta-trained through the incremental write of ``--patterns`` codes (loaded from ``--cache``)."""
    settings = {"patterns": args.patterns, "steps": args.train_steps, "seed": args.seed}

    def train(memory: EnergyMemory) -> None:
        torch.manual_seed(args.seed)
        generator = torch.Generator().manual_seed(args.seed + 1)
        meta_train(
            memory,
            lambda: (2 * torch.randint(0, 2, (16, args.patterns, BITS), generator=generator) - 1).float(),
            lambda x: corrupted_queries(x, generator, "random"),
            args.train_steps,
            progress=f"meta-training the online write on episodes of {args.patterns} codes",
            online=True,
        )

    memory = EnergyMemory(BITS, EBMM_WIDTH, read_steps=5, write_steps=ONLINE_WRITE_STEPS, write_step_size=0.5)
    return cached_energy_memory(memory, args.cache, "ebmm-online", settings, train)[0]


def step_times(backend: MemoryBackend, patterns: torch.Tensor) -> list[float]:
    """Step ``backend`` through the codes ``patterns [B, N, C]`` from its empty memories; the wall time of each step in µs."""
    backend.reset()
    times = []
    for n in range(patterns.shape[1]):
        started = time.perf_counter()
        backend.step(patterns[:, n], readouts=("retrieval", "novelty"))
        times.append((time.perf_counter() - started) * 1e6)
    return times


def recall(memory: EnergyMemory, theta: tuple[torch.Tensor, torch.Tensor], patterns: torch.Tensor, generator) -> float:
    """Mean error bits of the corrupted ``patterns [B, N, C]`` read (known bits held) from memories ``theta``."""
    queries, known = corrupted_queries(patterns, generator, "random")
    retrieved = binary_patterns(memory.read(queries, theta, known))
    return float((retrieved != patterns).sum(-1).double().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--patterns", type=int, default=32, help="codes written per episode (a binary_recall column: 16, 32, 48, 64, 96)"
    )
    parser.add_argument("--rewrite-every", type=int, nargs="+", default=[1, 4, 12], help="codes between rewrites, one row each")
    parser.add_argument("--episodes", type=int, default=100, help="episodes measured (one memory each)")
    parser.add_argument("--envs", type=int, default=16, help="memories stepped together, as a VecEnv's")
    parser.add_argument("--train-steps", type=int, default=400, help="meta-training steps of the online-trained memory")
    parser.add_argument("--batch-steps", type=int, default=2000, help="meta-training steps of the batch-trained memory")
    parser.add_argument("--cache", default="runs/energy_online", help="where the online-trained memory is kept")
    parser.add_argument("--batch-cache", default="runs/binary_recall", help="binary_recall's cache of batch-trained memories")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    batch_args = argparse.Namespace(
        ebmm_steps=args.batch_steps, seed=args.seed, corruption="random", cache=args.batch_cache, json=False
    )
    batch_memory, _ = trained_ebmm(args.patterns, batch_args)
    online_memory = online_trained(args)
    rows: dict[str, tuple[float, list[float]]] = {}
    generator = torch.Generator().manual_seed(args.seed + 99)
    sets = [(2 * torch.randint(0, 2, (args.envs, args.patterns, BITS), generator=generator) - 1).float()
            for _ in range(max(1, args.episodes // args.envs))]  # fmt: skip
    with torch.no_grad():
        errors = [recall(batch_memory, batch_memory.write(x), x, torch.Generator().manual_seed(i)) for i, x in enumerate(sets)]
    rows["batch (reference, not online)"] = (statistics.fmean(errors), [])
    online_rows = {
        "incremental (online-trained)": lambda: OnlineEnergyMemory(online_memory, args.envs, write="incremental"),
        "incremental (batch-trained)": lambda: OnlineEnergyMemory(batch_memory, args.envs, write="incremental"),
        **{
            f"rewrite every {every} (batch-trained)": lambda every=every: OnlineEnergyMemory(
                batch_memory, args.envs, write="rewrite", rewrite_every=every
            )
            for every in args.rewrite_every
        },
    }
    for name, build in online_rows.items():
        errors, times = [], []
        for i, x in enumerate(sets):
            backend = build()
            times += step_times(backend, x)
            errors.append(recall(backend.memory, backend.theta, x, torch.Generator().manual_seed(i)))
        rows[name] = (statistics.fmean(errors), times)

    dkm = DynamicKanervaMachine((BITS,), code_size=BITS, num_slots=EBMM_WIDTH).eval()
    backend = BACKENDS["dkm"].build(dkm, args.envs, 5)
    times = [t for x in sets for t in step_times(backend, x)]
    rows["for scale: the dkm backend, K = 64 (no recall: see binary_recall)"] = (float("nan"), times)

    print(
        f"EBMM, episodes of {args.patterns} random 128-bit codes, {len(sets) * args.envs} episodes, {args.envs} memories a step"
    )
    print("(queries: 64 bits random, known bits held; error bits of the final memories' reads, mean)\n")
    print("| write | error bits | step µs (median) | step µs (mean) | step µs (max) |")
    print("|---|---|---|---|---|")
    for name, (error, times) in rows.items():
        cost = (
            " | ".join(f"{v:,.0f}" for v in (statistics.median(times), statistics.fmean(times), max(times)))
            if times
            else "- | - | -"
        )
        print(f"| {name} | {'-' if error != error else f'{error:.2f}'} | {cost} |")


if __name__ == "__main__":
    main()
