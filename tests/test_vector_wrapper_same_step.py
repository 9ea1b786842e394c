"""EpisodicMemoryVectorWrapper under Gymnasium's same-step auto-reset equals one EpisodicMemoryWrapper per environment.

Same seeds, same actions: a ``SAME_STEP`` vector environment resets a finished sub-environment
within the step that ended its episode, so every episode end is checked against a single wrapper
that is stepped to the end and then reset: the final observation's read-outs (in
``info["final_obs"]``), the terminal reward and its bonus, the next episode's first observation,
and the memories themselves.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import minigrid  # noqa: F401  (registers the MiniGrid-* ids)
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from episodic_memory import DynamicKanervaMachine
from episodic_memory.wrappers import EpisodicMemoryVectorWrapper, EpisodicMemoryWrapper
from episodic_memory.wrappers.core import DEFAULT_READOUTS, READOUTS

NUM_ENVS = 3
SEED = 5
STEPS = 60
# CartPole under random actions ends after 10 to 40 steps, at different steps in each sub-environment;
# MemoryS7's Dict observations (frames under "image") end by the time limit.
ENVS = {
    "cartpole": ("CartPole-v1", {}, None, (4,)),
    "minigrid-dict": ("MiniGrid-MemoryS7-v0", {"max_steps": 7}, "image", (7, 7, 3)),
}


@pytest.fixture(scope="module", params=list(ENVS))
def case(request) -> tuple[str, dict[str, Any], str | None, DynamicKanervaMachine]:
    env_id, kwargs, obs_key, input_shape = ENVS[request.param]
    torch.manual_seed(0)
    dkm = DynamicKanervaMachine(input_shape, code_size=8, num_slots=5, likelihood="gaussian", hidden_channels=4).eval()
    return env_id, kwargs, obs_key, dkm


def same_step_vector_env(env_id: str, num_envs: int, **kwargs: Any) -> gymnasium.vector.VectorEnv:
    vector_kwargs = {"autoreset_mode": AutoresetMode.SAME_STEP}
    return gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", vector_kwargs=vector_kwargs, **kwargs)


def row(obs: dict[str, Any], i: int) -> dict[str, Any]:
    return {key: value[i] for key, value in obs.items()}


def assert_same_obs(actual: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    assert set(actual) == set(expected), where
    for key, value in expected.items():
        if key in READOUTS:  # batched against single memory steps: equal up to float32 rounding
            np.testing.assert_allclose(actual[key], value, rtol=1e-5, atol=1e-5, err_msg=f"{where}: {key}")
        else:  # the environment's own observation, untouched
            np.testing.assert_array_equal(actual[key], value, err_msg=f"{where}: {key}")


@pytest.mark.parametrize("novelty_reward", [0.0, 0.5])
def test_same_step_autoreset_equals_single_wrappers_across_episode_ends(case, novelty_reward):
    env_id, kwargs, obs_key, dkm = case
    memory_kwargs = {"attractor_steps": 3, "obs_key": obs_key, "novelty_reward": novelty_reward}
    wrapped = EpisodicMemoryVectorWrapper(same_step_vector_env(env_id, NUM_ENVS, **kwargs), dkm, **memory_kwargs)
    singles = [EpisodicMemoryWrapper(gymnasium.make(env_id, **kwargs), dkm, **memory_kwargs) for _ in range(NUM_ENVS)]
    space, prior_mean = wrapped.single_observation_space, dkm.memory.prior_mean.detach().numpy()
    obs, _ = wrapped.reset(seed=SEED)
    for i, single in enumerate(singles):
        assert_same_obs(row(obs, i), single.reset(seed=SEED + i)[0], f"reset, env {i}")  # make_vec seeds env i with SEED + i
    rng = np.random.default_rng(0)
    ends, bonuses = np.zeros(NUM_ENVS, dtype=int), []
    for t in range(STEPS):
        actions = rng.integers(0, wrapped.single_action_space.n, size=NUM_ENVS)
        obs, rewards, terminations, truncations, info = wrapped.step(actions)
        assert wrapped.observation_space.contains(obs), f"step {t}"
        stats = info["episodic_memory"]
        for i, single in enumerate(singles):
            where = f"step {t}, env {i}"
            expected, reward, terminated, truncated, single_info = single.step(actions[i])
            assert (terminations[i], truncations[i]) == (terminated, truncated), where
            assert stats["extrinsic_reward"][i] == single_info["episodic_memory"]["extrinsic_reward"], where
            # the bonus of the observation the step led to: on a terminal step the final one, never the reset one
            assert stats["novelty_bonus"][i] == pytest.approx(single_info["episodic_memory"]["novelty_bonus"], rel=1e-5), where
            assert rewards[i] == pytest.approx(reward, rel=1e-6), where
            bonuses.append(stats["novelty_bonus"][i])
            if terminated or truncated:
                assert info["_final_obs"][i], where
                final = info["final_obs"][i]
                assert_same_obs(final, expected, f"{where}: final_obs")  # read from the finished episode's memory
                assert space.contains(final), where
                expected, _ = single.reset()  # the vector environment resets its sub-environment without a seed
                np.testing.assert_array_equal(obs["memory"][i], prior_mean, err_msg=where)  # the new episode reads the prior
                ends[i] += 1
            else:
                assert not info.get("_final_obs", np.zeros(NUM_ENVS, dtype=bool))[i], where
            assert_same_obs(row(obs, i), expected, where)
            assert space.contains(row(obs, i)), where
            # the memories themselves: the finished episode's gone, the new first observation written
            batched, alone = wrapped.core.backend.online, single.core.backend.online
            torch.testing.assert_close(batched.R[i], alone.R[0], rtol=1e-5, atol=1e-5, msg=where)
            torch.testing.assert_close(batched.U[i], alone.U[0], rtol=1e-5, atol=1e-5, msg=where)
    assert (ends >= 2).all(), f"every sub-environment should end at least two episodes, ended {ends.tolist()}"
    if novelty_reward > 0:
        assert min(bonuses) > 0
    else:
        assert set(bonuses) == {0.0}


def test_same_step_final_observations_leave_the_vector_environments_info_alone():
    torch.manual_seed(0)
    dkm = DynamicKanervaMachine((4,), code_size=8, num_slots=5, likelihood="gaussian").eval()
    vector = same_step_vector_env("CartPole-v1", 2)
    seen: list[dict[str, Any]] = []

    class KeepInfo(gymnasium.vector.VectorWrapper):
        """Keeps the info the inner vector environment returned, as a wrapper that logs it would."""

        def step(self, actions):
            result = super().step(actions)
            seen.append(result[-1])
            return result

    wrapped = EpisodicMemoryVectorWrapper(KeepInfo(vector), dkm)
    wrapped.reset(seed=0)
    for _ in range(40):
        *_, info = wrapped.step(np.ones(2, dtype=np.int64))  # always right: CartPole falls within about ten steps
        if info.get("_final_obs", np.zeros(2, dtype=bool)).any():
            break
    i = int(np.flatnonzero(info["_final_obs"])[0])
    assert set(info["final_obs"][i]) == {"observation", *DEFAULT_READOUTS}
    assert isinstance(seen[-1]["final_obs"][i], np.ndarray) and seen[-1]["final_obs"][i].shape == (4,)  # not replaced in place
    np.testing.assert_array_equal(info["final_obs"][i]["observation"], seen[-1]["final_obs"][i])
