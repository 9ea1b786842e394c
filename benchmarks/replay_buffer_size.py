"""Bytes per transition of the DQN / QR-DQN replay buffer for each ``--replay-readouts`` option.

The agent's observation on MiniGrid-MemoryS7 with the default memory (a fresh DKM, K=32 rows,
C=100 code size) and 32x32 RGB frames: the frame (uint8), ``retrieval`` [C], ``novelty`` [1] and
``memory`` [K, C] read-outs (float32). A transition stores the observation twice (observation and
next observation), the action and float32 reward, done and timeout. The table is computed by
:func:`~episodic_memory.agents.replay.replay_buffer_nbytes` and checked against the nbytes of the
arrays of a real (small) buffer built by ``build_agent``.

Usage::

    python benchmarks/replay_buffer_size.py
    python benchmarks/replay_buffer_size.py --env-id MiniGrid-MemoryS13-v0 --num-slots 64
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from episodic_memory.agents.builder import AgentConfig, build_agent, make_agent_env, vector_readouts
from episodic_memory.agents.replay import replay_buffer_nbytes


def allocated_nbytes(config: AgentConfig) -> int:
    """Bytes of the arrays of the replay buffer ``build_agent`` allocates for ``config``."""
    model = build_agent(config)
    buffer = model.replay_buffer
    arrays = [*buffer.observations.values(), *buffer.next_observations.values()]
    arrays += [buffer.actions, buffer.rewards, buffer.dones, buffer.timeouts]
    model.get_env().close()
    return sum(a.nbytes for a in arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="MiniGrid-MemoryS7-v0")
    parser.add_argument("--frame-size", type=int, default=32)
    parser.add_argument("--num-slots", type=int, default=32, help="K")
    parser.add_argument("--code-size", type=int, default=100, help="C")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    check_size = 1_000  # transitions of the real buffer whose arrays are measured
    base = AgentConfig(
        env_id=args.env_id,
        algo="dqn",
        frame_size=args.frame_size,
        num_slots=args.num_slots,
        code_size=args.code_size,
        num_envs=1,
        buffer_size=check_size,
        device="cpu",
        seed=args.seed,
    )
    print(f"{args.env_id}, {args.frame_size}x{args.frame_size} RGB frames, fresh DKM K={args.num_slots}, C={args.code_size}")
    print(f"{'--replay-readouts':<18} {'bytes/transition':>16} {'GiB at 100k':>12} {'GiB at 1M':>10}  {'checked':>8}")
    for mode in ("full", "float16", "no-memory"):
        config = replace(base, replay_readouts=mode)
        venv = make_agent_env(config)
        keys = vector_readouts(venv.observation_space) if mode == "float16" else ()
        per_transition, total = replay_buffer_nbytes(venv.observation_space, venv.action_space, check_size, 1, keys)
        venv.close()
        checked = "yes" if allocated_nbytes(config) == total else "NO"
        gib = [n * per_transition / 2**30 for n in (100_000, 1_000_000)]
        print(f"{mode:<18} {per_transition:>16,} {gib[0]:>12.2f} {gib[1]:>10.2f}  {checked:>8}")


if __name__ == "__main__":
    main()
