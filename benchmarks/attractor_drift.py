"""Where do attractor iterates go after the corruption is gone? Drift of the DKM's denoising dynamics.

For each machine (e.g. checkpoints of one run at several steps) and each corruption, writes held-out
``mixed`` episodes, corrupts every frame (as ``episodic-memory evaluate`` does) and prints the MSE to the
clean frames per iteration of:

- ``memory``: the attractor ``x <- mode p(x | x, M)`` (DKM §3.5), every read through the memory;
- ``coders``: the coders' round trip alone, ``x <- mode d(e(x))``, no memory;

and the median relative fall of the energy per attractor iteration, ``(E_n - E_{n+1}) / |E_n|``.
If the coders alone drift as far or further, the drift is theirs, not the memory's.

Usage::

    python benchmarks/attractor_drift.py --data data/mazes \\
        --machine runs/logistic/pretrain-dkm/checkpoints/step-0002000/model.safetensors \\
        --machine runs/logistic/pretrain-dkm/model.safetensors
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from episodic_memory import DynamicKanervaMachine, load_machine
from episodic_memory.envs.dataset import FrameDataset
from episodic_memory.evaluation.generative import NOISES, corrupt


def coders_round_trip(model: DynamicKanervaMachine, x: torch.Tensor, steps: int) -> torch.Tensor:
    """Iterates of ``x <- mode d(e(x))`` from ``x [B, T, *input_shape]``: ``[steps + 1, B, T, *input_shape]``."""
    B, T = x.shape[:2]
    trajectory = [x]
    for _ in range(steps):
        params = model.decoder(model.encode(trajectory[-1]).flatten(0, 1))  # [B*T, *model_shape]
        frames = model.input_spec.from_model(model.likelihood.mode(params))  # [B*T, *input_shape]
        trajectory.append(frames.reshape(B, T, *model.input_shape))
    return torch.stack(trajectory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/mazes", help="dataset directory (its held-out mazes are used)")
    parser.add_argument("--machine", action="append", required=True, help="a DKM checkpoint (repeat for several)")
    parser.add_argument("--episodes", type=int, default=16, help="episodes written and corrupted")
    parser.add_argument("--episode-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=15, help="iterations")
    parser.add_argument("--noise-std", type=float, default=0.15)
    parser.add_argument("--block", type=int, default=8, help="side of the occluding block")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    test = FrameDataset(args.data, split="test")
    for path in args.machine:
        model = load_machine(path).eval()
        if not isinstance(model, DynamicKanervaMachine):
            raise SystemExit(f"{path}: holds a {type(model).__name__}, this benchmark measures DynamicKanervaMachine models")
        rng = np.random.default_rng(args.seed)
        clean = test.sample(args.episodes, args.episode_length, "mixed", rng).to(model.dtype) / 255.0  # [B, T, H, W, 3]
        print(f"\n{path}")
        print(f"{'corruption':<10} {'dynamics':<8}  MSE to the clean frames, iterations 0..{args.steps}")
        with torch.no_grad():
            state = model.write(clean)
            for noise in NOISES:
                corrupted = corrupt(clean, noise, args.noise_std, args.block, model.input_spec, rng)
                memory, energies = model.attractor(state, corrupted, args.steps)
                coders = coders_round_trip(model, corrupted, args.steps)
                for name, trajectory in (("memory", memory), ("coders", coders)):
                    mse = ((trajectory - clean) ** 2).flatten(1).mean(1)  # [N+1]
                    print(f"{noise:<10} {name:<8}  " + " ".join(f"{v:.4f}" for v in mse.tolist()))
                fall = ((energies[:-1] - energies[1:]) / energies[:-1].abs()).flatten(1).median(1).values  # [N]
                print(
                    f"{noise:<10} {'energy':<8}  median relative fall per iteration: "
                    + " ".join(f"{v:.0e}" for v in fall.tolist())
                )


if __name__ == "__main__":
    main()
