"""Frame stacking beside the memory: the last N observations of some keys of a Dict observation.

An episodic memory keeps what was seen and little of its order (README: the memory suite, which
probes it); the last few observations in order are what SB3's ``VecFrameStack`` gives. Stacking every key
of a memory agent's observation would also stack the read-outs, which already summarise the episode,
and multiply their size; :class:`VecFrameStackKeys` stacks only the keys it is told to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.stacked_observations import StackedObservations

__all__ = ["VecFrameStackKeys"]


class VecFrameStackKeys(VecEnvWrapper):
    """``keys`` of a Dict observation stacked over the last ``n_stack`` steps, the other keys as they are.

    A stacked key that is not a Box (``Discrete``, ``MultiDiscrete``, ``MultiBinary``) is flattened
    one-hot first (Gymnasium's ``spaces.flatten``), a ``[n_envs, n_stack * D]`` float32 vector, newest
    last; a Box is stacked as SB3's ``VecFrameStack`` does (images along their channel axis). At an
    episode's start the older slots are zeros, and the stacked ``terminal_observation`` of an ended
    episode is kept in its info.
    """

    def __init__(self, venv: VecEnv, n_stack: int, keys: Sequence[str]) -> None:
        space = venv.observation_space
        if not isinstance(space, spaces.Dict):
            raise TypeError(f"VecFrameStackKeys stacks keys of a Dict observation space, got {space}")
        missing = sorted(set(keys) - set(space.spaces))
        if missing or not keys:
            raise ValueError(f"keys to stack must be some of {list(space.spaces)}, got {list(keys)}")
        if not isinstance(n_stack, int) or n_stack < 1:
            raise ValueError(f"n_stack must be an int >= 1, got {n_stack!r}")
        self.originals = {key: space[key] for key in keys}
        boxes = {
            key: sub if isinstance(sub, spaces.Box) else _float32(spaces.flatten_space(sub))
            for key, sub in self.originals.items()
        }
        self.stacks = {key: StackedObservations(venv.num_envs, n_stack, box) for key, box in boxes.items()}
        stacked = {key: self.stacks[key].stacked_observation_space if key in keys else sub for key, sub in space.spaces.items()}
        super().__init__(venv, observation_space=spaces.Dict(stacked))

    def _box(self, key: str, values: Any) -> np.ndarray:
        """One key of all environments' observations (or of one environment's, ``[None]``-batched) as its Box."""
        sub = self.originals[key]
        if isinstance(sub, spaces.Box):
            return np.asarray(values)
        return np.stack([spaces.flatten(sub, value) for value in values]).astype(np.float32)

    def reset(self) -> VecEnvObs:
        observations = self.venv.reset()
        for key, stack in self.stacks.items():
            observations[key] = stack.reset(self._box(key, observations[key]))
        return observations

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = self.venv.step_wait()
        for key, stack in self.stacks.items():
            terminal = [
                {"terminal_observation": self._box(key, [info["terminal_observation"][key]])[0]}
                if "terminal_observation" in info
                else {}
                for info in infos
            ]
            observations[key], terminal = stack.update(self._box(key, observations[key]), dones, terminal)
            for info, stacked in zip(infos, terminal, strict=True):
                if "terminal_observation" in info:
                    info["terminal_observation"][key] = stacked["terminal_observation"]
        return observations, rewards, dones, infos


def _float32(box: spaces.Box) -> spaces.Box:
    return spaces.Box(box.low.astype(np.float32), box.high.astype(np.float32), dtype=np.float32)
