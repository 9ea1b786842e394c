"""How much of an episode a trained memory model keeps: the energy of frames read from their own episode's memory
against the memory of another episode.

For each model: held-out ``mixed`` episodes are written (``model.write``), then every frame's energy
(``model.energy``: the negative ELBO of reading the frame back through the memory) is taken under its own
episode's memory and under the memory of the next episode in the batch. The difference, in nats per frame,
is what the memory contributes that a memory of other frames does not: near 0, the model reads its frames
back from what it learned in training (its coders, its prior), not from the episode it wrote.

Usage::

    python benchmarks/memory_use.py --data runs/digits/data dkm=runs/digits/dkm/model.safetensors \\
        kpp=runs/digits/kpp/model.safetensors
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from episodic_memory import load_machine
from episodic_memory.envs.dataset import FrameDataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", metavar="NAME=PATH")
    parser.add_argument("--data", required=True, help="dataset directory (its test split)")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--episodes", type=int, default=16, help="episodes per batch")
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = FrameDataset(args.data, split="test", test_fraction=args.test_fraction)
    print("| model | energy, own memory (nats/frame) | energy, another episode's memory | difference |")
    print("|---|---|---|---|")
    for spec in args.models:
        name, _, path = spec.partition("=")
        model = load_machine(path).eval()
        rng = np.random.default_rng(args.seed)  # every model reads the same episodes
        torch.manual_seed(args.seed)
        own, other = [], []
        with torch.no_grad():
            for _ in range(args.batches):
                x = data.sample(args.episodes, args.length, "mixed", rng)  # [B, T, ...]
                own.append(float(model.energy(model.write(x), x).mean()))
                other.append(float(model.energy(model.write(x.roll(1, 0)), x).mean()))  # episode b reads b-1's memory
        print(f"| {name} | {np.mean(own):.2f} | {np.mean(other):.2f} | {np.mean(other) - np.mean(own):.2f} |")


if __name__ == "__main__":
    main()
