"""Environment steps per second of 8 MiniGrid environments: bare, with VecEpisodicMemory, and with one
EpisodicMemoryWrapper per environment, measured side by side in one run (interleaved, medians of repeats).

Two modes:

- ``--mode pretrain-size`` (the default): a DKM of the default pretrain size (code 100, K = 32, 16
  filters) on 32x32 egocentric frames, freshly initialised unless ``--machine`` names a checkpoint
  (the cost does not depend on the weights); bare, ``VecEpisodicMemory``, a wrapper per env, and
  ``VecEpisodicMemory`` with the time-addressed recall beside the memory.
- ``--mode for-space``: MiniGrid's standard 56x56 RGB egocentric views (``RGBImgPartialObsWrapper`` +
  ``ImgObsWrapper``, tile 8; ``--frames frame-env`` uses ``make_frame_env(..., frame_size=56)``) with
  the default fresh machine ``DynamicKanervaMachine.for_space(venv.observation_space)`` (it reads 56x56
  frames at 28x28 with 16-filter coders); bare and ``VecEpisodicMemory``, and the target: the memory
  keeps >= 0.5 of bare. ``--knobs`` adds machines with other ``for_space`` options
  (``max_side=16,hidden_channels=8``: several ``key=value`` lists), measured in the same rounds.

Every configuration runs ``--steps`` vectorised steps per round, the configurations interleaved, for
``--repeats`` rounds; the tables give the median steps/s and the median of the per-round ratios to the
bare envs of the same round. The encoder's milliseconds per frame are timed on batches of ``num_envs``
frames (as ``VecEpisodicMemory`` encodes them) and of one frame, the machines in turn, medians of 200 repeats. Actions are random;
episodes end and reset as they do in training.

Usage::

    python benchmarks/wrapper_overhead.py
    python benchmarks/wrapper_overhead.py --machine runs/pretrain-dkm/model.safetensors --steps 2000
    python benchmarks/wrapper_overhead.py --mode for-space                      # the 56x56 target (~1 min)
    python benchmarks/wrapper_overhead.py --mode for-space --knobs max_side=16 hidden_channels=8 max_side=16,hidden_channels=8
    python benchmarks/wrapper_overhead.py --mode for-space --json runs/bench/wrapper_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from episodic_memory import DynamicKanervaMachine, GenerativeMemory
from episodic_memory.agents.builder import AgentConfig, make_machine
from episodic_memory.envs.mazes import make_frame_env
from episodic_memory.wrappers import EpisodicMemoryWrapper
from episodic_memory.wrappers.vec_env import VecEpisodicMemory


def load_note() -> str:
    one, five, fifteen = os.getloadavg()
    return f"machine load {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


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


@torch.no_grad()
def encoder_ms_per_frame(machines: dict[str, GenerativeMemory], frames: np.ndarray, repeats: int) -> dict[str, float]:
    """Median ms per frame of each machine's ``encode_and_address`` on the batch ``frames [N, *shape]`` (one frame per
    memory), the machines timed in turn ``repeats`` times so that the machine's load falls on all of them alike."""
    x = torch.as_tensor(frames)[:, None]  # [N, 1, ...]
    times: dict[str, list[float]] = {name: [] for name in machines}
    for machine in machines.values():
        machine.encode_and_address(x)  # warm-up
    for _ in range(repeats):
        for name, machine in machines.items():
            start = time.perf_counter()
            machine.encode_and_address(x)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * float(np.median(t)) / len(frames) for name, t in times.items()}


def interleaved(makers: dict[str, Callable[[], VecEnv]], steps: int, repeats: int, seed: int) -> dict[str, dict[str, float]]:
    """Steps/s of every maker, ``repeats`` rounds in turn; medians of steps/s and of the per-round ratio to ``bare``."""
    rounds: dict[str, list[float]] = {name: [] for name in makers}
    for r in range(repeats):
        for name, make in makers.items():
            rounds[name].append(steps_per_second(make, steps, seed + r))
    bare = np.array(rounds["bare"])
    return {
        name: {
            "steps_per_s": float(np.median(v)),
            "ratio": float(np.median(np.array(v) / bare)),
            "min_ratio": float(np.min(np.array(v) / bare)),
            "max_ratio": float(np.max(np.array(v) / bare)),
            "rounds": v,
        }
        for name, v in rounds.items()
    }


def parse_knobs(text: str) -> dict[str, Any]:
    options = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        options[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    return options


def pretrain_size(args: argparse.Namespace) -> dict[str, Any]:
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
        "VecEpisodicMemory + recall": lambda: VecEpisodicMemory(
            DummyVecEnv([env_fn(False)] * args.num_envs),
            machine,
            attractor_steps=args.attractor_steps,
            recall_lags=(1, 2, 3, 4),
            recall_positions=(0,),
        ),
    }
    memory = f"memory K={machine.num_slots} C={machine.code_size}, {args.attractor_steps} attractor steps"
    print("recall: the time-addressed memory beside it (K = 64), lags 1-4 and position 0 (suite method ppo+recall)")
    print(f"{args.num_envs} x {args.env}, {frame_size}x{frame_size} egocentric frames, {memory}, {args.threads} thread(s)")
    print(f"{args.repeats} interleaved rounds of {args.steps} vectorised steps each; medians")
    fps = interleaved(makers, args.steps, args.repeats, args.seed)
    for name, value in fps.items():
        print(f"{name:>26}: {value['steps_per_s']:8.0f} env steps/s   ({value['ratio']:.2f} of bare)")
    ratio = np.median(np.array(fps["VecEpisodicMemory"]["rounds"]) / np.array(fps["wrapper per env"]["rounds"]))
    print(f"VecEpisodicMemory / wrapper per env: {ratio:.2f}x")
    recall = np.median(np.array(fps["VecEpisodicMemory + recall"]["rounds"]) / np.array(fps["VecEpisodicMemory"]["rounds"]))
    print(f"with recall / without: {recall:.2f}")
    frame = make_frame_env(args.env, frame_size=frame_size).reset(seed=args.seed)[0]
    ms = encoder_ms_per_frame({"machine": machine}, np.stack([frame] * args.num_envs), 200)["machine"]
    print(f"encoder: {ms:.3f} ms per frame (batch of {args.num_envs})")
    return {"fps": fps, "encoder_ms_per_frame": ms}


