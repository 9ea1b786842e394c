"""RL Baselines3 Zoo trains PPO with the memory from a hyperparameter YAML (configs/rl-zoo3-cartpole-memory.yaml).

Every test runs the real ``python -m rl_zoo3.train`` in a temporary directory holding a freshly
written CartPole machine, then reads what the zoo left there: the saved agent, its config, the
Monitor files and the evaluations.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import PPO

from episodic_memory import DynamicKanervaMachine
from episodic_memory.agents.extractors import MemoryFeaturesExtractor

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "rl-zoo3-cartpole-memory.yaml"
MACHINE = "cartpole-dkm.safetensors"  # the path the shipped config names, relative to the working directory
STEPS = 256
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    space = gymnasium.make("CartPole-v1").observation_space
    DynamicKanervaMachine.for_space(space).save(tmp_path / MACHINE)  # a fresh machine for CartPole's 4 floats; K = 32, C = 100
    return tmp_path


def shipped_hyperparams() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())["CartPole-v1"]


def write_config(workdir: Path, hyperparams: dict[str, Any]) -> Path:
    path = workdir / "variant.yaml"
    path.write_text(yaml.safe_dump({"CartPole-v1": hyperparams}))
    return path


def zoo_train(workdir: Path, config: Path, *extra: str) -> tuple[Path, str]:
    """Run ``python -m rl_zoo3.train`` in ``workdir``; return its run directory and output."""
    cmd = [sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "CartPole-v1", "-conf", str(config)]
    cmd += ["-n", str(STEPS), "--seed", "0", "--num-threads", "1", "-f", "logs", *extra]
    result = subprocess.run(cmd, cwd=workdir, env=ENV, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return workdir / "logs" / "ppo" / "CartPole-v1_1", output


def monitor_episodes(run: Path) -> list[dict[str, str]]:
    """Every episode of the Monitor files of a run (one file per environment; the first line is JSON)."""
    rows: list[dict[str, str]] = []
    for path in sorted(run.glob("*.monitor.csv")):
        with path.open() as f:
            next(f)
            rows += list(csv.DictReader(f))
    return rows


def assert_trained_with_the_memory(run: Path) -> PPO:
    model = PPO.load(run / "CartPole-v1.zip", device="cpu")
    space = model.observation_space
    assert {key: sub.shape for key, sub in space.spaces.items()} == {
        "observation": (4,),
        "retrieval": (100,),
        "novelty": (1,),
        "memory": (32, 100),
    }
    assert isinstance(model.policy.features_extractor, MemoryFeaturesExtractor)
    assert model.num_timesteps == STEPS
    return model


def test_the_shipped_config_trains_ppo_with_a_batched_memory(workdir):
    run, output = zoo_train(workdir, CONFIG, "--eval-freq", "128", "--eval-episodes", "2")
    assert_trained_with_the_memory(run)
    saved = yaml.unsafe_load((run / "CartPole-v1" / "config.yml").read_text())  # the zoo saves an OrderedDict
    assert next(iter(dict(saved)["vec_env_wrapper"][0])) == "episodic_memory.wrappers.vec_env.VecEpisodicMemory"
    assert len(list(run.glob("*.monitor.csv"))) == 8 and len(monitor_episodes(run)) > 0  # one Monitor per environment
    evaluations = np.load(run / "evaluations.npz")
    assert evaluations["timesteps"].tolist() == [128, 256]  # the eval environment has the memory too
    assert re.search(r"\|\s+memory/\s+\|", output) and re.search(r"\|\s+novelty\s+\|", output)  # MemoryMetricsCallback


def test_with_a_novelty_reward_the_zoo_still_logs_extrinsic_returns(workdir):
    hyperparams = shipped_hyperparams()
    hyperparams["vec_env_wrapper"][0]["episodic_memory.wrappers.vec_env.VecEpisodicMemory"]["novelty_reward"] = 0.5
    run, output = zoo_train(workdir, write_config(workdir, hyperparams), "--eval-freq", "128", "--eval-episodes", "2")
    bonus = re.search(r"\|\s+novelty_bonus\s+\|\s+([0-9.e+-]+)", output)
    assert bonus is not None and float(bonus.group(1)) > 0.01  # the rewards PPO trained on carried the bonus
    episodes = monitor_episodes(run)
    # CartPole pays 1 a step: an extrinsic return equals the episode's length, a shaped one exceeds it.
    assert len(episodes) > 0 and all(float(e["r"]) == int(e["l"]) for e in episodes)
    evaluations = np.load(run / "evaluations.npz")
    np.testing.assert_array_equal(evaluations["results"], evaluations["ep_lengths"])


@pytest.mark.slow  # about 17 s: two worker processes import torch
def test_one_memory_per_environment_in_subprocess_workers(workdir):
    """``env_wrapper`` builds an EpisodicMemoryWrapper inside each SubprocVecEnv worker from the checkpoint path."""
    hyperparams = shipped_hyperparams()
    kwargs = hyperparams.pop("vec_env_wrapper")[0]["episodic_memory.wrappers.vec_env.VecEpisodicMemory"]
    hyperparams["env_wrapper"] = [{"episodic_memory.wrappers.EpisodicMemoryWrapper": kwargs}]
    del hyperparams["callback"]  # MemoryMetricsCallback reads a VecEpisodicMemory
    hyperparams["n_envs"] = 2
    run, _ = zoo_train(workdir, write_config(workdir, hyperparams), "--vec-env", "subproc")
    assert_trained_with_the_memory(run)
    assert len(list(run.glob("*.monitor.csv"))) == 2 and len(monitor_episodes(run)) > 0
