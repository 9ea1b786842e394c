"""Soak test of VecEpisodicMemory: speed and numerical health of its memories over a long run.

Drives ``--num-envs`` MiniGrid frame environments (an SB3 DummyVecEnv, wrapped in
:class:`~episodic_memory.wrappers.vec_env.VecEpisodicMemory`) with random actions (left, right, forward) for
``--steps`` environment steps; memories return to the prior at every episode end, as in training.
The memory is a DKM of the default pretrain size (code 100, K = 32, 16 filters) on 32x32 egocentric
frames, freshly initialised unless ``--machine`` names a checkpoint.

Reports env steps/s over the first and the last ``--window`` of the run and their ratio (a ratio
well below 1 is a slowdown: a leak, a growing buffer), in wall time and in this process's CPU time
(the latter barely moves when other jobs share the machine), and over the whole run: the largest
``|U − Uᵀ|`` and the smallest eigenvalue of U (float64 ``eigvalsh``) over all memories, sampled every
``--check-every`` env steps, the largest relative error of the Woodbury-kept ``(R Rᵀ + λI)⁻¹`` against
a fresh Cholesky inverse at the same samples, the number of memory resets, NaN/inf in R, U (at the
samples) or in the read-outs (every step, terminal observations included), and the most writes one
memory received between two resets. Exits with status 1 if a NaN/inf appears or U stops being
positive definite.

``--long-episodes`` stresses the numerics: a task that random left/right/forward actions cannot
end (``MiniGrid-Fetch-8x8-N3-v0`` ends only on ``pickup``) with ``max_steps`` longer than the run,
so every memory takes ``steps / num_envs`` writes without a reset (``--num-envs 1``: all of them).

Usage::

    python benchmarks/soak.py                                    # 1,000,000 env steps, 8 envs, MemoryS7
    python benchmarks/soak.py --steps 20000 --out runs/soak.json
    python benchmarks/soak.py --long-episodes --num-envs 1 --steps 200000
    python benchmarks/soak.py --machine runs/pretrain-dkm/model.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv
from tqdm import tqdm

from episodic_memory import GenerativeMemory
from episodic_memory.agents.builder import AgentConfig, make_machine
from episodic_memory.envs.mazes import make_frame_env
from episodic_memory.kanerva.memory import addressing_factor
from episodic_memory.wrappers.vec_env import VecEpisodicMemory

LONG_EPISODE_ENV = "MiniGrid-Fetch-8x8-N3-v0"  # ends only on pickup, which random actions 0-2 never take


def check_memories(venv: VecEpisodicMemory) -> dict[str, Any]:
    """Health of the live memories ``R [B, K, C]``, ``U [B, K, K]`` and the kept ``(R Rᵀ + λI)⁻¹``."""
    online = venv.core.backend.online
    R, U = online.state  # live tensors, read only
    finite = bool(torch.isfinite(R).all() and torch.isfinite(U).all() and torch.isfinite(online.A_inv).all())
    if not finite:
        return {"finite": False, "min_eig_U": math.nan, "max_asym_U": math.nan, "A_inv_rel_err": math.nan}
    with torch.no_grad():
        exact = torch.cholesky_inverse(addressing_factor(R.double(), online.ridge))  # [B, K, K]
        err = (online.A_inv.double() - exact).abs().amax((-2, -1)) / exact.abs().amax((-2, -1))  # [B]
    return {
        "finite": True,
        "min_eig_U": torch.linalg.eigvalsh(U.double()).min().item(),
        "max_asym_U": (U - U.transpose(-1, -2)).abs().max().item(),
        "A_inv_rel_err": err.max().item(),
    }


def readouts_finite(readouts: dict[str, Any], keys: tuple[str, ...]) -> bool:
    return all(bool(np.isfinite(readouts[k]).all()) for k in keys)


def soak(args: argparse.Namespace, machine: GenerativeMemory) -> dict[str, Any]:
    frame_size = machine.input_shape[0]
    kwargs = {} if args.max_steps is None else {"max_steps": args.max_steps}

    def make() -> Any:
        return make_frame_env(args.env, frame_size=frame_size, **kwargs)

    venv = VecEpisodicMemory(DummyVecEnv([make] * args.num_envs), machine, attractor_steps=args.attractor_steps)
    keys = venv.core.readouts
    B = venv.num_envs
    vec_steps = max(args.steps // B, 1)
    check_every = max(args.check_every // B, 1)
    window = max(int(round(args.window * vec_steps)), 1)

    venv.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    obs = venv.reset()
    nonfinite: list[str] = []
    if not readouts_finite(obs, keys):
        nonfinite.append("read-outs at reset")
    writes = np.ones(B, dtype=np.int64)  # writes into each memory since its last reset (reset writes the first frame)
    max_writes, resets = 1, 0
    step_seconds = np.empty(vec_steps)  # wall time of each vectorised step
    step_cpu = np.empty(vec_steps)  # CPU time of this process in it: insensitive to other jobs on a shared machine
    samples: list[dict[str, Any]] = []
    start = time.perf_counter()
    for t in tqdm(range(1, vec_steps + 1), desc="soak", unit="vec step", mininterval=5.0, file=sys.stderr):
        actions = rng.integers(0, 3, size=B)
        tic, cpu = time.perf_counter(), time.process_time()
        obs, _, dones, infos = venv.step(actions)
        step_seconds[t - 1], step_cpu[t - 1] = time.perf_counter() - tic, time.process_time() - cpu
        if not readouts_finite(obs, keys):
            nonfinite.append(f"read-outs at vec step {t}")
        done = np.asarray(dones, dtype=bool)
        if done.any():
            for i in np.flatnonzero(done):
                if not readouts_finite(infos[i]["terminal_observation"], keys):
                    nonfinite.append(f"terminal read-outs of env {i} at vec step {t}")
            max_writes = max(max_writes, int(writes[done].max()))
            resets += int(done.sum())
        writes = np.where(done, 1, writes + 1)
        if t % check_every == 0 or t == vec_steps:
            sample = {"env_steps": t * B, **check_memories(venv)}
            samples.append(sample)
            if not sample["finite"]:
                nonfinite.append(f"R, U or A_inv at vec step {t}")
            if nonfinite or not sample["min_eig_U"] > 0.0:
                break  # failed: no point in soaking further
    elapsed = time.perf_counter() - start
    venv.close()
    ran = t
    max_writes = max(max_writes, int(writes.max()))  # the episodes still open at the end
    n = min(window, ran)  # vectorised steps per speed window (fewer if the run stopped early)
    first, last = slice(0, n), slice(ran - n, ran)
    fps_first, fps_last = n * B / step_seconds[first].sum(), n * B / step_seconds[last].sum()
    cpu_first, cpu_last = n * B / step_cpu[first].sum(), n * B / step_cpu[last].sum()
    finite_samples = [s for s in samples if s["finite"]]
    return {
        "env": args.env,
        "max_steps": args.max_steps,
        "num_envs": B,
        "frame_size": frame_size,
        "num_slots": machine.num_slots,
        "code_size": machine.code_size,
        "attractor_steps": args.attractor_steps,
        "machine": args.machine or "fresh DKM",
        "threads": torch.get_num_threads(),
        "env_steps": ran * B,
        "env_steps_requested": args.steps,
        "seconds": elapsed,
        "fps_whole": ran * B / step_seconds[:ran].sum(),
        "window_env_steps": n * B,
        "fps_first": fps_first,
        "fps_last": fps_last,
        "fps_ratio_last_first": fps_last / fps_first,
        "cpu_fps_first": cpu_first,
        "cpu_fps_last": cpu_last,
        "cpu_fps_ratio_last_first": cpu_last / cpu_first,
        "load_average_end": os.getloadavg()[0],
        "samples": len(samples),
        "min_eig_U": min((s["min_eig_U"] for s in finite_samples), default=math.nan),
        "max_asym_U": max((s["max_asym_U"] for s in finite_samples), default=math.nan),
        "max_A_inv_rel_err": max((s["A_inv_rel_err"] for s in finite_samples), default=math.nan),
        "resets": resets,
        "max_writes_between_resets": max_writes,
        "nonfinite": nonfinite,
        "positive_definite": bool(samples) and all(s["finite"] and s["min_eig_U"] > 0.0 for s in samples),
        "trace": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1_000_000, help="env steps in all (vectorised steps x envs)")
    parser.add_argument(
        "--env", default=None, help=f"MiniGrid task (default MiniGrid-MemoryS7-v0; {LONG_EPISODE_ENV} with --long-episodes)"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="episode time limit (default: the task's own)")
    parser.add_argument(
        "--long-episodes",
        action="store_true",
        help=f"{LONG_EPISODE_ENV} with a time limit longer than the run: no resets, every write into the same memories",
    )
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--check-every", type=int, default=2000, help="env steps between samples of U and A⁻¹")
    parser.add_argument("--window", type=float, default=0.05, help="share of the run in each of the first/last speed windows")
    parser.add_argument("--machine", default=None, help="checkpoint of a DKM/KM (default: a fresh DKM)")
    parser.add_argument("--attractor-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results (and the sampled trace) to this JSON file")
    args = parser.parse_args()
    if args.env is None:
        args.env = LONG_EPISODE_ENV if args.long_episodes else "MiniGrid-MemoryS7-v0"
    if args.long_episodes and args.max_steps is None:
        args.max_steps = args.steps // args.num_envs + 2
    if not 0.0 < args.window <= 0.5:
        parser.error("--window must be in (0, 0.5]")
    torch.set_num_threads(args.threads)
    machine = make_machine(AgentConfig(memory="dkm", memory_checkpoint=args.machine, seed=args.seed), "cpu")
    limit = "the task's own time limit" if args.max_steps is None else f"max_steps {args.max_steps}"
    memory = f"memory K={machine.num_slots} C={machine.code_size}, {args.attractor_steps} attractor steps"
    print(
        f"{args.num_envs} x {args.env} ({limit}), {machine.input_shape[0]}x{machine.input_shape[0]} frames, {memory}, "
        f"{args.threads} thread(s), {args.steps:,} env steps"
    )

    r = soak(args, machine)

    ok = not r["nonfinite"] and r["positive_definite"]
    window = f"{r['window_env_steps']:,} env steps"
    rows = [
        ("env steps run", f"{r['env_steps']:,} in {r['seconds']:.0f} s"),
        ("env steps/s, whole run", f"{r['fps_whole']:.0f}"),
        (f"env steps/s, first {window}", f"{r['fps_first']:.0f}"),
        (f"env steps/s, last {window}", f"{r['fps_last']:.0f}"),
        ("last / first", f"{r['fps_ratio_last_first']:.2f}"),
        (f"env steps per CPU s, first {window}", f"{r['cpu_fps_first']:.0f}"),
        (f"env steps per CPU s, last {window}", f"{r['cpu_fps_last']:.0f}"),
        ("last / first (CPU time)", f"{r['cpu_fps_ratio_last_first']:.2f}"),
        ("memory resets", f"{r['resets']:,}"),
        ("max writes between resets", f"{r['max_writes_between_resets']:,}"),
        (f"samples of U (every {args.check_every:,} env steps)", f"{r['samples']:,}"),
        ("max |U - Uᵀ|", f"{r['max_asym_U']:.2e}"),
        ("min eigenvalue of U", f"{r['min_eig_U']:.3e}"),
        ("max rel err of kept (RRᵀ+λI)⁻¹", f"{r['max_A_inv_rel_err']:.2e}"),
        ("NaN/inf in R, U, read-outs", "none" if not r["nonfinite"] else "; ".join(r["nonfinite"][:3])),
        ("U positive definite throughout", "yes" if r["positive_definite"] else "NO"),
    ]
    width = max(len(name) for name, _ in rows)
    print("-" * (width + 24))
    for name, value in rows:
        print(f"{name:<{width}}  {value:>20}")
    print("-" * (width + 24))
    print("PASS" if ok else "FAIL")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({**vars(args), **r, "ok": ok}, indent=1))
        print(f"wrote {args.out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
