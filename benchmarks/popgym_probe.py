"""Does the memory hold the answer? Linear probes of POPGym's correct action from the memory read-outs.

A policy can only act on what its inputs hold. For the POPGym tasks whose correct action is a
function of the observations so far (``RepeatFirst``, ``RepeatPrevious``, ``CountRecall``,
``Autoencode``), this script runs random-policy episodes through the real
:class:`~episodic_memory.wrappers.EpisodicMemoryWrapper` (a fresh machine, as the suite's memory
agents start with) and fits a multinomial logistic-regression probe of the correct action from each
feature set, tested on held-out episodes:

- ``observation``: the current observation, one-hot (what PPO without memory sees);
- ``retrieval``, ``novelty``, ``memory``: the read-outs (the memory before this observation is written);
- ``memory + observation``, ``all read-outs + observation``: what the memory agent's extractor sees.

The correct action is found by trying every action on a copy of the environment and keeping the one
that is paid (steps where no single action is paid, such as RepeatPrevious's first steps, are not
probed). A probe near the majority rate means the answer is not linearly in those features; a
policy network could still find a nonlinear one, but a linear probe at 1.0 shows the information is
there and easy. ``ConcentrationEasy`` and ``MineSweeperEasy`` are left out: several actions are right
there and which depends on the policy's earlier moves.

Usage::

    python benchmarks/popgym_probe.py                         # fresh DKM, 4 tasks
    python benchmarks/popgym_probe.py --memory km --episodes 800
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces
from tqdm import tqdm

from episodic_memory.agents.builder import AgentConfig, make_machine
from episodic_memory.envs.gym_envs import make_env
from episodic_memory.wrappers import EpisodicMemoryWrapper

TASKS = ("RepeatFirstEasy", "RepeatPreviousEasy", "CountRecallEasy", "AutoencodeEasy")
PROBES_PER_EPISODE = 4


def correct_action(env, action_space: spaces.Discrete) -> int | None:
    """The one action that a copy of ``env`` (unwrapped) pays most for, or None when it is not unique and paid."""
    rewards = []
    for action in range(action_space.n):
        trial = copy.deepcopy(env)
        rewards.append(trial.step(action)[1])
    best = max(rewards)
    return rewards.index(best) if best > 0 and rewards.count(best) == 1 else None


def probe_episode(
    env: EpisodicMemoryWrapper, rng: np.random.Generator, seed: int
) -> tuple[list[int], list[dict[str, np.ndarray]]]:
    """One random-policy episode; returns (correct actions, features) at up to PROBES_PER_EPISODE of its steps."""
    raw_space = env.env.observation_space
    obs, _ = env.reset(seed=seed)
    steps: list[tuple[int, dict[str, np.ndarray]]] = []
    done = False
    while not done:
        answer = correct_action(env.unwrapped, env.action_space)
        if answer is not None:
            current = spaces.flatten(raw_space, obs["observation"]).astype(np.float64)
            readouts = np.concatenate([obs["retrieval"], obs["novelty"], obs["memory"].ravel()])
            steps.append(
                (
                    answer,
                    {
                        "observation": current,
                        "retrieval": obs["retrieval"],
                        "novelty": obs["novelty"],
                        "memory": obs["memory"].ravel(),
                        "memory + observation": np.concatenate([obs["memory"].ravel(), current]),
                        "all read-outs + observation": np.concatenate([readouts, current]),
                    },
                )
            )
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done = terminated or truncated
    chosen = rng.choice(len(steps), size=min(PROBES_PER_EPISODE, len(steps)), replace=False)
    return [steps[i][0] for i in chosen], [steps[i][1] for i in chosen]


def fit_softmax_probe(X: torch.Tensor, y: torch.Tensor, classes: int, weight_decay: float) -> torch.Tensor:
    """Multinomial logistic regression by L-BFGS: weights ``[D + 1, classes]`` (the last row is the bias)."""
    X = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    W = torch.zeros(X.shape[1], classes, dtype=X.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([W], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(X @ W, y) + weight_decay * (W[:-1] ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return W.detach()


def probe_accuracy(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, classes: int) -> float:
    """Test accuracy of the probe whose weight decay does best on the last quarter of the training set."""
    mean, std = X_train.mean(0), X_train.std(0) + 1e-6
    Xtr, Xte = (torch.from_numpy((X - mean) / std) for X in (X_train, X_test))
    ytr, yte = torch.from_numpy(y_train), torch.from_numpy(y_test)

    def accuracy(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float:
        return float(((torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1) @ W).argmax(1) == y).double().mean())

    split = len(ytr) * 3 // 4
    decays = [1e-4, 1e-3, 1e-2, 1e-1]
    scores = [accuracy(fit_softmax_probe(Xtr[:split], ytr[:split], classes, d), Xtr[split:], ytr[split:]) for d in decays]
    return accuracy(fit_softmax_probe(Xtr, ytr, classes, decays[int(np.argmax(scores))]), Xte, yte)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--memory", choices=["dkm", "km"], default="dkm")
    parser.add_argument("--episodes", type=int, default=600, help="episodes per task (a third held out for testing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/popgym_probe.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)

    results = []
    for task in args.tasks:
        config = AgentConfig(env_id=f"popgym-{task}-v0", imports=("popgym",), memory=args.memory, seed=args.seed)
        env = EpisodicMemoryWrapper(make_env(config.env_id, imports=config.imports), make_machine(config, "cpu"))
        env.action_space.seed(args.seed)
        episodes = [
            probe_episode(env, rng, args.seed * 1_000_003 + e) for e in tqdm(range(args.episodes), desc=task, leave=False)
        ]
        env.close()
        test = args.episodes // 3  # whole episodes held out
        labels = [np.array([a for answers, _ in part for a in answers]) for part in (episodes[test:], episodes[:test])]
        row = {"task": task, "machine": args.memory, "episodes": args.episodes, "probed steps": int(sum(map(len, labels)))}
        row["majority"] = float(np.max(np.bincount(labels[1])) / len(labels[1]))
        memories = np.stack([f["memory"] for _, features in episodes for f in features])  # [probes, K * C]
        # How much of the memory differs between probed steps: what a policy reading it raw has to pick up.
        row["memory mean |entry|"] = float(np.abs(memories).mean())
        row["memory std across steps"] = float(memories.std(0).mean())
        for name in episodes[0][1][0]:
            X_train, X_test = (np.stack([f[name] for _, features in part for f in features]).astype(np.float64)
                               for part in (episodes[test:], episodes[:test]))  # fmt: skip
            row[name] = probe_accuracy(X_train, labels[0], X_test, labels[1], env.action_space.n)
        results.append(row)
        print(json.dumps(row), flush=True)

    scale = ("memory mean |entry|", "memory std across steps")
    names = [k for k in results[0] if k not in ("task", "machine", "episodes", "probed steps", "majority", *scale)]
    print(
        f"\ncorrect-action probe, fresh {args.memory.upper()}: test accuracy on held-out episodes "
        f"({args.episodes} episodes per task, {PROBES_PER_EPISODE} steps probed in each)"
    )
    print(f"{'task':<20} {'majority':>9} " + " ".join(f"{n:>14.14}" for n in names))
    for row in results:
        print(f"{row['task']:<20} {row['majority']:>9.2f} " + " ".join(f"{row[n]:>14.2f}" for n in names))
    print("\nthe memory read-out's entries: mean |entry|, and their std across the probed steps (its share)")
    for row in results:
        magnitude, spread = (row[k] for k in scale)
        print(f"{row['task']:<20} {magnitude:.3f}  {spread:.3f} ({spread / magnitude:.1%})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
