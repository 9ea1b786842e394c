"""Speed of one memory step, batched over B memories vs a naive per-environment Python loop.

One memory step is what the RL wrapper does per environment step: address the new code (DKM
eq. 6), run 5 code-space attractor reads from it, then write it (KM eq. 9-11). Columns:

- ``batched``: :class:`OnlineMemory` with B memories, one call per step (Woodbury-updated
  addressing inverse, row-vector products);
- ``loop``: the same ``OnlineMemory.step`` called once per environment with B = 1, as a wrapper
  that keeps one memory per environment would;
- ``cholesky``: the stateless :class:`KanervaMemory` calls, batched, refactorising
  ``R Rᵀ + λI`` every step (the factor reused by the 5 reads), for reference.

Usage::

    python benchmarks/memory_ops.py                 # B in {1, 16, 64}, K in {32, 64, 128}, C = 100, CPU
    python benchmarks/memory_ops.py --device both   # CPU and CUDA
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from episodic_memory import KanervaMemory, MemoryState, OnlineMemory

ATTRACTOR_STEPS = 5


def online_steps(online: OnlineMemory, codes: torch.Tensor) -> None:
    for z in codes:  # codes [steps, B, C]
        online.step(z, ATTRACTOR_STEPS)


def per_env_loop(onlines: list[OnlineMemory], codes: torch.Tensor) -> None:
    for z in codes:
        for b, online in enumerate(onlines):
            online.step(z[b : b + 1], ATTRACTOR_STEPS)


def cholesky_steps(mem: KanervaMemory, state: MemoryState, codes: torch.Tensor) -> MemoryState:
    for z in codes:
        z = z[:, None]  # [B, 1, C]
        factor = mem.addressing_factor(state)
        w = mem.address(state, z, factor=factor)
        mem.retrieve(state, z, ATTRACTOR_STEPS, factor=factor)
        state = mem.write(state, z, w)
    return state


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_step(fn: Callable[[], object], steps: int, repeats: int, device: torch.device) -> float:
    """Median over ``repeats`` of the wall time per memory step, in microseconds."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) / steps * 1e6)
    return statistics.median(times)


def bench(B: int, K: int, C: int, device: torch.device, steps: int, repeats: int, seed: int) -> tuple[float, float, float]:
    torch.manual_seed(seed)
    mem = KanervaMemory(num_slots=K, code_size=C).to(device)
    codes = torch.randn(steps, B, C, device=device)
    with torch.inference_mode():
        batched = OnlineMemory(mem, B)
        loop = [OnlineMemory(mem, 1) for _ in range(B)]
        t_batched = time_per_step(lambda: online_steps(batched, codes), steps, repeats, device)
        t_loop = time_per_step(lambda: per_env_loop(loop, codes), steps, repeats, device)
        t_cholesky = time_per_step(lambda: cholesky_steps(mem, mem.prior(B), codes), steps, repeats, device)
        # Same operations, same memories: both sides saw the same codes the same number of times.
        gap = max((batched.R[b] - online.R[0]).abs().max().item() for b, online in enumerate(loop))
        if gap > 1e-3:
            raise RuntimeError(f"batched and per-environment memories differ by {gap:.2e}")
    return t_batched, t_loop, t_cholesky


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64], help="numbers of memories B")
    parser.add_argument("--slots", type=int, nargs="+", default=[32, 64, 128], help="memory sizes K")
    parser.add_argument("--code-size", type=int, default=100, help="code size C")
    parser.add_argument(
        "--device", choices=["cpu", "cuda", "both", "auto"], default="auto", help="auto: CPU, and CUDA too when present"
    )
    parser.add_argument("--steps", type=int, default=20, help="memory steps per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings per cell (the median is printed)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a busy machine)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cuda = torch.cuda.is_available()
    if args.device in ("cuda", "both") and not cuda:
        raise SystemExit(f"--device {args.device}: no CUDA device is available")
    devices = {"cpu": ["cpu"], "cuda": ["cuda"], "both": ["cpu", "cuda"], "auto": ["cpu", "cuda"] if cuda else ["cpu"]}[
        args.device
    ]

    print(f"memory step = address + {ATTRACTOR_STEPS} code-space attractor reads + write; C={args.code_size}, float32")
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s); times in microseconds per step (median of {args.repeats})\n")
    header = f"{'device':>6} {'B':>4} {'K':>4} {'batched':>9} {'loop':>9} {'speed-up':>9} {'cholesky':>9} {'batched/env':>12}"
    print(header)
    print("-" * len(header))
    for name in devices:
        device = torch.device(name)
        for K in args.slots:
            for B in args.batch_sizes:
                t_batched, t_loop, t_cholesky = bench(B, K, args.code_size, device, args.steps, args.repeats, args.seed)
                row = f"{name:>6} {B:>4} {K:>4} {t_batched:>9.0f} {t_loop:>9.0f} {t_loop / t_batched:>8.1f}x"
                print(f"{row} {t_cholesky:>9.0f} {t_batched / B:>12.1f}")


if __name__ == "__main__":
    main()
