"""Distortion against memory size on images: EBMM, the DKM and store-everything (the EBMM paper's Figure 3 protocol).

Bartunov et al. 2020, Fig. 3: batches of 64 images are written to a memory and each is read back
from a copy with a 16 x 16 block (of 32 x 32 CIFAR images) corrupted; the distortion (reconstruction
error) is plotted against the memory's size in floats, and EBMM is best when memory is small.

Ours: held-out ``mixed`` episodes of 64 frames of ``--data``, each frame with a random square of
half its side (maze frames 32 x 32: 16 x 16; digits 8 x 8: 4 x 4) set to ½; the distortion is the
mean squared error of the read-back frame (the likelihood's mean) against the clean frame, pixels in
[0, 1], over the whole frame and over the block alone. Every memory works on its machine's codes
(the paper: "All models shared the same encoder (and decoder)"); the sizes are the numbers one
memory holds:

- a DKM of K slots of C: ``K C + K (K + 1) / 2`` (R and the symmetric U); its read, one
  ``mode``-free read of the query (DKM eq. 13, ``model.reconstruct``);
- an EBMM of H rows: ``H (C + 1)``; its read, eq. 1 from the query's code, decoded;
- store-everything on each machine's codes: the 64 codes (``64 C``), read by a modern Hopfield network
  (attention over them, β the best of ``--betas``/√C on these episodes: the baseline tuned up, not down);
- with ``--conv-ebmm H ...``, EBMMs on the pixels themselves (the paper's convolutional variant): the energy's
  writable layer of H rows reads fixed convolutional features of the frame
  (:class:`~episodic_memory.energy.ConvolutionalFeatures`, F of them: ``H (F + 1)`` numbers), and a read
  descends the frame's pixels (eq. 1, projected onto [0, 1]; not told where the block is, as the machines
  are not, unless ``--conv-told-block``: then every read holds the pixels outside it, the paper's projection
  onto the known entries). Each is meta-trained here (eq. 5) on sets of 64 frames of the training split with the same
  corruption, cached in ``--out`` and reused; its control is the read through θ̄, the unwritten memory;
- two controls for each machine: its autoencoder alone, ``d(e(x̃))`` with no memory (0 numbers), and its
  read through the memory of *another* episode of the batch: what the machine does without the episode.
  The EBMM machine trains its coders on distorted frames and the DKM does not, so the difference between
  a machine's own memory and these controls, not the rows across machines, is what its memory adds.

Usage::

    python benchmarks/image_distortion.py --data runs/demo/data --out runs/distortion/mazes \\
        dkm-4=runs/distortion/mazes/dkm-4/model.safetensors ebmm-4=runs/distortion/mazes/ebmm-4/model.safetensors ... \\
        --conv-ebmm 4 16 64
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from binary_recall import cached_energy_memory
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from episodic_memory import EnergyBasedMemoryMachine, GenerativeMemory, load_machine
from episodic_memory.backends import DenseAssociativeMemory
from episodic_memory.energy import ConvolutionalFeatures, Corrupter, EnergyMemory, meta_train
from episodic_memory.envs.dataset import FrameDataset
from episodic_memory.registry import backend_kind, own_backend

EPISODE = 64  # frames written to one memory (the paper's batches of 64 images)


def memory_floats(model: GenerativeMemory) -> int:
    """Numbers one empty memory of ``model`` holds, as its own backend counts them."""
    return backend_kind(own_backend(model)).build(model, 1, 1).state_floats


def decoded(model: GenerativeMemory, z: torch.Tensor) -> torch.Tensor:
    """Codes ``[B, T, C]`` -> the likelihood's mean frames ``[B, T, *input_shape]`` in [0, 1]."""
    B, T = z.shape[:2]
    return model._frames_out(model.likelihood.mean(model._decode(z)), B, T)


def store_everything(model: GenerativeMemory, z: torch.Tensor, zq: torch.Tensor, beta: float) -> torch.Tensor:
    """The frames read back from the query codes ``zq [B, T, C]`` through a modern Hopfield network of all the
    episode's codes ``z [B, T, C]``: ``[B, T, *input_shape]``."""
    memory = DenseAssociativeMemory(z.shape[0], model.code_size, beta=beta / model.code_size**0.5, steps=1, dtype=z.dtype)
    for t in range(z.shape[1]):
        memory.write(z[:, t])
    return decoded(model, memory.retrieve(zq))


