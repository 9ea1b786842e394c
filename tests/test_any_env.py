"""The command line on Gymnasium ids other than MiniGrid: collect, pretrain, train-agent and evaluate-agent end to end."""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from episodic_memory import load_machine
from episodic_memory.agents.builder import AgentConfig, build_agent, make_agent_env
from episodic_memory.envs import FrameDataset
from episodic_memory.envs.gym_envs import make_env
from episodic_memory.models.observations import ObservationEncoding
from episodic_memory.train.cli import main

pytest.importorskip("popgym")

QUIET = ["--wandb-mode", "disabled", "--device", "cpu"]
SIZE = ["--layouts-per-env", "12", "--steps-per-layout", "16"]
AGENT = ["--num-envs", "2", "--n-steps", "32", "--batch-size", "32", "--code-size", "12", "--num-slots", "6", *QUIET]


@pytest.fixture(scope="module")
def cartpole_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("cartpole") / "data"
    assert main(["collect", "--out", str(out), "--envs", "CartPole-v1", *SIZE]) == 0
    return out


def test_collect_records_an_envs_own_observations_as_vectors(cartpole_data):
    dataset = FrameDataset(cartpole_data, split="all")
    assert dataset.frames.dtype == torch.float32 and tuple(dataset.frames.shape) == (12, 16, 4)
    encoding = ObservationEncoding.from_config(dataset.observation_encoding)
    assert encoding.read_space == make_env("CartPole-v1").observation_space
    # layout 0's first frame is CartPole's reset observation for that layout's seed
    env = make_env("CartPole-v1")
    first, _ = env.reset(seed=0)
    index = dataset.layout_ids.index("CartPole-v1/0")
    np.testing.assert_array_equal(dataset.frames[index, 0].numpy(), first)


def test_pretrain_on_collected_vectors_then_train_an_agent_with_that_memory(cartpole_data, tmp_path):
    pretrain = ["pretrain", "--data", str(cartpole_data), "--out", str(tmp_path / "dkm"), "--steps", "6", "--batch-size", "2"]
    pretrain += ["--episode-length", "8", "--code-size", "12", "--num-slots", "6", "--evaluate", "false", "--log-every", "3"]
    assert main([*pretrain, *QUIET]) == 0
    machine = load_machine(tmp_path / "dkm" / "model.safetensors")
    assert tuple(machine.input_shape) == (4,) and machine.observation_encoding.read_space.shape == (4,)
    train = ["train-agent", "--env-id", "CartPole-v1", "--memory", "dkm", "--total-steps", "64", "--eval-episodes", "2"]
    train += ["--memory-checkpoint", str(tmp_path / "dkm" / "model.safetensors"), "--out", str(tmp_path / "agent")]
    assert main([*train, *AGENT]) == 0
    report = json.loads((tmp_path / "agent" / "evaluation.json").read_text())
    assert report["env_id"] == "CartPole-v1" and report["mean_return"] >= 1.0  # CartPole pays 1 a step


def test_cartpole_with_a_fresh_memory_evaluates_from_another_directory(tmp_path, monkeypatch):
    out = tmp_path / "agent"
    train = ["train-agent", "--env-id", "CartPole-v1", "--memory", "dkm", "--total-steps", "64", "--eval-episodes", "2"]
    assert main([*train, "--out", str(out), *AGENT]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["evaluate-agent", "--agent", str(out / "agent.zip"), "--episodes", "3", "--seed", "10000"]) == 0
    again = json.loads((out / "evaluation.json").read_text())  # rewritten beside the agent
    assert again["env_id"] == "CartPole-v1" and again["episodes"] == 3 and again["mean_return"] >= 1.0


def test_a_machine_pretrained_on_one_env_is_refused_for_another_with_the_same_size(cartpole_data, tmp_path, capsys):
    pretrain = ["pretrain", "--data", str(cartpole_data), "--out", str(tmp_path / "dkm"), "--steps", "1", "--batch-size", "2"]
    assert main([*pretrain, "--episode-length", "4", "--evaluate", "false", *QUIET]) == 0
    checkpoint = str(tmp_path / "dkm" / "model.safetensors")
    # CountRecall's MultiDiscrete([2, 2]) is also 4 numbers: the recorded space tells them apart
    train = ["train-agent", "--env-id", "popgym-CountRecallEasy-v0", "--import", "popgym", "--memory", "dkm"]
    assert main([*train, "--memory-checkpoint", checkpoint, "--out", str(tmp_path / "agent"), *AGENT]) == 2
    assert "built for observations" in capsys.readouterr().err