def for_space(args: argparse.Namespace) -> dict[str, Any]:
    def make_env() -> gymnasium.Env:
        if args.frames == "minigrid":
            return ImgObsWrapper(RGBImgPartialObsWrapper(gymnasium.make(args.env)))  # tile 8: 56x56x3
        return make_frame_env(args.env, frame_size=56)

    def bare() -> VecEnv:
        return DummyVecEnv([make_env] * args.num_envs)

    space = bare().observation_space
    variants: dict[str, dict[str, Any]] = {"default": {}}
    for text in args.knobs:
        variants[text] = parse_knobs(text)
    machines: dict[str, GenerativeMemory] = {}
    for name, options in variants.items():
        torch.manual_seed(args.seed)
        machines[name] = DynamicKanervaMachine.for_space(space, **options).eval()
    print(f"{args.num_envs} x {args.env}, observations {space} ({args.frames}), {args.threads} thread(s)")
    print(f"{args.repeats} interleaved rounds of {args.steps} vectorised steps each; medians (ratio: median of per-round ratios)")
    makers: dict[str, Callable[[], VecEnv]] = {"bare": bare}
    for name, machine in machines.items():
        makers[name] = lambda machine=machine: VecEpisodicMemory(bare(), machine, attractor_steps=args.attractor_steps)
    fps = interleaved(makers, args.steps, args.repeats, args.seed)
    frames = np.stack([make_env().reset(seed=args.seed + i)[0] for i in range(args.num_envs)])
    ms_batch = encoder_ms_per_frame(machines, frames, 200)
    ms_one = encoder_ms_per_frame(machines, frames[:1], 200)
    rows = []
    for name, machine in machines.items():
        cfg = machine.config
        rows.append(
            {
                "machine": name,
                "input_shape": tuple(machine.input_shape),
                "hidden_channels": cfg["hidden_channels"],
                "encoder_params": sum(p.numel() for p in machine.encoder.parameters()),
                "ms_batch": ms_batch[name],
                "ms_one": ms_one[name],
                **fps[name],
            }
        )
    b = fps["bare"]
    header = (
        f"{'memory (for_space options)':<34} {'reads':>9} {'filters':>7} {'enc. params':>11} {'ms/frame':>8} {'(batch 1)':>9} "
        f"{'steps/s':>8} {'of bare':>7} {'range':>11} {'>= 0.5':>6}"
    )
    print(header)
    print("-" * len(header))
    print(f"{'bare envs':<34} {'':>9} {'':>7} {'':>11} {'':>8} {'':>9} {b['steps_per_s']:8.0f} {1:7.2f}")
    for r in rows:
        reads = "x".join(str(s) for s in r["input_shape"][:2])
        print(
            f"{r['machine']:<34} {reads:>9} {r['hidden_channels']:>7} {r['encoder_params']:>11,} {r['ms_batch']:8.3f} "
            f"{r['ms_one']:9.3f} {r['steps_per_s']:8.0f} {r['ratio']:7.2f} {r['min_ratio']:5.2f}-{r['max_ratio']:.2f} "
            f"{'yes' if r['ratio'] >= 0.5 else 'no':>6}"
        )
    print(
        f"ms/frame: the encoder (DKM encode, layer norm included) on a batch of {args.num_envs} frames, per frame; "
        "(batch 1): on one frame"
    )
    return {"bare": b, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode", choices=["pretrain-size", "for-space"], default="pretrain-size", help="see the module docstring"
    )
    parser.add_argument("--env", default="MiniGrid-MemoryS7-v0", help="MiniGrid id")
    parser.add_argument("--num-envs", type=int, default=8, help="sub-environments of the DummyVecEnv")
    parser.add_argument("--steps", type=int, default=1000, help="vectorised steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the tables give medians")
    parser.add_argument("--machine", default=None, help="pretrain-size mode: checkpoint of a DKM/KM (default: a fresh DKM)")
    parser.add_argument(
        "--frames",
        choices=["minigrid", "frame-env"],
        default="minigrid",
        help="for-space mode: RGBImgPartialObsWrapper+ImgObsWrapper (tile 8, 56x56) or make_frame_env(frame_size=56)",
    )
    parser.add_argument(
        "--knobs",
        nargs="*",
        default=[],
        help="for-space mode: more machines, each a comma-separated list of for_space options (max_side=16,hidden_channels=8)",
    )
    parser.add_argument("--attractor-steps", type=int, default=5, help="code-space attractor iterations of retrieval")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the machines, actions and resets")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(load_note())
    result = pretrain_size(args) if args.mode == "pretrain-size" else for_space(args)
    print(load_note())
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"args": vars(args), **result}, indent=1, default=str))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
