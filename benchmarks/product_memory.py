"""The Product Kanerva Machine against one Kanerva memory with as many slots: cost, capacity, allocation.

Three measurements, side by side in one run:

1. **Cost of one online step** (read-outs, then the write, as the RL wrapper runs it: 5 attractor
   iterations, B = ``--envs`` memories, C = 100): the ``pkm`` backend with M sub-memories of S/M
   slots against one memory of S slots, for S in ``--slots``: the ``dkm`` backend (content addressing, as
   each PKM sub-memory has) and the ``km`` backend (weights given with each code, nothing to solve).
   No training needed: the cost does not depend on the weights. A PKM step is ``O(M ((S/M)² + (S/M) C))``,
   the others' ``O(S² + S C)``.
2. **Capacity** (with ``--checkpoints``): the negative conditional ELBO per frame against the episode
   length T = 10 ... 200 (:func:`~episodic_memory.evaluation.generative.capacity_curve`), every model on
   the same held-out episodes of ``--data``, ``mixed`` and ``layouts=n`` modes.
3. **Allocation** (PKM checkpoints): the entropy of the selection weights α (0: each frame in one
   sub-memory; ln M: spread evenly), how many sub-memories an episode uses, and how well the
   sub-memory a frame goes to (argmax α) separates the mazes of ``layouts=n`` episodes: normalised
   mutual information between assignment and maze, per episode (0: unrelated, 1: one sub-memory per maze).

Usage::

    python benchmarks/product_memory.py                                  # cost only
    python benchmarks/product_memory.py --data runs/demo/data \\
        --checkpoints dkm=runs/pkm/dkm/model.safetensors km=runs/pkm/km/model.safetensors \\
        pkm=runs/pkm/pkm/model.safetensors --out runs/pkm/report                     # all three
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from episodic_memory import DynamicKanervaMachine, KanervaMachine, ProductKanervaMachine, load_machine
from episodic_memory.envs.dataset import FrameDataset
from episodic_memory.evaluation.generative import capacity_curve
from episodic_memory.models.pkm import allocation_entropy
from episodic_memory.registry import BACKENDS

CODE_SIZE = 100
ATTRACTOR_STEPS = 5


def step_cost_us(name: str, machine: torch.nn.Module, envs: int, steps: int, repeats: int) -> float:
    """Median over ``repeats`` of the wall time of one backend step (read-outs and write), in microseconds.

    The ``km`` backend's input is a code and its K addressing weights (random, of unit norm, as a
    calibrated KM's are); the others' a code.
    """
    generator = torch.Generator().manual_seed(0)
    codes = torch.randn(steps, envs, CODE_SIZE, generator=generator)
    if name == "km":
        weights = torch.nn.functional.normalize(torch.randn(steps, envs, machine.num_slots, generator=generator), dim=-1)
        codes = torch.cat([codes, weights], dim=-1)  # [steps, B, C + K]
    times = []
    for _ in range(repeats):
        backend = BACKENDS[name].build(machine, envs, ATTRACTOR_STEPS)
        backend.step(codes[0])  # warm-up
        started = time.perf_counter()
        for z in codes:
            backend.step(z)
        times.append((time.perf_counter() - started) / steps * 1e6)
    return statistics.median(times)


def cost_table(args: argparse.Namespace) -> list[dict]:
    rows = []
    for slots in args.slots:
        dkm = DynamicKanervaMachine((8,), code_size=CODE_SIZE, num_slots=slots, hidden_size=8).eval()
        km = KanervaMachine((8,), code_size=CODE_SIZE, num_slots=slots, hidden_size=8).eval()
        row = {"slots": slots, "dkm_us": step_cost_us("dkm", dkm, args.envs, args.steps, args.repeats)}
        row["km_us"] = step_cost_us("km", km, args.envs, args.steps, args.repeats)
        for m in args.memories:
            if slots % m == 0:
                pkm = ProductKanervaMachine((8,), code_size=CODE_SIZE, num_slots=slots, num_memories=m, hidden_size=8).eval()
                row[f"pkm{m}_us"] = step_cost_us("pkm", pkm, args.envs, args.steps, args.repeats)
        rows.append(row)
    return rows


def normalised_mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """NMI of two labelings of the same items, ``I(a; b) / sqrt(H(a) H(b))``.

    1 when each determines the other, 0 when they are unrelated or either is constant.
    """
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mutual = float((joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum())
    ha, hb = -(pa[pa > 0] * np.log(pa[pa > 0])).sum(), -(pb[pb > 0] * np.log(pb[pb > 0])).sum()
    return 0.0 if ha == 0 or hb == 0 else mutual / math.sqrt(ha * hb)


@torch.no_grad()
def allocation(model: ProductKanervaMachine, data: FrameDataset, layouts: int, T: int, episodes: int, seed: int) -> dict:
    """Selection statistics of ``model`` on ``episodes`` held-out episodes of T frames from ``layouts`` mazes each."""
    rng = np.random.default_rng(seed)
    L, S = data.num_layouts, data.steps_per_layout
    entropies, used, nmi, chance = [], [], [], []
    for _ in range(episodes):
        chosen = rng.choice(L, size=layouts, replace=False)
        which = rng.integers(layouts, size=T)  # the maze of each frame, 0..n-1
        frames = data.frames[torch.from_numpy(chosen[which]), torch.from_numpy(rng.integers(S, size=T))]  # [T, H, W, 3]
        alpha = model.selection(model.encode(frames[None]))[0]  # [T, M]
        assignment = alpha.argmax(-1).numpy()
        entropies.append(float(allocation_entropy(alpha).mean()))
        used.append(len(set(assignment.tolist())))
        nmi.append(normalised_mutual_information(assignment, which))
        chance.append(normalised_mutual_information(assignment, rng.permutation(which)))  # the same labels, shuffled
    return {
        "layouts": layouts,
        "entropy_nats": float(np.mean(entropies)),
        "max_entropy_nats": math.log(model.num_memories),
        "sub_memories_used": float(np.mean(used)),
        "nmi": float(np.mean(nmi)),
        "nmi_stderr": float(np.std(nmi) / math.sqrt(len(nmi))),
        "nmi_chance": float(np.mean(chance)),
    }


def plot_capacity(path: Path, curves: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = next(iter(curves.values()))["modes"]
    fig, axes = plt.subplots(1, len(modes), figsize=(4 * len(modes), 3.2), sharey=True, squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        for name, curve in curves.items():
            ax.errorbar(curve["lengths"], curve["error"][mode], yerr=curve["stderr"][mode], label=name, marker="o", ms=3)
        ax.set_xscale("log")
        ax.set_title(mode)
        ax.set_xlabel("episode length T")
    axes[0][0].set_ylabel("−conditional ELBO (nats/frame)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[32, 128, 512], help="total slots S")
    parser.add_argument("--memories", type=int, nargs="+", default=[4, 16], help="sub-memories M of the pkm rows")
    parser.add_argument("--envs", type=int, default=8, help="memories stepped together (B)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoints", nargs="*", default=[], metavar="NAME=PATH", help="trained models to compare")
    parser.add_argument("--data", help="dataset directory (its test split) for the capacity and allocation measurements")
    parser.add_argument("--lengths", type=int, nargs="+", default=[10, 20, 32, 50, 100, 200])
    parser.add_argument("--modes", nargs="+", default=["mixed", "layouts=2", "layouts=4"])
    parser.add_argument("--episodes", type=int, default=32, help="held-out episodes per point")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="as the models were trained with")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/product_memory", help="report.json and capacity.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"settings": vars(args)}

    report["cost"] = cost_table(args)
    step = f"read-outs with {ATTRACTOR_STEPS} attractor iterations, then the write"
    print(f"one online step ({step}), B={args.envs}, C={CODE_SIZE}, µs")
    pkm_columns = [f"pkm{m}_us" for m in args.memories]
    print(
        "| slots S | dkm (S slots) | km (S slots) | "
        + " | ".join(f"pkm, {m} x S/{m} | dkm/pkm{m} | km/pkm{m}" for m in args.memories)
        + " |"
    )
    print("|---|---|---|" + "---|---|---|" * len(args.memories))
    for row in report["cost"]:
        cells = [
            f"{row[c]:.0f} | {row['dkm_us'] / row[c]:.2f} | {row['km_us'] / row[c]:.2f}" if c in row else "- | - | -"
            for c in pkm_columns
        ]
        print(f"| {row['slots']} | {row['dkm_us']:.0f} | {row['km_us']:.0f} | " + " | ".join(cells) + " |")

    if args.checkpoints:
        if not args.data:
            parser.error("--checkpoints needs --data")
        data = FrameDataset(args.data, split="test", test_fraction=args.test_fraction)
        models = {}
        for item in args.checkpoints:
            name, _, path = item.partition("=")
            models[name] = load_machine(path).eval()
        curves = {}
        for name, model in models.items():
            started = time.perf_counter()
            curves[name] = capacity_curve(
                model, data.sample, args.lengths, args.modes, args.episodes, max_frames_per_batch=256, rng=args.seed
            )  # batches of at most 256 frames: several per point, so each has a standard error
            print(f"capacity of {name}: {time.perf_counter() - started:.0f} s")
        report["capacity"] = curves
        for mode in args.modes:
            print(f"\n−conditional ELBO, nats/frame, {mode} (mean ± s.e., {args.episodes} episodes a point)")
            print("| model | " + " | ".join(f"T={t}" for t in args.lengths) + " |")
            print("|---|" + "---|" * len(args.lengths))
            for name, curve in curves.items():
                cells = [f"{e:.1f} ± {s:.1f}" for e, s in zip(curve["error"][mode], curve["stderr"][mode], strict=True)]
                cells = [cell.replace(" ± nan", "") for cell in cells]  # one batch: no standard error
                print(f"| {name} | " + " | ".join(cells) + " |")
        plot_capacity(out / "capacity.png", curves)
        report["allocation"] = {}
        for name, model in models.items():
            if isinstance(model, ProductKanervaMachine):
                rows = [allocation(model, data, n, 32, args.episodes * 4, args.seed) for n in (2, 4, 8)]
                report["allocation"][name] = rows
                print(f"\nallocation of {name} (M={model.num_memories}), T=32, {args.episodes * 4} episodes a row")
                columns = ["layouts per episode", "entropy of α (nats, max ln M)", "sub-memories used"]
                columns += ["NMI(assignment, layout)", "NMI, layouts shuffled"]
                print("| " + " | ".join(columns) + " |")
                print("|---|---|---|---|---|")
                for r in rows:
                    print(
                        f"| {r['layouts']} | {r['entropy_nats']:.2f} (max {r['max_entropy_nats']:.2f}) | "
                        f"{r['sub_memories_used']:.1f} | {r['nmi']:.2f} ± {r['nmi_stderr']:.2f} | {r['nmi_chance']:.2f} |"
                    )
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out / 'report.json'}")


if __name__ == "__main__":
    main()
