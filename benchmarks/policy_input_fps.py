"""Training frames/s on MiniGrid-MemoryS7: PPO without memory vs PPO + DKM with ``policy_input="both"``
(pixels and read-outs) vs ``policy_input="readouts"`` (read-outs and the observation's code, no pixels, no
policy CNN), measured side by side in one run.

Every agent is ``build_agent(AgentConfig(...))`` with the defaults (8 envs, 32x32 egocentric frames, n_steps
128, batch 64, MemoryFeaturesExtractor), the same ``--seed``, and a fresh DKM from ``for_space`` (or
``--memory-checkpoint PATH``). Each agent is built once and warmed up (``--warmup`` steps), then the agents
train ``--steps`` steps each in turn (``learn(..., reset_num_timesteps=False)``) for ``--rounds`` rounds; the
table gives the median frames/s over rounds, the median share of the time spent collecting rollouts (env
steps, memory and policy forward) against PPO's updates, both phases in ms per env step, and the medians of
the per-round ratios of frames/s.

Usage::

    python benchmarks/policy_input_fps.py                      # 6144 steps x 3 rounds x 3 agents (~4-5 min on 2 busy cores)
    python benchmarks/policy_input_fps.py --memory-checkpoint runs/demo/dkm/model.safetensors --rounds 5
    python benchmarks/policy_input_fps.py --steps 4096 --json runs/bench/policy_input_fps.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from episodic_memory.agents.builder import AgentConfig, build_agent

AGENTS = {  # name -> AgentConfig options
    "ppo": {"memory": "none"},
    "ppo+dkm both": {"memory": "dkm", "policy_input": "both"},
    "ppo+dkm readouts": {"memory": "dkm", "policy_input": "readouts"},
}


def load_note() -> str:
    one, five, fifteen = os.getloadavg()
    return f"machine load {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


class RolloutTimer(BaseCallback):
    """Wall time spent collecting rollouts (between on_rollout_start and on_rollout_end)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self._start = 0.0

    def _on_rollout_start(self) -> None:
        self._start = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.seconds += time.perf_counter() - self._start

    def _on_step(self) -> bool:
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="MiniGrid-MemoryS7-v0", help="Gymnasium id")
    parser.add_argument("--steps", type=int, default=6144, help="training steps per agent and round (all envs together)")
    parser.add_argument("--warmup", type=int, default=1024, help="training steps per agent before the timed rounds")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table gives medians")
    parser.add_argument("--memory-checkpoint", default=None, help="pretrained machine (default: a fresh DKM from for_space)")
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=list(AGENTS), help="agents to measure")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every agent and its memory")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(load_note())
    models = {}
    for name in args.agents:
        options = dict(AGENTS[name])
        if options["memory"] != "none":
            options["memory_checkpoint"] = args.memory_checkpoint
        config = AgentConfig(env_id=args.env_id, seed=args.seed, device="cpu", **options)
        model = build_agent(config)
        model.learn(args.warmup)
        keys = list(model.observation_space.spaces)
        params = sum(p.numel() for p in model.policy.parameters())
        models[name] = model
        print(f"{name:<18} observation keys {keys}, policy parameters {params:,}")
    memory = args.memory_checkpoint or "fresh DKM (for_space)"
    print(
        f"{args.env_id}, 8 envs, default PPO, memory {memory}, seed {args.seed}, {args.threads} thread(s); "
        f"{args.rounds} interleaved rounds of {args.steps} steps per agent after {args.warmup} warm-up steps"
    )
    fps: dict[str, list[float]] = {name: [] for name in models}
    rollout_share: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            timer = RolloutTimer()
            start = time.perf_counter()
            model.learn(args.steps, callback=timer, reset_num_timesteps=False)
            elapsed = time.perf_counter() - start
            fps[name].append(args.steps / elapsed)
            rollout_share[name].append(timer.seconds / elapsed)
    median = {name: float(np.median(v)) for name, v in fps.items()}
    header = (
        f"{'agent':<18} {'fps (median)':>12} {'rounds':>16} {'rollout share':>13} {'rollout ms/step':>15} {'update ms/step':>14}"
    )
    print(header)
    print("-" * len(header))
    for name, values in fps.items():
        rounds = " ".join(f"{v:.0f}" for v in values)
        per_step = 1000 / np.array(values)  # ms of training per env step, each round
        rollout_ms = float(np.median(per_step * np.array(rollout_share[name])))
        update_ms = float(np.median(per_step * (1 - np.array(rollout_share[name]))))
        print(
            f"{name:<18} {median[name]:12.0f} {rounds:>16} {np.median(rollout_share[name]):13.2f} {rollout_ms:15.2f} "
            f"{update_ms:14.2f}"
        )
    ratios = {}
    pairs = [("ppo+dkm readouts", "ppo+dkm both"), ("ppo+dkm readouts", "ppo"), ("ppo+dkm both", "ppo")]
    for a, b in pairs:
        if a in fps and b in fps:
            per_round = np.median(np.array(fps[a]) / np.array(fps[b]))
            ratios[f"{a} / {b}"] = float(per_round)
            print(f"{a} / {b}: {per_round:.2f} (median of per-round ratios)")
    print(
        "rollout share: the fraction of the training time spent collecting rollouts (env steps, memory, policy forward); "
        "the rest is PPO's updates; ms/step: per env step (8 envs step together)"
    )
    print(load_note())
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"args": vars(args), "fps": fps, "median_fps": median, "rollout_share": rollout_share, "ratios": ratios}
        path.write_text(json.dumps(data, indent=1))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
