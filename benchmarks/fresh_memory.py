"""Is a fresh (untrained) machine informative? Novelty ratios and retrieval errors of random DKMs and KMs,
with the old defaults ("before"), ``cls.for_space(env.observation_space)`` ("after": layer-normalised codes) and
that machine calibrated on other episodes' observations ("calibrated": ``machine.calibrate(frames)``, what
``train-agent`` does to every fresh machine).

For every env, seed and machine: a random policy plays one episode (``--episode-steps`` at most); its
first ``--length`` distinct observations are written one at a time into an
:class:`~episodic_memory.wrappers.core.EpisodicMemoryCore` of batch 1, as the wrappers write them (encode,
read out, write). Three of them (``--repeated``) are written three times (two more copies inserted at
random places), the others once. Then, without writing, the memory is probed with

- ``new``: observations of other episodes (other reset seeds) that this episode never showed;
- ``once``: observations written once;
- ``3x``: observations written three times;

and for each the novelty ratio ``n / n⁰`` (novelty under the episode's memory over novelty under the empty
prior memory: the wrappers' exploration bonus with ``novelty_reward=1``) and the retrieval error
``|retrieval − z| / |z|`` (``EpisodicMemoryCore.retrieval_error``, 5 attractor steps) are read.

"before" is the old fresh machine: images ``cls(shape, code_size=100, num_slots=32, likelihood="gaussian",
hidden_channels=16)`` on the frames; vectors ``cls((D,), likelihood="gaussian")`` on the same flat one-hot
encoding the "after" machine reads (``machine.observation_encoding.encode``). Both are seeded with the
same ``torch.manual_seed`` per seed. "calibrated" (``--no-calibrated`` leaves it out) is the "after" machine
after :meth:`~episodic_memory.models.machine.GenerativeMemory.calibrate` on observations of other episodes (never
probed): the outputs of its code (and KM address) networks centred on them, the KM's addresses scaled to a
median norm of 1.
A good memory gives ``new`` near 1, ``once`` and ``3x`` well below it,
and a small retrieval error for ``3x``.

Usage::

    python benchmarks/fresh_memory.py                        # 3 envs x DKM/KM x before/after, 5 seeds (~1-2 min)
    python benchmarks/fresh_memory.py --seeds 0 1 --envs CartPole-v1 --json runs/bench/fresh_memory.json

Prints the machine load, then one row per env, machine and variant: the medians over seeds of the per-seed
median ratios (new, once, 3x), the separation new/3x, the retrieval errors of 3x and of new observations,
the mean code norm |z| and the prior rows' norm |R0 row|; then one sentence per row saying what the numbers
show the fresh machine can and cannot do.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch

from episodic_memory import DynamicKanervaMachine, GenerativeMemory, KanervaMachine
from episodic_memory.envs.gym_envs import make_env
from episodic_memory.envs.mazes import make_frame_env
from episodic_memory.wrappers.core import EpisodicMemoryCore
from episodic_memory.wrappers.env import batch_of_one

DEFAULT_ENVS = ("MiniGrid-MemoryS7-v0", "CartPole-v1", "popgym-ConcentrationEasy-v0")
MACHINES = {"DKM": DynamicKanervaMachine, "KM": KanervaMachine}


def load_note() -> str:
    """The 1/5/15-minute load averages against the cores, printed with every benchmark's output."""
    one, five, fifteen = os.getloadavg()
    return f"machine load {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


def make(env_id: str, frame_size: int) -> gymnasium.Env:
    if env_id.startswith("MiniGrid-"):
        return make_frame_env(env_id, frame_size=frame_size)
    return make_env(env_id, imports=("popgym",) if env_id.startswith("popgym-") else ())


def episode(env: gymnasium.Env, seed: int, steps: int) -> list[Any]:
    """Observations of one random-policy episode (the first one included), at most ``steps + 1``."""
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    observations = [obs]
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        observations.append(obs)
        if terminated or truncated:
            break
    return observations


def distinct(frames: list[np.ndarray], exclude: set[bytes] = frozenset()) -> list[np.ndarray]:
    """The frames in order of first appearance, each once, leaving out those whose bytes are in ``exclude``."""
    seen, out = set(exclude), []
    for frame in frames:
        key = frame.tobytes()
        if key not in seen:
            seen.add(key)
            out.append(frame)
    return out


def build(
    cls: type[GenerativeMemory], variant: str, space: gymnasium.Space, seed: int, calibration: list[np.ndarray]
) -> GenerativeMemory:
    torch.manual_seed(seed)
    after = cls.for_space(space)
    if variant == "after":
        return after.eval()
    if variant == "calibrated":
        after.eval().calibrate(torch.as_tensor(np.stack(calibration)))
        return after
    torch.manual_seed(seed)
    shape = tuple(after.observation_encoding.frame_shape)
    if after.observation_encoding.image:
        return cls(shape, code_size=100, num_slots=32, likelihood="gaussian", hidden_channels=16).eval()
    return cls(shape, likelihood="gaussian").eval()


