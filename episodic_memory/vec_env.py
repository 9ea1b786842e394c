"""Stable-Baselines3 VecEnv wrapper: one batched memory step for all sub-environments.

This module imports stable-baselines3 (the rest of :mod:`episodic_memory` needs only torch, numpy
and gymnasium); import it as ``from episodic_memory.vec_env import VecEpisodicMemory``.

SB3 vectorised environments reset a finished sub-environment inside ``step``: the observation
they return for it is the first of the next episode, and the last observation of the finished one
is in ``infos[i]["terminal_observation"]``. This wrapper reads that terminal observation from the
finished episode's memory (read-outs only, no write), then returns exactly those memories to the
prior, and writes the new episode's first observation into its fresh memory.

With ``novelty_reward > 0`` the reward of a step gains the exploration bonus of the observation
the step led to: the new observation, or for a finished sub-environment its terminal
observation (read from the finished episode's memory), never the first observation of the next
episode. ``infos[i]["episodic_memory"]`` holds ``extrinsic_reward`` and ``novelty_bonus`` at
every step, so that evaluations can report the extrinsic return.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from episodic_memory.machine import GenerativeMemory
from episodic_memory.readouts import READOUTS, EpisodicMemoryCore, Readout, resolve_machine
from episodic_memory.wrappers import frames_of, memory_observation_space, with_readouts

__all__ = ["VecEpisodicMemory"]


class VecEpisodicMemory(VecEnvWrapper):
    """Adds episodic-memory read-outs to the observations of every sub-environment of ``venv``.

    Same parameters as :class:`~episodic_memory.wrappers.EpisodicMemoryWrapper` (``novelty_reward``
    included: rewards become ``extrinsic + c · n_t / n⁰_t``); the memories of the ``venv.num_envs``
    sub-environments are stepped together in one batched call.

    Wrap a :class:`~stable_baselines3.common.vec_env.VecMonitor` *inside* this wrapper (or a
    ``Monitor`` around each environment) to log extrinsic episode returns; one outside it logs the
    shaped rewards.
    """

    def __init__(
        self,
        venv: VecEnv,
        machine: GenerativeMemory | str | os.PathLike[str],
        readouts: Sequence[Readout] = READOUTS,
        attractor_steps: int = 5,
        obs_key: str | None = None,
        device: str | torch.device = "cpu",
        novelty_reward: float = 0.0,
    ) -> None:
        self.core = EpisodicMemoryCore(resolve_machine(machine, device), venv.num_envs, readouts, attractor_steps, novelty_reward)
        self.obs_key = obs_key
        self.last_step_seconds = 0.0  # wall time of the latest batched memory step
        observation_space, _ = memory_observation_space(venv.observation_space, self.core, obs_key)
        super().__init__(venv, observation_space=observation_space)

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        self.core.reset()
        return self._observe(obs, write=True)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        start = time.perf_counter()
        done = np.asarray(dones, dtype=bool)
        self._check_finite(obs, infos, done)  # before any memory changes: a bad frame must leave every memory as it was
        terminal_bonus = np.zeros(self.num_envs, np.float32)  # of finished sub-environments' last observations
        if done.any():
            terminal_bonus = self._transform_terminal_observations(obs, done, infos)
            self.core.reset(done)
        augmented = self._observe(obs, write=True)
        # the bonus of the observation each step led to: the new one, or the terminal one of a finished episode
        bonus = np.where(done, terminal_bonus, self.core.last_bonus).astype(rewards.dtype)  # [num_envs]
        for i, info in enumerate(infos):
            info["episodic_memory"] = {"extrinsic_reward": float(rewards[i]), "novelty_bonus": float(bonus[i])}
        if self.core.novelty_reward > 0:
            rewards = rewards + bonus
        self.last_step_seconds = time.perf_counter() - start
        return augmented, rewards, dones, infos

    def _check_finite(self, obs: VecEnvObs, infos: list[dict[str, Any]], done: np.ndarray) -> None:
        """Raise ``ValueError`` naming the sub-environments whose new or terminal frames hold NaN or inf."""
        frames = frames_of(obs, self.obs_key)
        if not np.issubdtype(frames.dtype, np.floating):
            return
        bad = [f"{i}" for i in range(self.num_envs) if not np.isfinite(frames[i]).all()]
        bad += [
            f"{i} (terminal observation)"
            for i in np.flatnonzero(done)
            if "terminal_observation" in infos[i]
            and not np.isfinite(frames_of(infos[i]["terminal_observation"], self.obs_key)).all()
        ]
        if bad:
            raise ValueError(f"observations of sub-environment(s) {', '.join(bad)} hold NaN or inf; no memory was changed")

    def _observe(self, obs: VecEnvObs, write: bool) -> dict[str, np.ndarray]:
        return with_readouts(obs, self.core.step(frames_of(obs, self.obs_key), write=write), self.obs_key)

    def _transform_terminal_observations(self, obs: VecEnvObs, done: np.ndarray, infos: list[dict[str, Any]]) -> np.ndarray:
        """Replace each finished sub-environment's ``terminal_observation`` by its wrapped form, read from its old memory.

        Returns the exploration bonus ``[num_envs]`` of those terminal observations (0 elsewhere,
        and for a finished sub-environment that reports no terminal observation).
        """
        bonus = np.zeros(self.num_envs, np.float32)
        finished = [i for i in np.flatnonzero(done) if "terminal_observation" in infos[i]]
        if not finished:
            return bonus
        frames = frames_of(obs, self.obs_key).copy()  # rows of unfinished sub-environments are read and discarded
        for i in finished:
            frames[i] = frames_of(infos[i]["terminal_observation"], self.obs_key)
        readouts = self.core.step(frames, write=False)
        for i in finished:
            readouts_i = {name: value[i] for name, value in readouts.items()}
            infos[i]["terminal_observation"] = with_readouts(infos[i]["terminal_observation"], readouts_i, self.obs_key)
            bonus[i] = self.core.last_bonus[i]
        return bonus
