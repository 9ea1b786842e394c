"""Replay buffers of off-policy agents (DQN, QR-DQN) whose observations carry memory read-outs.

SB3's :class:`~stable_baselines3.common.buffers.DictReplayBuffer` stores every key of a ``Dict``
observation twice per transition (``observations`` and ``next_observations``) in the key's dtype.
The ``memory`` read-out is the posterior mean ``R [K, C]`` in float32: with K=32, C=100 that is
2 x 12,800 bytes a transition, about 26 GB for a million transitions, far more than the frame
itself. :class:`Float16ReadoutsReplayBuffer` halves the read-outs; dropping the ``memory`` read-out
from the agent's observation (``replay_readouts="no-memory"`` of
:class:`~episodic_memory.agents.builder.AgentConfig`) removes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.type_aliases import DictReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

__all__ = ["FLOAT16_MAX", "Float16ReadoutsReplayBuffer", "replay_buffer_nbytes"]

FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504: larger read-outs would be stored as inf


def _storage_space(observation_space: spaces.Dict, float16_keys: Sequence[str]) -> spaces.Dict:
    """``observation_space`` with the ``float16_keys`` stored as float16 (same shapes and bounds)."""
    unknown = sorted(set(float16_keys) - set(observation_space.spaces))
    if unknown:
        raise ValueError(f"float16_keys {unknown} are not keys of the observation space {sorted(observation_space.spaces)}")
    stored = {}
    for key, space in observation_space.spaces.items():
        if key in float16_keys:
            if not isinstance(space, spaces.Box) or space.dtype != np.float32:
                raise ValueError(f"float16_keys: {key!r} must be a float32 Box to be stored as float16, actual space: {space}")
            space = spaces.Box(space.low.astype(np.float16), space.high.astype(np.float16), space.shape, np.float16)
        stored[key] = space
    return spaces.Dict(stored)


def replay_buffer_nbytes(
    observation_space: spaces.Dict,
    action_space: spaces.Space,
    buffer_size: int,
    n_envs: int = 1,
    float16_keys: Sequence[str] = (),
) -> tuple[int, int]:
    """``(bytes per transition, bytes in all)`` of a (float16-read-out) DictReplayBuffer, before allocating it.

    A transition holds each observation key twice (observation and next observation), the action,
    and float32 reward, done and timeout. SB3 keeps ``buffer_size // n_envs`` rows of ``n_envs``
    transitions; the total counts those, as ``np.ndarray.nbytes`` of the allocated arrays does.
    """
    stored = _storage_space(observation_space, float16_keys)
    observation = sum(int(np.prod(space.shape)) * np.dtype(space.dtype).itemsize for space in stored.spaces.values())
    action = get_action_dim(action_space) * np.dtype(ReplayBuffer._maybe_cast_dtype(action_space.dtype)).itemsize
    per_transition = 2 * observation + action + 3 * np.dtype(np.float32).itemsize
    return per_transition, max(buffer_size // n_envs, 1) * n_envs * per_transition


class Float16ReadoutsReplayBuffer(DictReplayBuffer):
    """A :class:`~stable_baselines3.common.buffers.DictReplayBuffer` storing ``float16_keys`` as float16.

    Sampled batches hold float32 tensors, as from the plain buffer; the stored values carry float16
    precision (a relative error below ``2**-11``). A value beyond float16's range (``|x| > 65504``)
    is refused with a ValueError rather than stored as inf.

    :param float16_keys: float32 ``Box`` keys of ``observation_space`` to store as float16 (the
        memory read-outs, e.g. ``("retrieval", "memory")``).
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        float16_keys: Sequence[str] = (),
    ) -> None:
        self.float16_keys = tuple(float16_keys)
        # The arrays are allocated from the storage space: float16 from the start, never float32 first.
        super().__init__(
            buffer_size,
            _storage_space(observation_space, self.float16_keys),
            action_space,
            device,
            n_envs,
            optimize_memory_usage,
            handle_timeout_termination,
        )

    def add(
        self,
        obs: dict[str, np.ndarray],
        next_obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        for name, observation in (("observation", obs), ("next observation", next_obs)):
            for key in self.float16_keys:
                largest = float(np.max(np.abs(observation[key]))) if np.size(observation[key]) else 0.0
                if largest > FLOAT16_MAX:
                    raise ValueError(
                        f"read-out {key!r} of a {name} reaches {largest:.6g}, beyond float16's range ({FLOAT16_MAX:g}); "
                        "train with --replay-readouts full"
                    )
        super().add(obs, next_obs, action, reward, done, infos)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> DictReplayBufferSamples:
        samples = super()._get_samples(batch_inds, env)
        return samples._replace(
            observations=self._float32(samples.observations), next_observations=self._float32(samples.next_observations)
        )

    def _float32(self, observations: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value.float() if key in self.float16_keys else value for key, value in observations.items()}