def frame_corruption(corrupter: Corrupter, frame_shape: tuple[int, int, int], told: bool):
    """``corrupter`` on flattened frames: ``x [B, N, C·H·W] -> (x̃ [B, N, C·H·W], known [B, N, C·H·W] if told else None)``."""

    def corrupt(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        distorted, known = corrupter(x.view(*x.shape[:2], *frame_shape))
        return distorted.flatten(2), known.flatten(2) if told else None

    return corrupt


def conv_ebmm(
    rows: int, data: FrameDataset, frame_shape: tuple[int, int, int], args: argparse.Namespace
) -> tuple[EnergyMemory, dict]:
    """The pixel-space EBMM of ``rows`` writable rows, loaded from ``--out`` or meta-trained there (module docstring)."""
    settings = {"model": "conv-ebmm", "rows": rows, "steps": args.conv_steps, "channels": args.conv_channels,
                "write_steps": args.conv_write_steps, "data": str(args.data), "seed": args.seed,
                "told_block": args.conv_told_block}  # fmt: skip
    layers = 3 if min(frame_shape[1:]) >= 32 else 2  # 32 x 32 frames: 4 x 4 features; 8 x 8 digits: 2 x 2
    torch.manual_seed(args.seed)  # every memory starts alike, whatever was trained before it in this run
    features = ConvolutionalFeatures(frame_shape, channels=args.conv_channels, layers=layers)
    memory = EnergyMemory(
        math.prod(frame_shape), rows, read_steps=5, write_steps=args.conv_write_steps, bounds=(0.0, 1.0), features=features
    )
    rng = np.random.default_rng(args.seed + rows)
    side = min(frame_shape[1:]) // 2
    corrupt = frame_corruption(Corrupter("block", side, low=0.0, high=1.0, fill=0.5), frame_shape, args.conv_told_block)

    def sample() -> torch.Tensor:  # [2, 64, C·H·W]: two sets of frames a step
        x = torch.as_tensor(data.sample(2, EPISODE, "mixed", rng)).float() / 255.0
        return x.permute(0, 1, 4, 2, 3).flatten(2)

    def train(memory: EnergyMemory) -> None:
        losses = meta_train(memory, sample, corrupt, args.conv_steps, lr=1e-3, progress=f"meta-training conv-ebmm-{rows}")
        settings["final_loss"] = sum(losses[-50:]) / len(losses[-50:])  # mean over the last 50 steps

    name = f"conv-ebmm-{rows}" + ("-told" if args.conv_told_block else "")
    return cached_energy_memory(memory, args.out, name, settings, train)


def read_frames(memory: EnergyMemory, theta: tuple, query: torch.Tensor, held: torch.Tensor | None) -> torch.Tensor:
    """A pixel EBMM's read (eq. 1) of the frames ``query [B, 64, C, H, W]`` -> ``[B, 64, H, W, C]``; ``held``: the
    flattened entries the read keeps, or None."""
    return memory.read(query.flatten(2), theta, held).view_as(query).permute(0, 1, 3, 4, 2)


def errors(read: torch.Tensor, clean: torch.Tensor, block: torch.Tensor) -> tuple[float, float]:
    """(mean squared error over the frames, over the corrupted blocks) of ``read`` against ``clean``, both [0, 1]."""
    squared = (read - clean) ** 2
    return float(squared.mean()), float(squared[block].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", metavar="NAME=PATH", help="DKM and EBMM checkpoints of one dataset")
    parser.add_argument("--data", required=True, help="dataset directory (its test split)")
    parser.add_argument("--out", required=True, help="where results.json and distortion.png go")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--batches", type=int, default=8, help="episodes of 64 frames, one memory each")
    parser.add_argument(
        "--betas", type=float, nargs="+", default=[0.25, 1.0, 4.0, 16.0, 64.0], help="store-everything's β, times 1/√C"
    )
    parser.add_argument("--conv-ebmm", type=int, nargs="*", default=[], metavar="H", help="pixel-space EBMMs of H rows")
    parser.add_argument("--conv-steps", type=int, default=1000, help="their meta-training steps (2 sets of 64 frames each)")
    parser.add_argument("--conv-channels", type=int, default=16, help="their convolutions' channels")
    parser.add_argument("--conv-write-steps", type=int, default=5, help="their write's T (eq. 4)")
    parser.add_argument(
        "--conv-told-block",
        action="store_true",
        help="their reads hold the pixels outside the block (projected onto the known entries), in training and here",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    data = FrameDataset(args.data, split="test", test_fraction=args.test_fraction)
    rng = np.random.default_rng(args.seed)
    x = torch.as_tensor(data.sample(args.batches, EPISODE, "mixed", rng)).float() / 255.0  # [B, 64, H, W, C] in [0, 1]
    frames = x.permute(0, 1, 4, 2, 3)  # [B, 64, C, H, W]
    side = min(frames.shape[-2:]) // 2
    distorted, known = Corrupter("block", side, low=0.0, high=1.0, fill=0.5, generator=torch.Generator().manual_seed(1))(frames)
    query, block = distorted.permute(0, 1, 3, 4, 2), ~known.permute(0, 1, 3, 4, 2)  # back to [B, 64, H, W, C]

    rows: list[dict] = []

    def add(name: str, family: str, floats: int, read: torch.Tensor) -> None:
        mse, block_mse = errors(read, x, block)
        rows.append({"name": name, "family": family, "floats": floats, "mse": mse, "block_mse": block_mse})

    add("the distorted query itself", "query", 0, query)
    with torch.no_grad():
        for spec in args.models:
            name, _, path = spec.partition("=")
            model = load_machine(path).eval()
            family = "ebmm" if isinstance(model, EnergyBasedMemoryMachine) else "dkm"
            add(name, family, memory_floats(model), model.reconstruct(model.write(x), query))
            other = model.reconstruct(model.write(x.roll(1, 0)), query)  # episode b read through b-1's memory
            add(f"{name}: another episode's memory", f"{family}, another episode's memory", memory_floats(model), other)
            z, zq = model.encode(x), model.encode(query)  # [B, 64, C]
            add(f"{name}: autoencoder alone", f"{family}: autoencoder alone", 0, decoded(model, zq))
            (error, beta) = min((errors(store_everything(model, z, zq, b), x, block), b) for b in args.betas)
            rows.append({"name": f"{name}: store-everything (β {beta:g}/√C)", "family": f"{family}: store-everything",
                         "floats": 64 * model.code_size, "mse": error[0], "block_mse": error[1]})  # fmt: skip

    training_frames = FrameDataset(args.data, split="train", test_fraction=args.test_fraction) if args.conv_ebmm else None
    held = known.flatten(2) if args.conv_told_block else None  # [B, 64, C·H·W]
    told = ", told the block" if args.conv_told_block else ""
    for H in args.conv_ebmm:
        memory, saved = conv_ebmm(H, training_frames, frames.shape[2:], args)
        with torch.no_grad():
            theta = memory.write(frames.flatten(2))
            other = tuple(t.roll(1, 0) for t in theta)  # episode b read through b-1's memory
            name = f"conv-ebmm-{H}{told} ({saved['steps']} steps, {saved['seconds']:.0f} s)"
            add(name, "conv-ebmm", memory.state_floats, read_frames(memory, theta, distorted, held))
            add(f"{name}: another episode's memory", "conv-ebmm, another episode's memory", memory.state_floats,
                read_frames(memory, other, distorted, held))  # fmt: skip
            add(f"{name}: the unwritten memory θ̄", "conv-ebmm: unwritten", 0,
                read_frames(memory, memory.initial(frames.shape[0]), distorted, held))  # fmt: skip

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"distortion of {args.batches} held-out episodes of 64 frames of {args.data}, a {side} x {side} block set to ½\n")
    print("| memory | numbers held | MSE (frame) | MSE (block) |")
    print("|---|---|---|---|")
    for row in sorted(rows, key=lambda r: (r["family"], r["floats"])):
        print(f"| {row['name']} | {row['floats']:,} | {row['mse']:.4f} | {row['block_mse']:.4f} |")
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for family, color in (("dkm", "tab:blue"), ("ebmm", "tab:orange"), ("conv-ebmm", "tab:green")):
        for suffix, style in (("", "-"), (", another episode's memory", "--")):
            points = sorted((r["floats"], r["block_mse"]) for r in rows if r["family"] == family + suffix)
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", linestyle=style, color=color, label=family + suffix)
        points = [(r["floats"], r["block_mse"]) for r in rows if r["family"] == f"{family}: store-everything"]
        if points:  # one point per machine's coders, all at 64 C numbers
            ax.plot(
                *zip(*points, strict=True), marker="^", linestyle="none", color=color, label=f"store-everything, {family} coders"
            )
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yscale("log")  # the machines differ by an order of magnitude
    ax.set_xlabel("memory size (numbers held)")
    ax.set_ylabel("distortion: MSE in the corrupted block (log)")
    ax.set_title(f"{args.data}: 64 frames, {side} x {side} block")
    ax.legend(fontsize="small")
    fig.savefig(out / "distortion.png", dpi=100)
    print(f"\nresults.json and distortion.png in {out}")


if __name__ == "__main__":
    main()
