"""Recall of random binary patterns from a fixed-size memory: the EBMM paper's Table 1 protocol.

Bartunov et al., *Meta-Learning Deep Energy-Based Memory Models* (ICLR 2020), Table 1: random
128-bit ±1 patterns; 16, 32, 48, 64 or 96 of them written to one memory; each then queried with
64 of its bits corrupted; the score is the number of wrong bits in the retrieved pattern, averaged
over the stored patterns and ``--trials`` independent pattern sets. Every memory is limited to
128·127/2 + 128 = 8,256 numbers, what a Hopfield network of 128 units holds.

What the paper does not say, and what we chose: the 64 corrupted bits are replaced by fresh random
bits (``--corruption random``: about 32 of them end up flipped; ``erased`` sets them to 0 instead);
the retrieval dynamics hold the 64 known bits at their values and fill in the others (a memory told
which bits it was given); Hopfield networks update asynchronously in a random order until a sweep
changes nothing. The Hebb rule has no choice of its own, so its row calibrates the protocol: with
random bits it reproduces the paper's row within 0.2 bits (0.4/4.9/9.8/12.8/16.5, 100 sets), with
erased bits it falls 0.6-0.8 bits below it. Rows:

- ``hebb``, ``storkey``, ``pseudo-inverse``: :class:`HopfieldMemory` with that rule (8,128 or
  8,256 numbers);
- ``sdm``: :class:`SparseDistributedMemory` with 64 hard locations (64·128 contents + 64 counts =
  8,256 numbers) and the radius that selects about ``--sdm-activation`` of them;
- ``store-everything``: :class:`DenseAssociativeMemory` (β = ``--dense-beta``, 3 update steps, the
  retrieval's signs as bits). It keeps every pattern, N·128 numbers: over the budget beyond 64
  patterns (marked in the table), the reference a compressing memory is measured against;
- ``dkm``, ``km``: a Dynamic Kanerva Machine and a Kanerva Machine with K = 64 slots of C = 96
  (R and the symmetric U: 6,144 + 2,080 = 8,224 numbers), MLP coders and a Bernoulli likelihood on the
  bits as {0, 1}, trained for the job as EBMM is: their objective (DKM Algorithm 1, KM eq. 8) on sets
  of 16-96 random patterns for ``--train-steps`` steps, cached in ``--cache`` and reused. The patterns
  are written (``model.write``), each query is the corrupted pattern as {0, 1} bits (erased bits
  at ½), and the retrieval is ``--model-steps`` attractor iterations ``x <- mode p(x | x, M)``
  (DKM §3.5) with the known bits held, its bits the mode's. The sizes, the training schedule and erased bits at ½ are our choices;
- ``ebmm``: an :class:`~episodic_memory.energy.EnergyMemory` whose writable layer is 64 x 128 weights and 64
  biases (8,256 numbers, the budget exactly), meta-trained (eq. 5) for ``--ebmm-steps`` steps on batches of
  16 random sets of as many patterns as the column has, with this benchmark's corruption: one memory per
  column, as the paper's Table 1 reads (the sets of its p_d(X) have one size), cached in ``--cache``.
  The read holds the known bits (as every row's does); its bits are the signs of the read.

Usage::

    python benchmarks/binary_recall.py              # the table, with the paper's rows beside ours
    python benchmarks/binary_recall.py --json       # one JSON object: {model: {patterns: error bits}}
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from episodic_memory import DynamicKanervaMachine, GenerativeMemory, KanervaMachine, load_machine
from episodic_memory.backends import DenseAssociativeMemory, HopfieldMemory, SparseDistributedMemory, binary_patterns
from episodic_memory.energy import Corrupter, EnergyMemory, meta_train

BITS = 128
CORRUPTED = 64
PATTERN_COUNTS = (16, 32, 48, 64, 96)
BUDGET = BITS * (BITS - 1) // 2 + BITS  # 8,256 numbers
SDM_LOCATIONS = BUDGET // (BITS + 1)  # 64: contents and a write count per location
# Bartunov et al. 2020, Table 1: error bits at 16, 32, 48, 64, 96 patterns.
PAPER = {
    "Hopfield, Hebb rule": (0.4, 5.0, 9.8, 13.0, 16.5),
    "Hopfield, Storkey rule": (0.0, 0.9, 6.3, 11.3, 17.1),
    "Hopfield, pseudo-inverse rule": (0.0, 0.0, 0.3, 4.3, 22.5),
    "EBMM": (0.0, 0.0, 0.1, 0.5, 4.2),
}


CORRUPTIONS = ("erased", "random")


def corrupted_queries(
    patterns: torch.Tensor, generator: torch.Generator, corruption: str = "random"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``patterns [B, N, C]`` with ``CORRUPTED`` random bits of each corrupted: (queries, known [B, N, C] bool).

    ``erased``: those bits set to 0; ``random``: each replaced by a fresh random ±1 bit (so about half
    of them end up flipped, salt-and-pepper noise on the chosen bits).
    """
    if corruption not in CORRUPTIONS:
        raise ValueError(f"corruption must be one of {list(CORRUPTIONS)}, actual value: {corruption!r}")
    queries, known = Corrupter("entries", CORRUPTED, generator=generator)(patterns)
    return (torch.where(known, patterns, 0.0) if corruption == "erased" else queries), known