def probe(machine: GenerativeMemory, written: list[np.ndarray], probes: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """Write ``written`` one frame at a time, then read (no write) every probe: ratios and retrieval errors by class."""
    core = EpisodicMemoryCore(machine, 1, readouts=("retrieval",), attractor_steps=5, novelty_reward=1.0)
    core.reset()
    norms = []
    for frame in written:
        core.step(frame[None])
        norms.append(float(core.last_code.norm()))
    out: dict[str, Any] = {"code_norm": float(np.mean(norms))}
    out.update(similarity(machine, probes))
    for name, frames in probes.items():
        ratios, errors = [], []
        for frame in frames:
            core.step(frame[None], write=False)
            ratios.append(float(core.last_bonus[0]))
            errors.append(core.retrieval_error())
        out[f"ratio_{name}"] = float(np.median(ratios))
        out[f"error_{name}"] = float(np.median(errors))
    return out


def _cosines(v: torch.Tensor) -> torch.Tensor:
    """Cosines between the distinct rows of ``v [N, D]``: ``[N*(N-1)/2]``."""
    v = torch.nn.functional.normalize(v, dim=-1)
    i, j = torch.triu_indices(len(v), len(v), 1)
    return (v[i] * v[j]).sum(-1)


@torch.no_grad()
def similarity(machine: GenerativeMemory, probes: dict[str, list[np.ndarray]]) -> dict[str, float]:
    """How alike the machine makes different observations: median cosine between the codes of the distinct
    written observations, the highest cosine of each new observation's code to a written one (median over
    new probes), and for a machine with learned addresses (KM) the median cosine between their addresses."""
    written = np.stack(probes["once"] + probes["3x"])
    new = np.stack(probes["new"])
    z, w = machine.encode_and_address(torch.as_tensor(np.concatenate([written, new]))[:, None])  # [N, 1, C], [N, 1, K]
    z = z[:, 0]
    zw, zn = torch.nn.functional.normalize(z[: len(written)], dim=-1), torch.nn.functional.normalize(z[len(written) :], dim=-1)
    out = {
        "cos_codes": float(_cosines(z[: len(written)]).median()),
        "cos_new_nearest": float((zn @ zw.T).max(-1).values.median()),
    }
    out["cos_addresses"] = float("nan") if w is None else float(_cosines(w[: len(written), 0]).median())
    return out


def sentence(row: dict[str, Any]) -> str:
    """What the measured numbers say this fresh machine can and cannot do (thresholds stated in the text)."""
    new, once, thrice = row["ratio_new"], row["ratio_once"], row["ratio_3x"]
    err3, errn = row["error_3x"], row["error_new"]
    parts = []
    if new > 0 and thrice / new < 0.5:
        parts.append(f"tells seen from new (3x at {thrice / new:.2f} of new")
        parts[-1] += (
            f", once at {once / new:.2f})" if once / new < 0.8 else f"; but once-written views are at {once / new:.2f}, near new)"
        )
    elif new > 0 and thrice / new < 0.9:
        parts.append(f"weakly tells seen from new (3x at {thrice / new:.2f} of new, once at {once / new:.2f})")
    else:
        parts.append(f"cannot tell seen from new (3x at {thrice / new:.2f} of new)")
    if err3 < 0.3 and errn > 2 * err3:
        parts.append(f"retrieves a repeated code (error {err3:.2f}) and not a new one ({errn:.2f})")
    elif err3 < 0.3:
        parts.append(
            f"retrieval returns repeated and new codes alike (errors {err3:.2f} and {errn:.2f}), so it does not discriminate"
        )
    else:
        parts.append(f"retrieval does not return a repeated code (error {err3:.2f})")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--envs", nargs="+", default=list(DEFAULT_ENVS), help="Gymnasium ids (MiniGrid ids give egocentric frames)"
    )
    parser.add_argument("--machines", nargs="+", default=list(MACHINES), choices=list(MACHINES), help="machine kinds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds: machine init and episode")
    parser.add_argument("--frame-size", type=int, default=32, help="side of the MiniGrid egocentric frames")
    parser.add_argument("--episode-steps", type=int, default=200, help="random-policy steps per episode at most")
    parser.add_argument("--length", type=int, default=24, help="distinct observations written per episode at most")
    parser.add_argument("--repeated", type=int, default=3, help="how many of them are written three times")
    parser.add_argument("--new", type=int, default=8, help="new probe observations (from other episodes)")
    parser.add_argument(
        "--calibrated",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure 'calibrated': the after machine calibrated (machine.calibrate) on observations of other episodes",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--json", default=None, help="also write the per-seed and median results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(load_note())
    start = time.perf_counter()
    rows, per_seed = [], []
    for env_id in args.envs:
        env = make(env_id, args.frame_size)
        encoding = DynamicKanervaMachine.for_space(env.observation_space).observation_encoding

        def frames_of(observations: list[Any]) -> list[np.ndarray]:
            return [encoding.encode(batch_of_one(o), 1)[0] for o in observations]  # noqa: B023

        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        episode_sizes = []
        for seed in args.seeds:
            rng = np.random.default_rng(seed)
            seen = distinct(frames_of(episode(env, seed, args.episode_steps)))[: args.length]
            if len(seen) < args.repeated + 2:
                raise SystemExit(f"{env_id} seed {seed}: only {len(seen)} distinct observations; raise --episode-steps")
            others = []
            for other in range(1, 50):  # other episodes, until enough observations this one never showed
                others += distinct(frames_of(episode(env, 10_000 * (seed + 1) + other, args.episode_steps)))
                new = distinct(others, {f.tobytes() for f in seen})
                if len(new) >= args.new + (32 if args.calibrated else 0):
                    break
            pick = rng.permutation(len(new))
            calibration = [new[i] for i in pick[args.new :]]  # the calibrated variant's calibration set (not probed)
            new = [new[i] for i in pick[: args.new]]
            if args.calibrated and len(calibration) < 8:
                for other in range(50, 100):  # more observations of other episodes, never probed
                    probed = {f.tobytes() for f in seen + new + calibration}
                    calibration += distinct(frames_of(episode(env, 10_000 * (seed + 1) + other, args.episode_steps)), probed)
                    if len(calibration) >= 32:
                        break
            repeated = sorted(rng.choice(len(seen), size=args.repeated, replace=False).tolist())
            written = list(seen)
            for i in repeated:  # two more copies of each repeated observation, at random places
                for _ in range(2):
                    written.insert(int(rng.integers(0, len(written) + 1)), seen[i])
            probes = {"new": new, "once": [f for i, f in enumerate(seen) if i not in repeated], "3x": [seen[i] for i in repeated]}
            episode_sizes.append((len(seen), len(written), len(new), len(calibration)))
            for kind in args.machines:
                for variant in ("before", "after", "calibrated")[: 3 if args.calibrated else 2]:
                    machine = build(MACHINES[kind], variant, env.observation_space, seed, calibration)
                    result = probe(machine, written, probes)
                    result["prior_row_norm"] = float(machine.memory.prior_mean.detach().norm(dim=-1).mean())
                    result.update(env=env_id, machine=kind, variant=variant, seed=seed, likelihood=machine.config["likelihood"])
                    results.setdefault((kind, variant), []).append(result)
                    per_seed.append(result)
        env.close()
        sizes = np.array(episode_sizes)
        print(
            f"{env_id}: {encoding.description['type']} observations -> frames {tuple(encoding.frame_shape)}; per seed "
            f"{sizes[:, 0].min()}-{sizes[:, 0].max()} distinct observations written ({sizes[:, 1].min()}-{sizes[:, 1].max()} "
            f"writes), {sizes[:, 2].min()}-{sizes[:, 2].max()} new probes"
            + (f", {sizes[:, 3].min()}-{sizes[:, 3].max()} calibration observations (calibrated)" if args.calibrated else "")
        )
        for (kind, variant), seeds in results.items():
            row = {"env": env_id, "machine": kind, "variant": variant, "seeds": len(seeds), "likelihood": seeds[0]["likelihood"]}
            for key in (
                "ratio_new",
                "ratio_once",
                "ratio_3x",
                "error_3x",
                "error_new",
                "code_norm",
                "prior_row_norm",
                "cos_codes",
                "cos_new_nearest",
                "cos_addresses",
            ):
                row[key] = float(np.median([s[key] for s in seeds]))
            row["separation"] = row["ratio_3x"] / row["ratio_new"] if row["ratio_new"] > 0 else float("nan")
            row["sentence"] = sentence(row)
            rows.append(row)
    print(f"\nmedians over {len(args.seeds)} seeds (seeds {args.seeds}), {time.perf_counter() - start:.0f} s")
    header = (
        f"{'env':<28} {'machine':<4} {'variant':<10} {'lik.':<9} {'new':>6} {'once':>6} {'3x':>6} {'3x/new':>6} {'err 3x':>6} "
        f"{'err new':>7} {'|z|':>6} {'|R0 row|':>8} {'cos z':>6} {'cos new':>7} {'cos w':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['env']:<28} {r['machine']:<4} {r['variant']:<10} {r['likelihood']:<9} {r['ratio_new']:6.3f} "
            f"{r['ratio_once']:6.3f} {r['ratio_3x']:6.3f} {r['separation']:6.2f} {r['error_3x']:6.3f} {r['error_new']:7.3f} "
            f"{r['code_norm']:6.2f} {r['prior_row_norm']:8.2f} "
            f"{r['cos_codes']:6.3f} {r['cos_new_nearest']:7.3f} {r['cos_addresses']:6.3f}"
        )
    print("\nwhat each fresh machine can and cannot do (from the medians above):")
    for r in rows:
        print(f"  {r['env']} {r['machine']} {r['variant']}: {r['sentence']}")
    print(load_note())
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"args": vars(args), "rows": rows, "per_seed": per_seed}, indent=1))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
