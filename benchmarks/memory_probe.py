"""What do the memory read-outs know about the cue? Linear probes on MiniGrid Memory tasks.

On ``MiniGrid-MemoryS{7,11}-v0`` the agent starts in a hallway facing away from a small room that
holds the cue (a key or a ball); at the hallway's end it must walk to the object that matches the
cue. A memory helps only if, at the junction, its read-outs still tell key from ball. This script
walks a scripted route (turn round, walk into the cue room, turn round, walk to the junction)
through the real :class:`~episodic_memory.wrappers.EpisodicMemoryWrapper`, and fits an L2-regularised
logistic-regression probe of the cue's type on held-out episodes, for each feature set:

- ``junction frame`` / ``junction code``: the current frame's pixels / code ``e(x)`` (chance: both
  objects are in view, so the frame alone cannot say which one was the cue);
- ``retrieval``, ``novelty``, ``memory``: the wrapper's read-outs at the junction (before the
  junction frame is written);
- ``memory + junction code``: what the agent's features extractor sees together;
- ``cue frame`` / ``cue code`` (oracles): the pixels / code of the frame that shows the cue, an
  upper bound on what the frames and the encoder keep.

It also measures how often a uniformly random policy (an untrained agent) ever has the cue in view,
and before it first reaches the junction: the read-outs cannot hold a cue the agent never looked at.

Usage::

    python benchmarks/memory_probe.py                                             # fresh DKM
    python benchmarks/memory_probe.py --machine runs/pretrain-dkm/model.safetensors --machine fresh
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium
import numpy as np
import torch
from minigrid.core.actions import Actions
from tqdm import tqdm

from episodic_memory import GenerativeMemory
from episodic_memory.agents.builder import AgentConfig, make_machine
from episodic_memory.envs.mazes import make_frame_env
from episodic_memory.wrappers import EpisodicMemoryWrapper

TURN_ROUND = [Actions.left, Actions.left]


def scripted_episode(env: EpisodicMemoryWrapper, machine: GenerativeMemory, seed: int) -> tuple[int, dict[str, np.ndarray]]:
    """One episode along the scripted route; returns (cue is a key, features at the junction)."""
    obs, _ = env.reset(seed=seed)
    grid = env.unwrapped
    mid = grid.height // 2
    hallway_end = grid.width - 3
    cue_is_key = int(grid.grid.get(1, mid - 1).type == "key")

    for action in TURN_ROUND:
        obs, *_ = env.step(action)
    while grid.agent_pos[0] > 2:  # into the cue room, facing west: the cue is in view
        obs, *_ = env.step(Actions.forward)
    cue_frame = obs["observation"]
    for action in TURN_ROUND:
        obs, *_ = env.step(action)
    while grid.agent_pos[0] < hallway_end:  # to the junction, facing east: both objects in view
        obs, *_ = env.step(Actions.forward)

    with torch.inference_mode():
        codes = machine.encode(torch.from_numpy(np.stack([cue_frame, obs["observation"]]))[None].to(machine.device))[0]
    features = {
        "junction frame": obs["observation"].ravel() / 255.0,
        "junction code": codes[1].cpu().numpy(),
        "retrieval": obs["retrieval"],
        "novelty": obs["novelty"],
        "memory": obs["memory"].ravel(),
        "memory + junction code": np.concatenate([obs["memory"].ravel(), codes[1].cpu().numpy()]),
        "cue frame (oracle)": cue_frame.ravel() / 255.0,
        "cue code (oracle)": codes[0].cpu().numpy(),
    }
    return cue_is_key, features


def random_policy_sees_the_cue(env_id: str, episodes: int, seed: int) -> dict[str, float]:
    """How often uniformly random turns and steps ever bring the cue into view, and succeed.

    The read-outs can only hold the cue if the agent looked at it: this is what an untrained
    agent (a policy near uniform) experiences at the start of training.
    """
    env = gymnasium.make(env_id)
    rng = np.random.default_rng(seed)
    seen, seen_before_junction, successes = [], [], []
    for episode in range(episodes):
        env.reset(seed=seed * 1_000_003 + episode)
        grid = env.unwrapped
        mid, hallway_end = grid.height // 2, grid.width - 3
        cue_seen = grid.agent_sees(1, mid - 1)
        before_junction = None
        done, reward = False, 0.0
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(3)))  # left, right, forward
            done = terminated or truncated
            cue_seen = cue_seen or grid.agent_sees(1, mid - 1)
            if before_junction is None and grid.agent_pos[0] > hallway_end:
                before_junction = cue_seen
        seen.append(cue_seen)
        if before_junction is not None:
            seen_before_junction.append(before_junction)
        successes.append(reward > 0)
    env.close()
    return {
        "cue seen": float(np.mean(seen)),
        "junction reached": len(seen_before_junction) / episodes,
        "cue seen before the junction": float(np.mean(seen_before_junction)) if seen_before_junction else float("nan"),
        "success": float(np.mean(successes)),
    }


def fit_probe(X: np.ndarray, y: np.ndarray, weight_decay: float, steps: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression by L-BFGS on standardised features: ``(weights [D], bias [])``."""
    X_t, y_t = torch.from_numpy(X).double(), torch.from_numpy(y).double()
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(X_t @ w + b, y_t) + weight_decay * (w**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), b.detach()


