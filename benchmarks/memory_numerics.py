"""Numerical health of U after many float32 rank-1 writes, beside a float64 reference.

Writes N codes one at a time (DKM writing: address against the current memory, then write) into
B float32 memories and the same codes into float64 copies, through both the stateless
:class:`KanervaMemory` and :class:`OnlineMemory`. Prints, every N/10 writes, the smallest and
largest eigenvalue of U, the largest asymmetry ``|U − Uᵀ|`` and the float32 error relative to
float64. Two code streams: fresh random codes, and the hard case of one code written over and
over (U's eigenvalue along it shrinks like 1/n, down to where float32 rounding lives).

Usage::

    python benchmarks/memory_numerics.py                  # N = 100,000, B = 4, K = 32, C = 100
    python benchmarks/memory_numerics.py --writes 10000
"""

from __future__ import annotations

import argparse

import torch
from tqdm import tqdm, trange

from episodic_memory import KanervaMemory, OnlineMemory


def report(label: str, step: int, U: torch.Tensor, U_ref: torch.Tensor, R: torch.Tensor, R_ref: torch.Tensor) -> None:
    eig = torch.linalg.eigvalsh(U.double())
    eig_ref = torch.linalg.eigvalsh(U_ref)
    asym = (U - U.transpose(-1, -2)).abs().max().item()
    rel_R = ((R.double() - R_ref).abs().max() / R_ref.abs().max()).item()
    finite = bool(torch.isfinite(U).all() and torch.isfinite(R).all())
    tqdm.write(
        f"{label:>9} {step:>8} {eig.min().item():>12.3e} {eig_ref.min().item():>12.3e} {eig.max().item():>10.4f} "
        f"{asym:>10.1e} {rel_R:>10.1e} {str(finite):>6}"
    )


def run(stream: str, writes: int, B: int, K: int, C: int, seed: int) -> None:
    torch.manual_seed(seed)
    mem32 = KanervaMemory(K, C)
    mem64 = KanervaMemory(K, C).double()
    mem64.load_state_dict({k: v.double() for k, v in mem32.state_dict().items()})
    repeated = torch.randn(B, C, dtype=torch.float64)
    with torch.no_grad():
        state32, state64 = mem32.prior(B), mem64.prior(B)
        online = OnlineMemory(mem32, B)
        print(f"\ncodes: {stream}; B={B}, K={K}, C={C}")
        header = f"{'memory':>9} {'writes':>8} {'min eig U':>12} {'(float64)':>12} {'max eig U':>10}"
        header += f" {'|U-Uᵀ|':>10} {'rel err R':>10} {'finite':>6}"
        print(header)
        print("-" * len(header))
        every = max(writes // 10, 1)
        for t in trange(1, writes + 1, desc=stream, leave=False, mininterval=2.0):
            z64 = repeated if stream == "repeated" else torch.randn(B, C, dtype=torch.float64)
            state32 = mem32.write_sequential(state32, z64[:, None].float())
            state64 = mem64.write_sequential(state64, z64[:, None])
            online.write(z64.float())
            if t % every == 0 or t == writes:
                report("stateless", t, state32.cov, state64.cov, state32.mean, state64.mean)
                report("online", t, online.U, state64.cov, online.R, state64.mean)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=100_000, help="rank-1 writes N per memory")
    parser.add_argument("--batch-size", type=int, default=4, help="memories B")
    parser.add_argument("--slots", type=int, default=32, help="K")
    parser.add_argument("--code-size", type=int, default=100, help="C")
    parser.add_argument("--streams", nargs="+", choices=["random", "repeated"], default=["random", "repeated"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for stream in args.streams:
        run(stream, args.writes, args.batch_size, args.slots, args.code_size, args.seed)


if __name__ == "__main__":
    main()
