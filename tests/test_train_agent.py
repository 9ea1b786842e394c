"""train-agent and evaluate-agent: every algorithm with and without memory, determinism, bad input."""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, unwrap_vec_wrapper

from episodic_memory import DynamicKanervaMachine
from episodic_memory.agents.builder import ALGORITHMS, make_agent_env
from episodic_memory.envs.mazes import make_frame_env
from episodic_memory.train.cli import main
from episodic_memory.train.config import add_config_arguments, config_from_args
from episodic_memory.train.train_agent import (
    TrainAgentConfig,
    evaluate_agent,
    latest_agent_checkpoint,
    load_agent_config,
    make_evaluation_env,
    run_episodes,
    train_agent,
)
from episodic_memory.wrappers.vec_env import VecEpisodicMemory


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
    assert (tmp_path / "agent.zip").is_file() and (tmp_path / "checkpoints" / "step-000000064" / "agent.zip").is_file()
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


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_same_seed_same_agent(tmp_path, algo):
    changes = {"algo": algo, "eval_episodes": 0, "learning_starts": 16, "train_freq": 2}
    a = train_agent(tiny(tmp_path / "a", **changes), progress=False)
    b = train_agent(tiny(tmp_path / "b", **changes), progress=False)
    pa = ALGORITHMS[algo].load(a["agent"], device="cpu").policy.state_dict()
    pb = ALGORITHMS[algo].load(b["agent"], device="cpu").policy.state_dict()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    c = train_agent(tiny(tmp_path / "c", **changes, seed=1), progress=False)
    pc = ALGORITHMS[algo].load(c["agent"], device="cpu").policy.state_dict()
    assert not all(torch.equal(pa[k], pc[k]) for k in pa)  # the seed matters: the check above could fail


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


# ------------------------------------------------------------------------------------------------
# The agent's machine, devices, paths
# ------------------------------------------------------------------------------------------------
def machine_weights(venv) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unwrap_vec_wrapper(venv, VecEpisodicMemory).core.machine.state_dict().items()}


class TrainingMachine(BaseCallback):
    """Records the weights of the training environments' machine when training starts."""

    def _on_training_start(self) -> None:
        self.weights = machine_weights(self.training_env)

    def _on_step(self) -> bool:
        return True


def test_a_fresh_memory_agent_is_evaluated_with_the_machine_it_was_trained_with(tmp_path):
    recorder = TrainingMachine()
    run = tmp_path / "run"
    train_agent(tiny(run, eval_every=32, eval_every_episodes=1), progress=False, callbacks=[recorder])
    assert (run / "machine.safetensors").is_file()
    for seed in (10_000, 20_000, 3):  # the final evaluation's, the periodic one's, any evaluate-agent --seed
        venv = make_evaluation_env(run, load_agent_config(run / "agent.zip", seed), seed)
        weights = machine_weights(venv)
        venv.close()
        assert weights.keys() == recorder.weights.keys()
        assert all(torch.equal(weights[k], recorder.weights[k]) for k in weights), seed
    final = json.loads((run / "evaluation.json").read_text())
    moved = shutil.move(run, tmp_path / "moved")  # the run directory is self-contained
    assert evaluate_agent(moved / "agent.zip", episodes=2, seed=10_000) == final


def test_a_pretrained_memory_is_saved_beside_the_agent(tmp_path):
    torch.manual_seed(0)
    pretrained = DynamicKanervaMachine((16, 16, 3), code_size=8, num_slots=4, hidden_channels=4)
    path = pretrained.save(tmp_path / "m.safetensors")
    train_agent(tiny(tmp_path / "run", memory_checkpoint=str(path)), progress=False)
    saved = DynamicKanervaMachine.load(tmp_path / "run" / "machine.safetensors").state_dict()
    assert all(torch.equal(saved[k], v) for k, v in pretrained.state_dict().items())
    path.unlink()  # the agent's directory no longer needs the pretraining run
    assert evaluate_agent(tmp_path / "run" / "agent.zip", episodes=2)["episodes"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="--device cuda: no CUDA device is available; use --device cpu or auto"):
        train_agent(tiny(tmp_path / "run", device="cuda", memory="none"), progress=False)
    assert not (tmp_path / "run").exists()


