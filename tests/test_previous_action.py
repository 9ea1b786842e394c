"""``--previous-action``: the last action, one-hot, beside the observation (POPGym's ``obs_requires_prev_action``)."""

from __future__ import annotations

import pytest

pytest.importorskip("popgym")

import gymnasium
import numpy as np
from gymnasium.utils.env_checker import check_env

from episodic_memory.agents.builder import AgentConfig, config_env
from episodic_memory.envs.gym_envs import PreviousAction, make_env


def test_minesweeper_gets_the_clicked_tile_and_a_value_for_no_click_yet():
    plain = make_env("popgym-MineSweeperEasy-v0", imports=("popgym",))
    env = PreviousAction(make_env("popgym-MineSweeperEasy-v0", imports=("popgym",)))
    assert env.observation_space.shape == (3 + 5 + 5,)  # mines next to the tile (0-2), then row and column with "none"
    obs, _ = env.reset(seed=4)
    expected, _ = plain.reset(seed=4)
    np.testing.assert_array_equal(obs, [*np.eye(3)[expected], *np.eye(5)[4], *np.eye(5)[4]])
    for action in ([1, 2], [3, 0], [1, 2]):
        obs, reward, terminated, _, _ = env.step(np.array(action))
        expected, expected_reward, *_ = plain.step(np.array(action))
        np.testing.assert_array_equal(obs, [*np.eye(3)[expected], *np.eye(5)[action[0]], *np.eye(5)[action[1]]])
        assert reward == expected_reward
        if terminated:
            break


def test_a_discrete_action_and_a_box_action_with_its_first_step_flag():
    env = PreviousAction(make_env("popgym-ConcentrationEasy-v0", imports=("popgym",)))
    board = 52 * 3
    assert env.observation_space.shape == (board + 53,)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs[board:], np.eye(53)[52])  # no card chosen yet: the 53rd value
    obs, *_ = env.step(7)
    np.testing.assert_array_equal(obs[board:], np.eye(53)[7])
    pendulum = PreviousAction(gymnasium.make("Pendulum-v1"))
    obs, _ = pendulum.reset(seed=0)
    np.testing.assert_allclose(obs[3:], [0.0, 1.0])  # zero torque, first step
    obs, *_ = pendulum.step(np.array([1.5], np.float32))
    np.testing.assert_allclose(obs[3:], [1.5, 0.0])
    check_env(env, skip_render_check=True)  # Gymnasium's checker: spaces, seeding, and the wrapper can be re-made


def test_images_dicts_and_other_action_spaces_are_refused():
    with pytest.raises(ValueError, match="appends the action to a flat observation"):
        PreviousAction(make_env("MiniGrid-MemoryS7-v0", frame_size=8))
    with pytest.raises(ValueError, match="appends the action to a flat observation"):
        PreviousAction(
            gymnasium.wrappers.TransformObservation(
                gymnasium.make("CartPole-v1"),
                lambda o: {"x": o},
                gymnasium.spaces.Dict({"x": gymnasium.make("CartPole-v1").observation_space}),
            )
        )


def test_the_agent_env_puts_the_action_before_the_time_and_warns_without_it():
    config = AgentConfig(
        env_id="popgym-MineSweeperEasy-v0", imports=("popgym",), memory="none", previous_action=True, time_feature=True
    )
    env = config_env(config)
    obs, _ = env.reset(seed=1)
    obs, *_ = env.step(np.array([0, 3]))
    np.testing.assert_allclose(obs[3:], [*np.eye(5)[0], *np.eye(5)[3], 1 / 15])  # MineSweeperEasy: 14 steps, T = 15
    with pytest.warns(UserWarning, match="--previous-action true"):
        config_env(AgentConfig(env_id="popgym-MineSweeperEasy-v0", imports=("popgym",), memory="none"))
