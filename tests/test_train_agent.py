"""train-agent and evaluate-agent: every algorithm with and without memory, determinism, bad input."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from episodic_memory import DynamicKanervaMachine
from episodic_memory.agents.builder import make_agent_env
from episodic_memory.envs.mazes import make_frame_env
from episodic_memory.train.cli import main
from episodic_memory.train.config import add_config_arguments, config_from_args
from episodic_memory.train.train_agent import TrainAgentConfig, evaluate_agent, run_episodes, train_agent
from episodic_memory.vec_env import VecEpisodicMemory


def tiny(out, **changes) -> TrainAgentConfig:
    config = TrainAgentConfig(
        out=str(out),
        total_steps=64,
        num_envs=2,
        n_steps=16,
        batch_size=16,
        frame_size=16,
        code_size=12,
        num_slots=6,
        checkpoint_every=32,
        eval_episodes=2,
        wandb_mode="disabled",
        device="cpu",
    )
    return replace(config, **changes)


@pytest.mark.parametrize(
    ("algo", "memory", "novelty_reward"),
    [("ppo", "dkm", 0.0), ("ppo", "none", 0.0), ("a2c", "km", 0.5), ("recurrent_ppo", "none", 0.0)],
)
def test_trains_saves_checkpoints_and_evaluates(tmp_path, algo, memory, novelty_reward):
    summary = train_agent(tiny(tmp_path, algo=algo, memory=memory, novelty_reward=novelty_reward), progress=False)
    assert summary["steps"] >= 64
    assert (tmp_path / "agent.zip").is_file() and any((tmp_path / "checkpoints").glob("agent_*_steps.zip"))
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["episodes"] == 2 and 0.0 <= report["success_rate"] <= 1.0 and report["memory"] == memory
    assert 0.0 <= report["mean_return"] <= 1.0  # MiniGrid's extrinsic return, without the bonus
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any(("memory/novelty" in r) == (memory != "none") for r in logged)
    assert any("memory/novelty_bonus" in r for r in logged) == (novelty_reward > 0)


def test_sampled_evaluation_is_seeded_and_kept_apart_from_the_greedy_one(tmp_path):
    train_agent(tiny(tmp_path, env_id="MiniGrid-Empty-5x5-v0", memory="none", eval_episodes=4), progress=False)
    greedy = (tmp_path / "evaluation.json").read_bytes()
    assert json.loads(greedy)["policy"] == "greedy"
    runs = [evaluate_agent(tmp_path / "agent.zip", episodes=8, seed=seed, deterministic=False) for seed in (3, 3, 4)]
    assert runs[0] == runs[1] and runs[0]["policy"] == "sampled"  # the same seed samples the same actions
    assert runs[0]["mean_return"] != runs[2]["mean_return"]  # another seed, other walks (returns pay for speed)
    assert json.loads((tmp_path / "evaluation-sampled.json").read_text()) == runs[2]
    assert (tmp_path / "evaluation.json").read_bytes() == greedy  # the greedy report is not overwritten


def test_same_seed_same_agent(tmp_path):
    a = train_agent(tiny(tmp_path / "a", eval_episodes=0), progress=False)
    b = train_agent(tiny(tmp_path / "b", eval_episodes=0), progress=False)
    from stable_baselines3 import PPO

    pa = PPO.load(a["agent"], device="cpu").policy.state_dict()
    pb = PPO.load(b["agent"], device="cpu").policy.state_dict()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_pretrained_memory_checkpoint_of_another_frame_size_resizes_the_frames(tmp_path):
    torch.manual_seed(0)
    path = DynamicKanervaMachine((32, 32, 3), code_size=8, num_slots=4, hidden_channels=4).save(tmp_path / "m.safetensors")
    venv = make_agent_env(tiny(tmp_path / "run", memory_checkpoint=str(path)))
    obs = venv.reset()
    assert obs["observation"].shape == (2, 16, 16, 3) and obs["retrieval"].shape == (2, 8)  # 16 x 16 frames, a 32 x 32 memory
    venv.close()


def test_pretrained_memory_checkpoint_that_cannot_read_rgb_frames(tmp_path):
    path = DynamicKanervaMachine((32, 32, 1), code_size=8, num_slots=4, hidden_channels=4).save(tmp_path / "m.safetensors")
    with pytest.raises(
        ValueError,
        match=r"reads frames of shape \(32, 32, 1\), it cannot read the agent's frames of shape \(16, 16, 3\): .*have 3 channels",
    ):
        train_agent(tiny(tmp_path / "run", memory_checkpoint=str(path)), progress=False)


def test_novelty_reward_flag_and_its_need_for_a_memory(tmp_path):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, TrainAgentConfig)
    assert config_from_args(TrainAgentConfig, parser.parse_args(["--novelty-reward", "0.01"])).novelty_reward == 0.01
    assert TrainAgentConfig().novelty_reward == 0.0
    with pytest.raises(ValueError, match=r"novelty_reward=0.01 needs an episodic memory, but memory='none'"):
        train_agent(tiny(tmp_path, memory="none", novelty_reward=0.01), progress=False)


class RouteToTheGoal:
    """A scripted agent for MiniGrid-Empty-5x5: two cells east, turn south, two cells (the goal, reward 0.955)."""

    route = (2, 2, 1, 2, 2)

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        steps = np.zeros(len(episode_start), dtype=int) if state is None else state
        steps = np.where(episode_start, 0, steps)
        return np.array([self.route[t % len(self.route)] for t in steps]), steps + 1


def test_evaluation_reports_the_extrinsic_return_of_agents_trained_with_a_bonus():
    torch.manual_seed(0)
    machine = DynamicKanervaMachine((16, 16, 3), code_size=8, num_slots=4, likelihood="gaussian", hidden_channels=4).eval()

    def venv(novelty_reward: float) -> VecEpisodicMemory:
        envs = DummyVecEnv([lambda: make_frame_env("MiniGrid-Empty-5x5-v0", frame_size=16) for _ in range(2)])
        return VecEpisodicMemory(envs, machine, novelty_reward=novelty_reward)

    returns, successes = run_episodes(RouteToTheGoal(), venv(1.0), episodes=4)
    assert returns == [pytest.approx(1 - 0.9 * 5 / 100)] * 4 and successes == [1.0] * 4
    shaped = venv(1.0)  # what the agent was rewarded: the same walk, plus about 1 per new view
    shaped.reset()
    total = sum(float(shaped.step(np.array(RouteToTheGoal.route[t : t + 1] * 2))[1][0]) for t in range(5))
    assert total > returns[0] + 1.0


def test_evaluate_agent_errors_say_what_to_do(tmp_path, capsys):
    assert main(["evaluate-agent", "--agent", str(tmp_path / "none.zip")]) == 2
    assert "train one with `episodic-memory train-agent" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no agent at"):
        evaluate_agent(tmp_path / "none.zip")


def test_unknown_env_id(tmp_path):
    with pytest.raises(ValueError, match="MiniGrid-NoSuchTask-v0"):
        train_agent(tiny(tmp_path, env_id="MiniGrid-NoSuchTask-v0"), progress=False)


def test_monitored_episode_returns_are_extrinsic(tmp_path):
    """The agent envs' VecMonitor sits inside the memory wrapper: SB3's ``rollout/ep_rew_mean`` leaves the bonus out."""
    venv = make_agent_env(tiny(tmp_path, env_id="MiniGrid-Empty-5x5-v0", novelty_reward=0.5))
    venv.reset()
    rng = np.random.default_rng(0)
    shaped, extrinsic = np.zeros(2), np.zeros(2)
    episodes = []
    while len(episodes) < 4:
        _, rewards, dones, infos = venv.step(rng.integers(0, 3, size=2))
        shaped += rewards
        extrinsic += [info["episodic_memory"]["extrinsic_reward"] for info in infos]
        for i in np.flatnonzero(dones):
            episodes.append((infos[i]["episode"]["r"], extrinsic[i], shaped[i]))
            shaped[i] = extrinsic[i] = 0.0
    for monitored, extrinsic_return, shaped_return in episodes:
        assert monitored == pytest.approx(extrinsic_return, abs=1e-6)
        assert shaped_return > extrinsic_return  # the agent was paid the bonus; the monitor did not count it