def test_the_resolved_device_is_recorded(tmp_path):
    summary = train_agent(tiny(tmp_path, device="auto", memory="none", eval_episodes=0), progress=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert summary["device"] == expected
    assert json.loads((tmp_path / "agent_config.json").read_text())["device"] == expected


def test_agent_config_holds_absolute_paths_and_evaluates_from_another_directory(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    DynamicKanervaMachine((16, 16, 3), code_size=8, num_slots=4, hidden_channels=4).save("m.safetensors")
    train_agent(tiny("run", memory_checkpoint="m.safetensors", eval_episodes=0), progress=False)
    saved = json.loads((tmp_path / "a" / "run" / "agent_config.json").read_text())
    assert saved["out"] == str(tmp_path / "a" / "run") and saved["memory_checkpoint"] == str(tmp_path / "a" / "m.safetensors")
    monkeypatch.chdir(tmp_path / "b")
    assert main(["evaluate-agent", "--agent", str(tmp_path / "a" / "run" / "agent.zip"), "--episodes", "2", "--out", "r"]) == 0
    assert json.loads((tmp_path / "b" / "r" / "evaluation.json").read_text())["episodes"] == 2
    assert not (tmp_path / "a" / "run" / "evaluation.json").exists()  # --out, not beside the agent


def test_evaluate_agent_takes_a_config_file(tmp_path, capsys):
    train_agent(tiny(tmp_path / "run", env_id="MiniGrid-Empty-5x5-v0", memory="none", eval_episodes=0), progress=False)
    options = tmp_path / "evaluate.yaml"
    agent = tmp_path / "run" / "agent.zip"
    options.write_text(f"agent: {agent}\nepisodes: 3\nstochastic: true\nseed: 5\nout: {tmp_path / 'r'}\n")
    assert main(["evaluate-agent", "--config", str(options)]) == 0
    report = json.loads((tmp_path / "r" / "evaluation-sampled.json").read_text())
    assert report["episodes"] == 3 and report["policy"] == "sampled"
    assert json.loads(capsys.readouterr().out) == report


# ------------------------------------------------------------------------------------------------
# Off-policy agents
# ------------------------------------------------------------------------------------------------
def off_policy(out, algo: str, **changes) -> TrainAgentConfig:
    """A few hundred steps: 50 transitions before the first update, then one update every 4 steps of the 2 envs.

    Empty-5x5 episodes end within 100 steps, and SB3 logs off-policy training at the end of episodes.
    """
    options = {"env_id": "MiniGrid-Empty-5x5-v0", "total_steps": 300, "learning_starts": 50, "target_update_interval": 100}
    return tiny(out, algo=algo, buffer_size=1_000, **{**options, **changes})


@pytest.mark.parametrize("algo", ["dqn", "qrdqn"])
@pytest.mark.parametrize("memory", ["dkm", "none"])
def test_off_policy_agents_train_with_and_without_memory(tmp_path, algo, memory):
    summary = train_agent(off_policy(tmp_path, algo, memory=memory), progress=False)
    assert summary["steps"] >= 300
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("train/n_updates", 0) for r in logged) > 0  # the replay buffer was sampled and learned from
    assert any("memory/novelty" in r for r in logged) == (memory != "none")
    report = evaluate_agent(tmp_path / "agent.zip", episodes=2)
    assert report["algo"] == algo and report["episodes"] == 2


class ReplayBufferBytes(BaseCallback):
    """Records the nbytes of the arrays of the model's replay buffer and its observation keys."""

    def _on_training_start(self) -> None:
        buffer = self.model.replay_buffer
        arrays = [*buffer.observations.values(), *buffer.next_observations.values()]
        self.nbytes = sum(a.nbytes for a in [*arrays, buffer.actions, buffer.rewards, buffer.dones, buffer.timeouts])
        self.keys = sorted(buffer.observations)
        self.dtypes = {k: v.dtype for k, v in buffer.observations.items()}

    def _on_step(self) -> bool:
        return True


@pytest.mark.parametrize("replay_readouts", ["full", "float16", "no-memory"])
def test_the_printed_replay_buffer_size_is_the_allocated_one(tmp_path, capsys, replay_readouts):
    recorder = ReplayBufferBytes()
    config = off_policy(tmp_path, "dqn", replay_readouts=replay_readouts, total_steps=60, eval_episodes=0)
    train_agent(config, progress=False, callbacks=[recorder])
    printed = re.search(
        r"replay buffer \((\S+) read-outs\): ([\d,]+) bytes per transition, ([\d,]+) bytes", capsys.readouterr().out
    )
    assert printed is not None and printed[1] == replay_readouts
    per_transition, total = (int(printed[i].replace(",", "")) for i in (2, 3))
    assert total == recorder.nbytes and total == 1_000 * per_transition
    assert ("memory" in recorder.keys) == (replay_readouts != "no-memory")
    assert (recorder.dtypes["retrieval"] == np.float16) == (replay_readouts == "float16")
    saved = json.loads((tmp_path / "agent_config.json").read_text())
    assert ("memory" in saved["readouts"]) == (replay_readouts != "no-memory")  # evaluation rebuilds the same observation
    assert evaluate_agent(tmp_path / "agent.zip", episodes=1)["episodes"] == 1


@pytest.mark.parametrize("replay_readouts", ["float16", "no-memory"])
def test_replay_readouts_need_an_off_policy_algorithm(tmp_path, replay_readouts):
    with pytest.raises(
        ValueError, match=f"replay_readouts='{replay_readouts}' shapes a replay buffer, but --algo ppo keeps none"
    ):
        train_agent(tiny(tmp_path / "run", replay_readouts=replay_readouts), progress=False)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------
# Interruption and resumption
# ------------------------------------------------------------------------------------------------
def cli_options(config: TrainAgentConfig) -> list[str]:
    """The train-agent flags of ``config``'s fields that differ from the defaults."""
    defaults = TrainAgentConfig()
    flags = []
    for name, value in vars(config).items():
        if value != getattr(defaults, name):
            flags += [f"--{name.replace('_', '-')}", *(map(str, value) if isinstance(value, tuple) else [str(value)])]
    return flags


class ResumePoint(BaseCallback):
    """Records the step count, SB3's total and progress, the policy's weights and the replay buffer's size when training
    starts, and the progress remaining at each rollout start."""

    def _on_training_start(self) -> None:
        self.steps, self.total = self.model.num_timesteps, self.model._total_timesteps
        self.weights = {k: v.detach().clone() for k, v in self.model.policy.state_dict().items()}
        self.buffer_size = self.model.replay_buffer.size() if hasattr(self.model, "replay_buffer") else None
        self.progress: list[tuple[int, float]] = []

    def _on_rollout_start(self) -> None:
        self.progress.append((self.model.num_timesteps, self.model._current_progress_remaining))

    def _on_step(self) -> bool:
        return True


def csv_rows(path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_sigint_writes_a_checkpoint_and_resume_continues_it(tmp_path):
    out = tmp_path / "run"
    config = tiny(out, total_steps=1_000_000, eval_episodes=0)  # far more than the test runs: SIGINT ends it
    command = [sys.executable, "-m", "episodic_memory.train.cli", "train-agent", *cli_options(config)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    deadline = time.monotonic() + 120
    while latest_agent_checkpoint(out) is None and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 130, output
    summary = json.loads(output[output.index("{") :])
    assert summary["interrupted"] and summary["agent"] is None and not (out / "agent.zip").exists()
    checkpoint = latest_agent_checkpoint(out)
    assert str(checkpoint) == summary["checkpoint"]
    saved_step = json.loads((checkpoint / "trainer.json").read_text())["step"]
    assert saved_step == summary["steps"] and saved_step % 32 == 0  # whole rollouts of 2 envs x 16 steps: what was learnt from
    assert {p.name for p in checkpoint.iterdir()} == {"agent.zip", "agent_config.json", "machine.safetensors", "trainer.json"}
    progress_before = csv_rows(out / "progress.csv")
    metrics_before = (out / "metrics.jsonl").read_text()
    assert progress_before and metrics_before

    total = saved_step + 64
    resumed = ResumePoint()
    summary = train_agent(replace(config, total_steps=total), progress=False, callbacks=[resumed], resume=True)
    from stable_baselines3 import PPO

    saved_weights = PPO.load(checkpoint / "agent.zip", device="cpu").policy.state_dict()
    assert resumed.steps == saved_step and resumed.total == total  # SB3's progress runs from the checkpoint to --total-steps
    assert all(torch.equal(resumed.weights[k], saved_weights[k]) for k in saved_weights)
    assert resumed.progress[1] == (saved_step + 32, pytest.approx(1 - (saved_step + 32) / total))
    assert summary["steps"] == total and summary["resumed_from"] == saved_step and not summary["interrupted"]
    assert latest_agent_checkpoint(out).name == f"step-{total:09d}" and (out / "agent.zip").is_file()
    progress_after = csv_rows(out / "progress.csv")
    assert [{k: row[k] for k in progress_before[0]} for row in progress_after[: len(progress_before)]] == progress_before
    assert int(progress_after[-1]["time/total_timesteps"]) == total
    metrics_after = (out / "metrics.jsonl").read_text()
    assert metrics_after.startswith(metrics_before) and json.loads(metrics_after.splitlines()[-1])["step"] == total


def test_an_off_policy_run_resumes_with_its_replay_buffer(tmp_path):
    config = off_policy(tmp_path, "dqn", total_steps=120, eval_episodes=0)
    train_agent(config, progress=False)
    checkpoint = latest_agent_checkpoint(tmp_path)
    assert checkpoint.name == "step-000000120" and (checkpoint / "replay_buffer.pkl").is_file()
    resumed = ResumePoint()
    summary = train_agent(replace(config, total_steps=200), progress=False, callbacks=[resumed], resume=True)
    assert resumed.steps == 120 and resumed.total == 200 and resumed.buffer_size == 60  # 120 transitions in rows of 2 envs
    assert summary["steps"] == 200
    assert [p.parent.name for p in (tmp_path / "checkpoints").glob("step-*/replay_buffer.pkl")] == ["step-000000200"]


def test_resume_refuses_another_experiment_and_afresh_refuses_a_run_with_checkpoints(tmp_path, capsys):
    config = tiny(tmp_path, memory="none", eval_episodes=0)
    train_agent(config, progress=False)
    with pytest.raises(
        ValueError, match=r"already holds checkpoints: pass --resume to continue that run, or choose another --out"
    ):
        train_agent(config, progress=False)
    with pytest.raises(
        ValueError,
        match=r"cannot resume .*step-000000064' with a different experiment "
        r"\(n_steps: 16 -> 8, learning_rate: 0.0003 -> 0.001\); only \['checkpoint_every', 'device', .*\] may change",
    ):
        train_agent(replace(config, learning_rate=1e-3, n_steps=8, total_steps=128), progress=False, resume=True)
    code = main(["train-agent", *cli_options(replace(config, out=str(tmp_path / "elsewhere"))), "--resume"])
    assert code == 2 and "--resume: no checkpoint in" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()


def test_a_resumed_run_is_the_same_from_the_same_checkpoint_and_resumes_its_wandb_run(tmp_path):
    config = tiny(tmp_path / "first", memory="none", eval_episodes=0, wandb_mode="offline")
    train_agent(config, progress=False)
    wandb_id = json.loads((latest_agent_checkpoint(tmp_path / "first") / "trainer.json").read_text())["wandb_id"]
    assert wandb_id
    shutil.copytree(tmp_path / "first", tmp_path / "second")
    weights = []
    for name in ("first", "second"):
        summary = train_agent(replace(config, out=str(tmp_path / name), total_steps=128), progress=False, resume=True)
        # the same wandb run: offline-run-<time>-<id>, with "-1" appended when it resumes within the same second
        assert summary["steps"] == 128
        assert re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{wandb_id}(-\d+)?", Path(summary["wandb_run_dir"]).name)
        weights.append(ALGORITHMS["ppo"].load(summary["agent"], device="cpu").policy.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # same seed, same checkpoint: same run


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"eval_every": 32, "eval_every_episodes": 0}, r"eval_every_episodes must be an int >= 1"),
        ({"total_steps": 0}, r"total_steps must be an int >= 1, actual value: 0"),
        ({"checkpoint_every": -5}, r"checkpoint_every must be an int >= 1, actual value: -5"),
        ({"algo": "dqn", "replay_readouts": "no-memory", "readouts": ("memory",)}, r"leaves none of readouts=\('memory',\)"),
    ],
)
def test_bad_run_options(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        tiny(tmp_path, **changes)
