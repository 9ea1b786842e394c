"""``--time-feature``: t/T appended to flat observations, before any memory or frame stack."""

from __future__ import annotations

import pytest

pytest.importorskip("popgym")

import gymnasium
import numpy as np

from episodic_memory.agents.builder import AgentConfig, make_agent_env
from episodic_memory.envs.gym_envs import make_env, time_aware


def test_a_popgym_env_gets_the_elapsed_fraction_of_its_step_limit_and_ends_as_before():
    plain = make_env("popgym-RepeatPreviousEasy-v0", imports=("popgym",))
    env = time_aware(make_env("popgym-RepeatPreviousEasy-v0", imports=("popgym",)))
    T = plain.unwrapped.max_episode_length + 1
    assert env.observation_space.shape == (5,)  # one-hot of 4 cards, then t/T
    obs, _ = env.reset(seed=3)
    expected, _ = plain.reset(seed=3)
    np.testing.assert_allclose(obs, [*np.eye(4)[expected], 0.0])
    for t in range(1, 200):
        obs, _, terminated, truncated, _ = env.step(0)
        expected, _, plain_terminated, plain_truncated, _ = plain.step(0)
        np.testing.assert_allclose(obs, [*np.eye(4)[expected], t / T])
        assert (terminated, truncated) == (plain_terminated, plain_truncated)  # the TimeLimit never cuts an episode
        if terminated or truncated:
            break
    assert terminated and t == plain.unwrapped.max_episode_length


def test_images_and_envs_without_a_step_limit_are_refused():
    with pytest.raises(ValueError, match="appends t/T to a flat observation"):
        time_aware(make_env("MiniGrid-MemoryS7-v0", frame_size=8))
    unlimited = gymnasium.make("CartPole-v1", max_episode_steps=None).unwrapped
    with pytest.raises(ValueError, match="needs the env's step limit"):
        time_aware(unlimited)


def test_the_agent_env_carries_the_time_through_the_frame_stack_and_into_the_memory():
    config = AgentConfig(env_id="popgym-RepeatFirstEasy-v0", memory="none", frame_stack=4, time_feature=True, num_envs=2)
    venv = make_agent_env(config)
    assert venv.observation_space["observation"].shape == (20,)  # 4 stacked frames of 4 one-hot entries and t/T
    venv.reset()
    for _ in range(3):
        obs, *_ = venv.step(np.zeros(2, dtype=np.int64))
    T = 52  # RepeatFirstEasy's 51 steps, plus one
    np.testing.assert_allclose(obs["observation"][:, 4::5], [[0, 1 / T, 2 / T, 3 / T]] * 2, atol=1e-7)
    memory = AgentConfig(
        env_id="popgym-RepeatFirstEasy-v0",
        memory="dkm",
        readouts=("recall",),
        recall_lags=(1,),
        recall_source="observation",
        time_feature=True,
        num_envs=2,
        code_size=12,
        num_slots=6,
        device="cpu",
    )
    assert make_agent_env(memory).observation_space["recall"].shape == (1, 5)  # the memory keeps the time as well
