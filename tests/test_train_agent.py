"""train-agent and evaluate-agent: every algorithm with and without memory, determinism, bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from episodic_memory import DynamicKanervaMachine
from train.cli import main
from train.train_agent import TrainAgentConfig, evaluate_agent, train_agent


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


@pytest.mark.parametrize(("algo", "memory"), [("ppo", "dkm"), ("ppo", "none"), ("a2c", "km"), ("recurrent_ppo", "none")])
def test_trains_saves_checkpoints_and_evaluates(tmp_path, algo, memory):
    summary = train_agent(tiny(tmp_path, algo=algo, memory=memory), progress=False)
    assert summary["steps"] >= 64
    assert (tmp_path / "agent.zip").is_file() and any((tmp_path / "checkpoints").glob("agent_*_steps.zip"))
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["episodes"] == 2 and 0.0 <= report["success_rate"] <= 1.0 and report["memory"] == memory
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any(("memory/novelty" in r) == (memory != "none") for r in logged)


def test_same_seed_same_agent(tmp_path):
    a = train_agent(tiny(tmp_path / "a", eval_episodes=0), progress=False)
    b = train_agent(tiny(tmp_path / "b", eval_episodes=0), progress=False)
    from stable_baselines3 import PPO

    pa = PPO.load(a["agent"], device="cpu").policy.state_dict()
    pb = PPO.load(b["agent"], device="cpu").policy.state_dict()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_pretrained_memory_checkpoint_of_another_frame_size(tmp_path):
    path = DynamicKanervaMachine((32, 32, 3), code_size=8, num_slots=4, hidden_channels=4).save(tmp_path / "m.safetensors")
    with pytest.raises(
        ValueError, match=r"reads frames of shape \(32, 32, 3\), the agent's frames are \(16, 16, 3\); set --frame-size 32"
    ):
        train_agent(tiny(tmp_path / "run", memory_checkpoint=str(path)), progress=False)


def test_evaluate_agent_errors_say_what_to_do(tmp_path, capsys):
    assert main(["evaluate-agent", "--agent", str(tmp_path / "none.zip")]) == 2
    assert "train one with `episodic-memory train-agent" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no agent at"):
        evaluate_agent(tmp_path / "none.zip")


def test_unknown_env_id(tmp_path):
    with pytest.raises(ValueError, match="MiniGrid-NoSuchTask-v0"):
        train_agent(tiny(tmp_path, env_id="MiniGrid-NoSuchTask-v0"), progress=False)
