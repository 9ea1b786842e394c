"""Replay buffers of off-policy agents: the float16 read-out buffer and the size announced before allocating."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer

from episodic_memory.agents.replay import Float16ReadoutsReplayBuffer, replay_buffer_nbytes

K, C, N_ENVS, TRANSITIONS = 6, 12, 2, 40

SPACE = spaces.Dict(
    {
        "observation": spaces.Box(0, 255, (3, 8, 8), np.uint8),
        "retrieval": spaces.Box(-np.inf, np.inf, (C,), np.float32),
        "novelty": spaces.Box(0.0, np.inf, (1,), np.float32),
        "memory": spaces.Box(-np.inf, np.inf, (K, C), np.float32),
    }
)


def observation(rng: np.random.Generator, index: np.ndarray) -> dict[str, np.ndarray]:
    """Read-outs at the machine's scale (codes of norm about 100); ``novelty`` holds ``index`` to find the row again."""
    return {
        "observation": rng.integers(0, 256, (N_ENVS, 3, 8, 8), dtype=np.uint8),
        "retrieval": (30 * rng.standard_normal((N_ENVS, C))).astype(np.float32),
        "novelty": index.astype(np.float32).reshape(N_ENVS, 1),
        "memory": (30 * rng.standard_normal((N_ENVS, K, C))).astype(np.float32),
    }


def filled(buffer: DictReplayBuffer) -> dict[int, dict[str, np.ndarray]]:
    """Add TRANSITIONS steps of N_ENVS transitions; returns each transition's observation by its index."""
    rng = np.random.default_rng(0)
    added = {}
    for t in range(TRANSITIONS):
        index = np.arange(N_ENVS) + N_ENVS * t
        obs, next_obs = observation(rng, index), observation(rng, index)
        buffer.add(obs, next_obs, np.zeros((N_ENVS, 1)), np.ones(N_ENVS), np.zeros(N_ENVS), [{}] * N_ENVS)
        for i, n in enumerate(index):
            added[int(n)] = {key: value[i] for key, value in obs.items()}
    return added


def test_float16_buffer_returns_float32_values_within_float16_precision():
    buffer = Float16ReadoutsReplayBuffer(
        1_000, SPACE, spaces.Discrete(3), "cpu", n_envs=N_ENVS, float16_keys=("retrieval", "memory")
    )
    assert buffer.observations["memory"].dtype == np.float16 and buffer.next_observations["retrieval"].dtype == np.float16
    assert buffer.observations["novelty"].dtype == np.float32
    added = filled(buffer)
    samples = buffer.sample(64)
    rounded = 0
    for row in range(64):
        index = int(samples.observations["novelty"][row, 0])
        original = added[index]
        for key in ("retrieval", "memory"):
            got = samples.observations[key][row]
            assert got.dtype == torch.float32 and got.shape == original[key].shape
            np.testing.assert_allclose(got.numpy(), original[key], rtol=2**-11, atol=0)  # float16: 11 significant bits
            rounded += int((got.numpy() != original[key]).any())
        assert torch.equal(samples.observations["observation"][row], torch.from_numpy(original["observation"]))
    assert rounded > 0  # the values really went through float16
    assert all(v.dtype == torch.float32 for k, v in samples.next_observations.items() if k != "observation")


def test_float16_buffer_refuses_values_beyond_float16():
    buffer = Float16ReadoutsReplayBuffer(100, SPACE, spaces.Discrete(3), "cpu", n_envs=N_ENVS, float16_keys=("memory",))
    obs = observation(np.random.default_rng(0), np.arange(N_ENVS))
    next_obs = {**obs, "memory": np.full((N_ENVS, K, C), 1e5, np.float32)}
    with pytest.raises(ValueError, match=r"read-out 'memory' of a next observation reaches 100000, beyond float16's range"):
        buffer.add(obs, next_obs, np.zeros((N_ENVS, 1)), np.ones(N_ENVS), np.zeros(N_ENVS), [{}] * N_ENVS)
    assert buffer.pos == 0  # nothing stored


def test_float16_keys_must_be_float32_boxes_of_the_space():
    with pytest.raises(ValueError, match=r"float16_keys \['codes'\] are not keys of the observation space"):
        Float16ReadoutsReplayBuffer(100, SPACE, spaces.Discrete(3), "cpu", float16_keys=("codes",))
    with pytest.raises(ValueError, match="'observation' must be a float32 Box to be stored as float16"):
        Float16ReadoutsReplayBuffer(100, SPACE, spaces.Discrete(3), "cpu", float16_keys=("observation",))


@pytest.mark.parametrize("float16_keys", [(), ("retrieval", "memory")])
@pytest.mark.parametrize(("buffer_size", "n_envs"), [(1_000, 2), (999, 4), (3, 8)])
def test_announced_size_is_the_allocated_size(float16_keys, buffer_size, n_envs):
    cls = Float16ReadoutsReplayBuffer if float16_keys else DictReplayBuffer
    kwargs = {"float16_keys": float16_keys} if float16_keys else {}
    buffer = cls(buffer_size, SPACE, spaces.Discrete(3), "cpu", n_envs=n_envs, **kwargs)
    arrays = [*buffer.observations.values(), *buffer.next_observations.values()]
    arrays += [buffer.actions, buffer.rewards, buffer.dones, buffer.timeouts]
    per_transition, total = replay_buffer_nbytes(SPACE, spaces.Discrete(3), buffer_size, n_envs, float16_keys)
    assert total == sum(a.nbytes for a in arrays)
    assert per_transition == 2 * (3 * 8 * 8 + (C + K * C) * (2 if float16_keys else 4) + 4) + 8 + 12
