"""Memory tasks: PPO without memory vs PPO with the DKM memory wrapper vs RecurrentPPO, same budget and seeds.

For every task, method and seed: train with ``episodic-memory train-agent`` settings (8 envs,
32x32 egocentric frames, the same features extractor for every method), evaluate the success rate
every ``--eval-every`` steps (the learning curve) and at the end, and time the training (evaluations
left out). Prints one row per task and method: final success rate and mean return of the greedy
policy (mean ± std over seeds), the success rate with actions sampled as in training (a policy still
near uniform can loop forever when greedy), environment steps until the greedy success rate first
reaches 0.9 (if it does), and training frames per second; writes ``OUT/results.json`` and the
learning curves ``OUT/learning_curves.png``.

Usage::

    python benchmarks/rl_memory.py                                   # the default run (about 60 min on 2 cores)
    python benchmarks/rl_memory.py --steps 2000000 --seeds 0 1 2     # a budget that can separate the methods
    python benchmarks/rl_memory.py --memory-checkpoint runs/pretrain-dkm/model.safetensors
    python benchmarks/rl_memory.py --jobs 9 --envs MiniGrid-MemoryS7-v0    # one process per run, 9 cores
    python benchmarks/rl_memory.py --plot runs/a runs/b --out runs/both       # learning curves of finished runs

A memory-less policy that grabs either object scores about 0.5 on these tasks; "solved" means
success well above 0.5. The default budget (40k steps a run, 3 seeds, 2 tasks; training speeds on 2
cores: PPO about 370 frames/s, PPO+DKM 320, RecurrentPPO 100) fits the hour but cannot separate the
methods: on MemoryS7 PPO + DKM left chance after 300-530k steps and PPO without memory after about
650k (README). Use ``--steps 1000000`` or more, ideally on a machine with more cores or a GPU.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from episodic_memory.train.train_agent import TrainAgentConfig, evaluate_agent, train_agent

METHODS = {  # name -> (algo, memory, novelty reward coefficient)
    "ppo": ("ppo", "none", 0.0),
    "ppo+dkm": ("ppo", "dkm", 0.0),
    "ppo+dkm+novelty": ("ppo", "dkm", 0.05),  # the episodic exploration bonus on top
    "ppo+km": ("ppo", "km", 0.0),
    "recurrent_ppo": ("recurrent_ppo", "none", 0.0),
}


def steps_to_success(run_dir: Path, threshold: float) -> int | None:
    """The first evaluated step whose success rate reached ``threshold``, from ``metrics.jsonl``."""
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("eval/success_rate", -1.0) >= threshold:
            return int(record["step"])
    return None


def plot_learning_curves(roots: list[Path], path: Path) -> Path:
    """``path`` (PNG): per task, the training return (actions sampled, a rolling mean over 100 episodes)
    against environment steps, one line per run, and the greedy evaluations as dots, one colour per
    method; read from the ``metrics.jsonl`` of every run under ``roots`` (``ROOT/<task>/<method>/seed<N>/``)."""
    runs = sorted(p for root in roots for p in Path(root).glob("*/*/seed*/metrics.jsonl"))
    if not runs:
        raise SystemExit(f"no runs (<task>/<method>/seed<N>/metrics.jsonl) under {', '.join(map(str, roots))}")
    tasks = sorted({p.parts[-4] for p in runs})
    methods = sorted({p.parts[-3] for p in runs})
    colours = {method: f"C{i}" for i, method in enumerate(methods)}
    fig = Figure(figsize=(6.5 * len(tasks), 4.2), layout="constrained")
    for ax, task in zip(fig.subplots(1, len(tasks), squeeze=False)[0], tasks, strict=True):
        labelled: set[str] = set()
        for metrics in (p for p in runs if p.parts[-4] == task):
            method = metrics.parts[-3]
            records = [json.loads(line) for line in metrics.read_text().splitlines()]
            train = [(r["step"], r["rollout/ep_rew_mean"]) for r in records if "rollout/ep_rew_mean" in r]
            greedy = [(r["step"], r["eval/success_rate"]) for r in records if "eval/success_rate" in r]
            first = method not in labelled
            labelled.add(method)
            if train:
                ax.plot(
                    *zip(*train, strict=True), color=colours[method], lw=1, label=f"{method}: training return" if first else None
                )
            if greedy:
                label = f"{method}: greedy success" if first else None
                ax.plot(*zip(*greedy, strict=True), "o", color=colours[method], ms=4, label=label)
        ax.axhline(0.5, color="grey", ls=":", lw=1)
        ax.set(title=task, xlabel="environment steps", ylabel="return / success rate", ylim=(-0.02, 1.02))
        ax.legend(fontsize="x-small")
    fig.savefig(path, dpi=100)
    return path


def run_one(env_id: str, method: str, seed: int, args: argparse.Namespace) -> dict:
    """Train and evaluate one (task, method, seed); returns its row of ``results.json``."""
    torch.set_num_threads(args.threads)
    algo, memory, novelty_reward = METHODS[method]
    run_dir = Path(args.out) / env_id / method / f"seed{seed}"
    config = TrainAgentConfig(
        env_id=env_id,
        algo=algo,
        memory=memory,
        memory_checkpoint=args.memory_checkpoint if memory != "none" else None,
        novelty_reward=novelty_reward,
        frame_size=args.frame_size,
        num_envs=args.num_envs,
        seed=seed,
        device=args.device,
        out=str(run_dir),
        total_steps=args.steps,
        checkpoint_every=args.steps,
        eval_episodes=args.eval_episodes,
        eval_every=args.eval_every or max(args.steps // 10, 1),
        wandb_mode=args.wandb_mode,
    )
    summary = train_agent(config, progress=args.jobs == 1)
    sampled = evaluate_agent(Path(summary["agent"]), args.eval_episodes, seed=seed + 10_000, deterministic=False)
    return {
        "env_id": env_id,
        "method": method,
        "seed": seed,
        "steps": summary["steps"],
        "seconds": summary["train_seconds"],
        "fps": summary["fps"],
        "success_rate": summary["evaluation"]["success_rate"],
        "mean_return": summary["evaluation"]["mean_return"],
        "sampled_success_rate": sampled["success_rate"],
        "steps_to_threshold": steps_to_success(run_dir, args.threshold),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["MiniGrid-MemoryS7-v0", "MiniGrid-MemoryS11-v0"])
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=["ppo", "ppo+dkm", "recurrent_ppo"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40_000, help="environment steps per run")
    parser.add_argument("--memory-checkpoint", default=None, help="pretrained DKM/KM (default: a fresh machine)")
    parser.add_argument("--frame-size", type=int, default=32)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=None, help="steps between evaluations (default: steps / 10)")
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--out", default="runs/rl_memory")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel, one process each (on a machine with the cores)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="device of the policies and memories")
    parser.add_argument("--wandb-mode", default="disabled", choices=["online", "offline", "disabled"])
    parser.add_argument(
        "--plot",
        nargs="+",
        metavar="DIR",
        help="train nothing: draw OUT/learning_curves.png from the runs already in these --out directories",
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.plot:
        print(plot_learning_curves([Path(d) for d in args.plot], out / "learning_curves.png"))
        return

    runs = [(env_id, method, seed) for env_id in args.envs for method in args.methods for seed in args.seeds]
    results: list[dict] = []
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_one, *run, args): run for run in runs}
        for future in tqdm(as_completed(futures), total=len(futures), desc="runs", disable=args.jobs == 1):
            results.append(future.result())
            results.sort(key=lambda r: runs.index((r["env_id"], r["method"], r["seed"])))
            (out / "results.json").write_text(json.dumps(results, indent=2))
    plot_learning_curves([out], out / "learning_curves.png")

    print(f"\n{args.steps:,} steps per run, seeds {args.seeds}, {args.num_envs} envs, {args.frame_size}x{args.frame_size} frames")
    header = (
        f"{'task':<24} {'method':<15} {'success':>13} {'return':>13} {'sampled':>13} "
        f"{'steps to ' + str(args.threshold):>14} {'fps':>7}"
    )
    print(header)
    print("-" * len(header))
    for env_id in args.envs:
        for method in args.methods:
            rows = [r for r in results if r["env_id"] == env_id and r["method"] == method]
            success = np.array([r["success_rate"] for r in rows])
            returns = np.array([r["mean_return"] for r in rows])
            sampled = np.array([r["sampled_success_rate"] for r in rows])
            reached = [r["steps_to_threshold"] for r in rows if r["steps_to_threshold"] is not None]
            to_threshold = f"{int(np.mean(reached)):,} ({len(reached)}/{len(rows)})" if reached else f"— (0/{len(rows)})"
            print(
                f"{env_id:<24} {method:<15} {success.mean():>6.2f} ± {success.std():<4.2f} "
                f"{returns.mean():>6.3f} ± {returns.std():<4.2f} {sampled.mean():>6.2f} ± {sampled.std():<4.2f} "
                f"{to_threshold:>14} {np.mean([r['fps'] for r in rows]):>7.0f}"
            )


if __name__ == "__main__":
    main()