def accuracy(X: np.ndarray, y: np.ndarray, probe: tuple[torch.Tensor, torch.Tensor]) -> float:
    w, b = probe
    return float(((torch.from_numpy(X).double() @ w + b > 0).numpy() == y.astype(bool)).mean())


def probe_accuracy(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of the probe whose weight decay does best on a validation quarter of the training set."""
    mean, std = X_train.mean(0), X_train.std(0) + 1e-6
    X_train, X_test = (X_train - mean) / std, (X_test - mean) / std
    split = len(y_train) * 3 // 4
    decays = [1e-4, 1e-3, 1e-2, 1e-1]
    scores = [accuracy(X_train[split:], y_train[split:], fit_probe(X_train[:split], y_train[:split], d)) for d in decays]
    best = decays[int(np.argmax(scores))]
    return accuracy(X_test, y_test, fit_probe(X_train, y_train, best))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["MiniGrid-MemoryS7-v0", "MiniGrid-MemoryS11-v0"])
    parser.add_argument(
        "--machine", action="append", default=None, help="checkpoint path, or 'fresh' for an untrained DKM (repeatable)"
    )
    parser.add_argument("--episodes", type=int, default=600, help="episodes per task (a third held out for testing)")
    parser.add_argument("--frame-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/memory_probe.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    machines = args.machine or ["fresh"]

    results = []
    for spec in machines:
        torch.manual_seed(args.seed)
        config = AgentConfig(memory="dkm", memory_checkpoint=None if spec == "fresh" else spec, frame_size=args.frame_size)
        machine = make_machine(config, "cpu")
        for env_id in args.envs:
            env = EpisodicMemoryWrapper(make_frame_env(env_id, frame_size=args.frame_size), machine)
            labels, rows = [], []
            for episode in tqdm(range(args.episodes), desc=f"{Path(spec).parent.name or spec} {env_id}", leave=False):
                label, features = scripted_episode(env, machine, args.seed * 1_000_003 + episode)
                labels.append(label)
                rows.append(features)
            env.close()
            y = np.array(labels)
            test = len(y) // 3
            row = {
                "machine": spec,
                "env_id": env_id,
                "episodes": len(y),
                "majority": float(max(y[:test].mean(), 1 - y[:test].mean())),
            }
            for name in rows[0]:
                X = np.stack([r[name] for r in rows]).astype(np.float64)
                row[name] = probe_accuracy(X[test:], y[test:], X[:test], y[:test])
            row["random policy"] = random_policy_sees_the_cue(env_id, args.episodes, args.seed)
            results.append(row)

    names = [k for k in results[0] if k not in ("machine", "env_id", "episodes", "majority", "random policy")]
    print(f"\ncue-type probe: test accuracy on held-out episodes (chance = majority rate); {args.episodes} episodes per task")
    for row in results:
        print(f"\n{row['machine']}  {row['env_id']}  (majority {row['majority']:.2f})")
        for name in names:
            print(f"  {name:<24} {row[name]:.2f}")
        walk = row["random policy"]
        print(
            f"  random policy: cue in view in {walk['cue seen']:.0%} of episodes; {walk['junction reached']:.0%} reach the "
            f"junction, {walk['cue seen before the junction']:.0%} of those after seeing the cue; success {walk['success']:.0%}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