def test_train_agent_on_a_popgym_id_of_the_module_form_with_env_kwargs(tmp_path, monkeypatch):
    out = tmp_path / "agent"
    train = ["train-agent", "--env-id", "popgym:popgym-RepeatFirstEasy-v0", "--memory", "km", "--total-steps", "64"]
    assert main([*train, "--eval-episodes", "2", "--out", str(out), *AGENT]) == 0
    assert json.loads((out / "evaluation.json").read_text())["episodes"] == 2
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # evaluate-agent from another working directory
    assert main(["evaluate-agent", "--agent", str(out / "agent.zip"), "--episodes", "3", "--out", "report"]) == 0
    report = json.loads((elsewhere / "report" / "evaluation.json").read_text())
    assert report["env_id"] == "popgym:popgym-RepeatFirstEasy-v0" and report["episodes"] == 3
    assert -1.0 <= report["mean_return"] <= 1.0  # POPGym scales episode returns to [-1, 1]
    short = ["train-agent", "--env-id", "CartPole-v1", "--env-kwargs", '{"max_episode_steps": 5}', "--memory", "none"]
    assert main([*short, "--total-steps", "64", "--eval-episodes", "3", "--out", str(tmp_path / "short"), *AGENT]) == 0
    assert json.loads((tmp_path / "short" / "evaluation.json").read_text())["mean_return"] <= 5.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env-id", "popgym-NoSuchTaskEasy-v0"], r"unknown env id 'popgym-NoSuchTaskEasy-v0'.*--import MODULE"),
        (["--env-id", "CartPole-v1", "--import", "no_such_module"], r"--import no_such_module: cannot import it"),
        (["--env-id", "CartPole-v1", "--env-kwargs", '{"gravity_x": 1}'], r"refuses the keyword arguments"),
        (["--env-id", "CartPole-v1", "--memory", "none", "--policy-input", "readouts"], r"--policy-input readouts needs"),
    ],
)
def test_bad_env_options_say_what_to_do(tmp_path, capsys, args, message):
    assert main(["train-agent", *args, "--total-steps", "64", "--out", str(tmp_path / "agent"), *AGENT]) == 2
    assert re.search(message, capsys.readouterr().err, flags=re.DOTALL)


@pytest.mark.parametrize(
    ("policy_input", "keys"),
    [
        ("both", {"observation", "retrieval", "novelty", "memory"}),
        ("readouts", {"code", "retrieval", "novelty", "memory"}),
        ("pixels", {"observation"}),
    ],
)
def test_policy_input_decides_what_the_policy_sees(policy_input, keys):
    config = AgentConfig(memory="dkm", policy_input=policy_input, num_envs=2, frame_size=16, code_size=12, num_slots=6)
    model = build_agent(replace(config, device="cpu"))
    assert set(model.observation_space.spaces) == keys
    assert bool(model.policy.features_extractor.image_keys) == (policy_input != "readouts")  # no CNN on read-outs only


def test_the_code_read_out_is_the_machines_code_of_the_frame():
    config = AgentConfig(memory="dkm", num_envs=2, frame_size=16, code_size=12, num_slots=6, device="cpu")
    both = make_agent_env(config)  # the same seed: the same fresh machine and the same first frames
    readouts = make_agent_env(replace(config, policy_input="readouts"))
    frames, codes = both.reset()["observation"], readouts.reset()["code"]
    with torch.no_grad():
        z = both.core.machine.encode(torch.as_tensor(frames)[:, None])[:, 0]  # [2, C]
    np.testing.assert_allclose(codes, z.numpy(), rtol=1e-5, atol=1e-5)


def test_frame_stack_keeps_the_last_observations_one_hot():
    config = AgentConfig(env_id="popgym-RepeatPreviousEasy-v0", memory="none", frame_stack=3, num_envs=2, device="cpu")
    venv = make_agent_env(config)
    obs = venv.reset()["observation"]  # [2, 12]: three Discrete(4) observations, one-hot, newest last
    assert obs.shape == (2, 12) and np.array_equal(obs[:, -4:].sum(1), [1, 1]) and not obs[:, :8].any()
    newest = obs[:, -4:].copy()
    after, *_ = venv.step(np.zeros(2, dtype=np.int64))
    np.testing.assert_array_equal(after["observation"][:, 4:8], newest)  # moved one slot back


def test_frame_stack_trains_on_stacked_frames_with_and_without_a_memory(tmp_path):
    train = ["train-agent", "--env-id", "MiniGrid-MemoryS7-v0", "--frame-size", "16", "--frame-stack", "2"]
    for memory in ("none", "dkm"):
        run = ["--memory", memory, "--total-steps", "64", "--eval-episodes", "1", "--out", str(tmp_path / memory)]
        assert main([*train, *run, *AGENT]) == 0
    model = build_agent(AgentConfig(frame_size=16, memory="none", frame_stack=2, num_envs=2, device="cpu"))
    assert model.observation_space["observation"].shape == (6, 16, 16)  # two RGB frames, channels first for the CNN
    model = build_agent(AgentConfig(frame_size=16, memory="dkm", frame_stack=2, num_envs=2, device="cpu"))
    assert model.observation_space["observation"].shape == (6, 16, 16)
    assert model.observation_space["memory"].shape == (32, 100)  # the read-outs are not stacked