TRAINED = {"dkm": DynamicKanervaMachine, "km": KanervaMachine}
MODEL_SLOTS, MODEL_CODE = 64, 96  # K·C + K(K+1)/2 = 8,224 numbers of memory


class TrainedRecall:
    """A trained DKM or KM as a binary-pattern memory for pattern sets: write them all, then retrieve queries."""

    def __init__(self, model: GenerativeMemory, steps: int) -> None:
        self.model, self.steps, self.state = model, steps, None
        K, C = model.num_slots, model.code_size
        self.state_floats = K * C + K * (K + 1) // 2  # R and the symmetric U

    def write_all(self, patterns: torch.Tensor) -> None:
        """Write ``patterns [B, N, C]`` (±1) into B fresh memories."""
        with torch.no_grad():
            self.state = self.model.write(((patterns + 1) / 2).float())  # bits as {0, 1}

    def retrieve(self, queries: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """Attractor iterations from ``queries [B, N, C]`` (±1, erased bits 0) with the known bits held; ±1 bits."""
        x0 = ((queries + 1) / 2).float()  # bits as {0, 1}, erased bits at ½
        x = x0
        with torch.no_grad():
            for _ in range(self.steps):
                x = torch.where(known, x0, self.model.attractor(self.state, x, 1)[0][-1])
        return torch.where(x > 0.5, 1.0, -1.0).to(queries.dtype)


def trained_model(name: str, args: argparse.Namespace) -> GenerativeMemory:
    """The ``dkm`` or ``km`` of the table: loaded from ``--cache`` when trained with these settings, else trained and saved."""
    settings = {"model": name, "steps": args.train_steps, "seed": args.seed, "slots": MODEL_SLOTS, "code": MODEL_CODE}
    path, meta = Path(args.cache) / f"{name}.safetensors", Path(args.cache) / f"{name}.json"
    if path.is_file() and meta.is_file() and json.loads(meta.read_text()) == settings:
        return load_machine(path).eval()
    torch.manual_seed(args.seed)
    model = TRAINED[name]((BITS,), code_size=MODEL_CODE, num_slots=MODEL_SLOTS, likelihood="bernoulli")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(args.seed + 7)
    model.train()
    for _ in tqdm(range(args.train_steps), desc=f"training the {name} on random pattern sets", disable=args.json):
        count = PATTERN_COUNTS[int(torch.randint(len(PATTERN_COUNTS), (1,), generator=generator))]
        x = torch.randint(0, 2, (16, count, BITS), generator=generator).float()  # 16 sets of N patterns, bits {0, 1}
        optimizer.zero_grad()
        model.loss(x)["loss"].backward()
        optimizer.step()
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    meta.write_text(json.dumps(settings))
    return model


EBMM_WIDTH = BUDGET // (BITS + 1)  # 64 rows of W and 64 biases: 8,256 numbers


class EnergyRecall:
    """A meta-trained EBMM as a binary-pattern memory: write a set (eq. 4), then read the queries (eq. 1)."""

    def __init__(self, memory: EnergyMemory) -> None:
        self.memory, self.theta = memory, None
        self.state_floats = memory.state_floats

    def write_all(self, patterns: torch.Tensor) -> None:
        self.theta = self.memory.write(patterns.float())

    def retrieve(self, queries: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        retrieved = self.memory.read(queries.float(), self.theta, known)
        return binary_patterns(retrieved).to(queries.dtype)


def shared_rows(recall: EnergyRecall, patterns: torch.Tensor, errors: torch.Tensor) -> tuple[float, float, float]:
    """Where an EBMM's errors come from: (fraction of queries read with an error, fraction of those whose pattern
    shares its best-answering row of W with another pattern of its set, the same fraction among the correct ones).

    :param recall: the memories ``patterns [B, N, C]`` were written into; :param errors: error bits of their queries ``[B, N]``.
    """
    W, b = recall.theta
    own = (torch.einsum("bhd,bnd->bnh", W, patterns.float()) + b[:, None]).argmax(-1)  # [B, N]: each pattern's row
    shared = (own[:, :, None] == own[:, None, :]).sum(-1) > 1  # [B, N]
    failed = errors > 0
    fraction = lambda mask: float(shared[mask].float().mean()) if bool(mask.any()) else float("nan")  # noqa: E731
    return float(failed.float().mean()), fraction(failed), fraction(~failed)


def cached_energy_memory(
    memory: EnergyMemory, cache: str, name: str, settings: dict, train: Callable[[EnergyMemory], None]
) -> tuple[EnergyMemory, dict]:
    """``memory`` loaded from ``cache/name.safetensors`` if its ``name.json`` was saved with ``settings``; else
    ``train(memory)`` run, timed and saved with them. Returns the memory (in eval mode) and its saved settings."""
    path, meta = Path(cache) / f"{name}.safetensors", Path(cache) / f"{name}.json"
    if path.is_file() and meta.is_file():
        saved = json.loads(meta.read_text())
        if {k: saved.get(k) for k in settings} == settings:
            memory.load_state_dict(load_file(str(path)))
            return memory.eval(), saved
    started = time.perf_counter()
    train(memory)
    saved = {**settings, "seconds": round(time.perf_counter() - started, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in memory.state_dict().items()}, str(path))
    meta.write_text(json.dumps(saved))
    return memory.eval(), saved


def trained_ebmm(count: int, args: argparse.Namespace) -> tuple[EnergyMemory, dict]:
    """The ``ebmm`` memory of the column of ``count`` patterns, loaded from ``--cache`` or meta-trained and saved;
    with its settings (meta-training steps and seconds)."""
    settings = {"model": "ebmm", "patterns": count, "steps": args.ebmm_steps, "seed": args.seed, "corruption": args.corruption}

    def train(memory: EnergyMemory) -> None:
        torch.manual_seed(args.seed)
        generator = torch.Generator().manual_seed(args.seed + count)
        meta_train(
            memory,
            lambda: (2 * torch.randint(0, 2, (16, count, BITS), generator=generator) - 1).float(),
            lambda x: corrupted_queries(x, generator, args.corruption),
            args.ebmm_steps,
            progress=None if args.json else f"meta-training the ebmm on sets of {count} patterns",
        )

    memory = EnergyMemory(BITS, EBMM_WIDTH, read_steps=5, write_steps=10, write_step_size=2.0)
    return cached_energy_memory(memory, args.cache, f"ebmm-{count}", settings, train)


def recall_errors(
    memory_factory: Callable[[int, int], object], patterns: torch.Tensor, generator: torch.Generator, corruption: str
) -> tuple[torch.Tensor, object]:
    """Write ``patterns [B, N, C]`` into B fresh memories, query each corrupted; (error bits [B, N], the memories)."""
    B, N, _ = patterns.shape
    memory = memory_factory(B, N)
    if isinstance(memory, (TrainedRecall, EnergyRecall)):
        memory.write_all(patterns)
    else:
        for n in range(N):
            memory.write(patterns[:, n])
    queries, known = corrupted_queries(patterns, generator, corruption)
    if isinstance(memory, DenseAssociativeMemory):
        retrieved = binary_patterns(torch.where(known, queries, memory.retrieve(queries)))
    else:
        retrieved = memory.retrieve(queries, known)
    return (retrieved != patterns).sum(-1).to(torch.float64), memory


def models(args: argparse.Namespace) -> dict[str, Callable[[int, int], object]]:
    """Each row's memory, built for a batch of B sets of N patterns: ``factory(B, N)``."""
    dtype = torch.float64
    rows: dict[str, Callable[[int, int], object]] = {
        "hebb": lambda B, N: HopfieldMemory(B, BITS, rule="hebb", update=args.update, seed=args.seed, dtype=dtype),
        "storkey": lambda B, N: HopfieldMemory(B, BITS, rule="storkey", update=args.update, seed=args.seed, dtype=dtype),
        "pseudo-inverse": lambda B, N: HopfieldMemory(
            B, BITS, rule="pseudo-inverse", update=args.update, seed=args.seed, dtype=dtype
        ),
        "sdm": lambda B, N: SparseDistributedMemory(
            B, BITS, num_locations=SDM_LOCATIONS, activation=args.sdm_activation, seed=args.seed, dtype=dtype
        ),
        "store-everything": lambda B, N: DenseAssociativeMemory(B, BITS, beta=args.dense_beta, steps=3, dtype=dtype),
    }
    for name in TRAINED:
        if name in args.models:
            model = trained_model(name, args)
            rows[name] = lambda B, N, model=model: TrainedRecall(model, args.model_steps)
    if "ebmm" in args.models:
        ebmm = {count: trained_ebmm(count, args) for count in PATTERN_COUNTS}
        args.ebmm_training = {count: settings for count, (_, settings) in ebmm.items()}
        rows["ebmm"] = lambda B, N: EnergyRecall(ebmm[N][0])
    return {name: rows[name] for name in args.models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="independent pattern sets per pattern count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--models", nargs="+", default=["hebb", "storkey", "pseudo-inverse", "sdm", "store-everything", "dkm", "km", "ebmm"]
    )
    parser.add_argument("--ebmm-steps", type=int, default=2000, help="meta-training steps of each ebmm column")
    parser.add_argument("--train-steps", type=int, default=2000, help="training steps of the dkm and km rows")
    parser.add_argument("--model-steps", type=int, default=10, help="attractor iterations of the dkm and km retrievals")
    parser.add_argument("--cache", default="runs/binary_recall", help="where the trained dkm, km and ebmm are kept and reused")
    parser.add_argument("--sdm-activation", type=float, default=0.1, help="fraction of the 64 locations a pattern selects")
    parser.add_argument("--dense-beta", type=float, default=0.25, help="inverse temperature of store-everything")
    parser.add_argument(
        "--corruption", choices=CORRUPTIONS, default="random",
        help="what the 64 corrupted bits become: 0 (erased) or fresh random bits (random)",
    )  # fmt: skip
    parser.add_argument(
        "--update", choices=("async", "sync"), default="async", help="the Hopfield rows' dynamics: one unit or all at a time"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object {model: {patterns: error bits}} only")
    args = parser.parse_args()
    torch.set_num_threads(1)

    results: dict[str, dict[str, float]] = {}
    spread: dict[str, dict[str, float]] = {}
    collisions: dict[int, tuple[float, float, float]] = {}
    floats: dict[str, int] = {}
    started = time.perf_counter()
    for name, factory in models(args).items():
        results[name], spread[name] = {}, {}
        for count in PATTERN_COUNTS:
            generator = torch.Generator().manual_seed(args.seed * 1000 + count)  # the same pattern sets for every model
            bits = torch.randint(0, 2, (args.trials, count, BITS), generator=generator)
            patterns = (2 * bits - 1).to(torch.float64)  # [trials, N, C]
            errors, memory = recall_errors(factory, patterns, generator, args.corruption)
            if isinstance(memory, EnergyRecall):
                collisions[count] = shared_rows(memory, patterns, errors)
            per_trial = errors.mean(-1)  # [trials]
            results[name][str(count)] = round(float(per_trial.mean()), 2)
            spread[name][str(count)] = float(per_trial.std() / args.trials**0.5) if args.trials > 1 else 0.0
            floats[name] = max(floats.get(name, 0), memory.state_floats)
    if args.json:
        print(json.dumps(results))
        return

    corrupted = f"{CORRUPTED} bits {args.corruption}"
    print(f"error bits of {BITS}-bit patterns with {corrupted}, mean ± s.e. over {args.trials} pattern sets")
    print(f"(seed {args.seed}, {time.perf_counter() - started:.0f} s); memory budget {BUDGET:,} numbers\n")
    header = "| model | " + " | ".join(str(n) for n in PATTERN_COUNTS) + " | numbers held (most) |"
    print(header)
    print("|" + "---|" * (len(PATTERN_COUNTS) + 2))
    for name in results:
        cells = [f"{results[name][str(n)]:.1f} ± {spread[name][str(n)]:.1f}" for n in PATTERN_COUNTS]
        over = " (over budget)" if floats[name] > BUDGET else ""
        print(f"| {name} | " + " | ".join(cells) + f" | {floats[name]:,}{over} |")
    for name, row in PAPER.items():
        print(f"| paper: {name} | " + " | ".join(f"{v:.1f}" for v in row) + " | 8,256 |")
    if "ebmm" in results:
        training = args.ebmm_training
        print(
            "\nebmm meta-training, per column: "
            + ", ".join(f"{n}: {training[n]['steps']} steps in {training[n].get('seconds', '?')} s" for n in PATTERN_COUNTS)
        )
        print("ebmm queries read with an error; of those, and of the others, the share whose pattern shares its row of W:")
        for n, (failed, among_failed, among_right) in collisions.items():
            shares = f"row shared: {among_failed:.1%} of them, {among_right:.1%} of the others"
            print(f"  {n} patterns: {failed:.1%} with an error; {shares}")


if __name__ == "__main__":
    main()
