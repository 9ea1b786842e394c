"""Environment steps per second of 8 MiniGrid environments: bare, with VecEpisodicMemory, and with one
EpisodicMemoryWrapper per environment, measured side by side in one run.

The memory is a DKM of the default pretrain size (code 100, K = 32, 16 filters) on 32x32 egocentric
frames, freshly initialised unless ``--machine`` names a checkpoint (the cost does not depend on
the weights). Actions are random; episodes end and reset as they do in training.

Usage::

    python benchmarks/wrapper_overhead.py
    python benchmarks/wrapper_overhead.py --machine runs/pretrain-dkm/model.safetensors --steps 2000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from episodic_memory.agents.builder import AgentConfig, make_machine
from episodic_memory.envs.mazes import make_frame_env
from episodic_memory.vec_env import VecEpisodicMemory
from episodic_memory.wrappers import EpisodicMemoryWrapper


def steps_per_second(make: Callable[[], VecEnv], steps: int, seed: int) -> float:
    venv = make()
    venv.seed(seed)
    venv.reset()
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 3, size=(steps, venv.num_envs))
    start = time.perf_counter()
    for a in actions:
        venv.step(a)
    elapsed = time.perf_counter() - start
    venv.close()
    return steps * venv.num_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="MiniGrid-MemoryS7-v0")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1000, help="vectorised steps per measurement")
    parser.add_argument("--machine", default=None, help="checkpoint of a DKM/KM (default: a fresh DKM)")
    parser.add_argument("--attractor-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = make_machine(AgentConfig(memory="dkm", memory_checkpoint=args.machine, seed=args.seed), "cpu")
    frame_size = machine.input_shape[0]

    def env_fn(wrap: bool) -> Callable[[], object]:
        def make() -> object:
            env = make_frame_env(args.env, frame_size=frame_size)
            return EpisodicMemoryWrapper(env, machine, attractor_steps=args.attractor_steps) if wrap else env

        return make

    makers = {
        "bare": lambda: DummyVecEnv([env_fn(False)] * args.num_envs),
        "VecEpisodicMemory": lambda: VecEpisodicMemory(
            DummyVecEnv([env_fn(False)] * args.num_envs), machine, attractor_steps=args.attractor_steps
        ),
        "wrapper per env": lambda: DummyVecEnv([env_fn(True)] * args.num_envs),
    }
    memory = f"memory K={machine.num_slots} C={machine.code_size}, {args.attractor_steps} attractor steps"
    print(f"{args.num_envs} x {args.env}, {frame_size}x{frame_size} egocentric frames, {memory}, {args.threads} thread(s)")
    fps = {name: steps_per_second(make, args.steps, args.seed) for name, make in makers.items()}
    for name, value in fps.items():
        print(f"{name:>18}: {value:8.0f} env steps/s   ({value / fps['bare']:.2f} of bare)")
    print(f"VecEpisodicMemory / wrapper per env: {fps['VecEpisodicMemory'] / fps['wrapper per env']:.2f}x")


if __name__ == "__main__":
    main()