def test_frame_stack_beside_a_memory_stacks_the_observation_and_the_memory_reads_it_unstacked():
    config = AgentConfig(env_id="popgym-RepeatPreviousEasy-v0", memory="dkm", frame_stack=3, num_envs=2, device="cpu")
    venv = make_agent_env(config)
    plain = make_agent_env(replace(config, frame_stack=1))
    obs, unstacked = venv.reset(), plain.reset()
    assert obs["observation"].shape == (2, 12) and not obs["observation"][:, :8].any()
    np.testing.assert_array_equal(obs["observation"][:, -4:].argmax(1), unstacked["observation"])  # Discrete(4), one-hot
    history = [unstacked["observation"]]
    for _ in range(60):  # across an episode's end (51 steps)
        actions = np.zeros(2, dtype=np.int64)
        (obs, _, dones, infos), (unstacked, *_) = venv.step(actions), plain.step(actions)
        np.testing.assert_array_equal(obs["memory"], unstacked["memory"])  # the same memory, written unstacked
        history = [unstacked["observation"]] if dones.all() else [*history, unstacked["observation"]]
        for slot, past in enumerate(history[-3:][::-1]):  # newest last in the stack
            np.testing.assert_array_equal(obs["observation"][:, 8 - 4 * slot : 12 - 4 * slot].argmax(1), past)
        if dones.any():
            assert dones.all() and infos[0]["terminal_observation"]["observation"].shape == (12,)
    assert obs["observation"][:, :4].any()


def test_frame_stack_with_readouts_only_stacks_the_code():
    config = AgentConfig(env_id="popgym-RepeatPreviousEasy-v0", memory="dkm", frame_stack=2, num_envs=2, device="cpu")
    space = make_agent_env(replace(config, policy_input="readouts")).observation_space
    assert "observation" not in space.spaces and space["code"].shape == (200,) and space["retrieval"].shape == (100,)


def test_standardised_readouts_are_order_one_saved_with_the_agent_and_frozen_in_evaluation(tmp_path):
    from stable_baselines3.common.vec_env import VecNormalize

    from episodic_memory.train.train_agent import READOUT_STATS_FILE, make_evaluation_env

    config = AgentConfig(env_id="popgym-RepeatFirstEasy-v0", memory="dkm", standardise_readouts=True, num_envs=4, device="cpu")
    venv = make_agent_env(config)
    raw = make_agent_env(replace(config, standardise_readouts=False))
    venv.reset(), raw.reset()
    memories, raw_memories = [], []
    for _ in range(300):
        actions = np.zeros(4, dtype=np.int64)
        (obs, *_), (raw_obs, *_) = venv.step(actions), raw.step(actions)
        memories.append(obs["memory"]), raw_memories.append(raw_obs["memory"])
    memories, raw_memories = np.concatenate(memories[100:]), np.concatenate(raw_memories[100:])  # [800, K, C]
    assert np.abs(raw_memories.mean(0)).mean() > 10 * raw_memories.std(0).mean()  # raw: the prior, nearly constant
    assert np.abs(memories.mean(0)).mean() < 0.5 and 0.5 < memories.std(0).mean() < 1.5  # standardised entry by entry
    assert obs["observation"].dtype == raw_obs["observation"].dtype and np.array_equal(obs["novelty"] > 0, raw_obs["novelty"] > 0)

    run = tmp_path / "run"
    train = ["train-agent", "--env-id", "popgym-RepeatFirstEasy-v0", "--memory", "dkm", "--standardise-readouts", "true"]
    assert (
        main([*train, "--total-steps", "128", "--checkpoint-every", "64", "--eval-episodes", "1", "--out", str(run), *AGENT]) == 0
    )
    assert (run / READOUT_STATS_FILE).is_file() and (run / "checkpoints" / "step-000000064" / READOUT_STATS_FILE).is_file()
    evaluation = make_evaluation_env(run, replace(config, num_envs=1), seed=5)
    saved = pickle.loads((run / READOUT_STATS_FILE).read_bytes())  # VecNormalize.save pickles the wrapper without its env
    assert isinstance(evaluation, VecNormalize) and not evaluation.training
    np.testing.assert_array_equal(evaluation.obs_rms["memory"].mean, saved.obs_rms["memory"].mean)
    evaluation.reset(), evaluation.step(np.zeros(1, dtype=np.int64))
    np.testing.assert_array_equal(evaluation.obs_rms["memory"].mean, saved.obs_rms["memory"].mean)  # frozen
    assert main([*train, "--total-steps", "192", "--eval-episodes", "0", "--out", str(run), "--resume", *AGENT]) == 0
    (run / READOUT_STATS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="read-out statistics the agent was trained with"):
        make_evaluation_env(run, config, seed=5)
    with pytest.raises(ValueError, match="needs a memory and read-outs"):
        make_agent_env(replace(config, memory="none"))
