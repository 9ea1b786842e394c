"""Stable-Baselines3 VecEnv wrapper: one batched memory step for all sub-environments.

This module imports stable-baselines3 (the rest of :mod:`episodic_memory` needs only torch, numpy
and gymnasium); import it as ``from episodic_memory.wrappers.vec_env import VecEpisodicMemory``.

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

from episodic_memory.models.machine import GenerativeMemory
from episodic_memory.wrappers.core import EpisodicMemoryCore, Readout, RecallSource, resolve_machine
from episodic_memory.wrappers.env import batch_of_one, memory_observation_space

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
        readouts: Sequence[Readout] | None = None,
        attractor_steps: int = 5,
        obs_key: str | Sequence[str] | None = None,
        device: str | torch.device = "cpu",
        novelty_reward: float = 0.0,
        observation: bool = True,
        backend: str | None = None,
        recall_lags: Sequence[int] = (),
        recall_positions: Sequence[int] = (),
        recall_slots: int = 64,
        recall_source: RecallSource = "code",
    ) -> None:
        self.core = EpisodicMemoryCore(
            resolve_machine(machine, device),
            venv.num_envs,
            readouts,
            attractor_steps,
            novelty_reward,
            backend,
            recall_lags,
            recall_positions,
            recall_slots,
            recall_source,
        )
        self.obs_key = obs_key
        self.last_step_seconds = 0.0  # wall time of the latest batched memory step
        observation_space, self.layout = memory_observation_space(venv.observation_space, self.core, obs_key, observation)
        super().__init__(venv, observation_space=observation_space)

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        self.core.reset()
        return self.layout.wrap(obs, self.core.step(self.layout.frames(obs, self.num_envs)))

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        start = time.perf_counter()
        done = np.asarray(dones, dtype=bool)
        # every frame is read and checked before any memory changes: a bad one must leave every memory as it was
        frames = self.layout.frames(obs, self.num_envs)
        finished = [i for i in np.flatnonzero(done) if "terminal_observation" in infos[i]]
        terminal = {i: self.layout.frames(batch_of_one(infos[i]["terminal_observation"]), 1)[0] for i in finished}
        self._check_finite(frames, terminal)
        terminal_bonus = np.zeros(self.num_envs, np.float32)  # of finished sub-environments' last observations
        if done.any():
            terminal_bonus = self._transform_terminal_observations(frames, terminal, infos)
            self.core.reset(done)
        augmented = self.layout.wrap(obs, self.core.step(frames))
        # the bonus of the observation each step led to: the new one, or the terminal one of a finished episode
        bonus = np.where(done, terminal_bonus, self.core.last_bonus).astype(rewards.dtype)  # [num_envs]
        for i, info in enumerate(infos):
            info["episodic_memory"] = {"extrinsic_reward": float(rewards[i]), "novelty_bonus": float(bonus[i])}
        if self.core.novelty_reward > 0:
            rewards = rewards + bonus
        self.last_step_seconds = time.perf_counter() - start
        return augmented, rewards, dones, infos

    def _check_finite(self, frames: np.ndarray, terminal: dict[int, np.ndarray]) -> None:
        """Raise ``ValueError`` naming the sub-environments whose new or terminal frames hold NaN or inf."""
        if not np.issubdtype(frames.dtype, np.floating):
            return
        bad = [f"{i}" for i in range(self.num_envs) if not np.isfinite(frames[i]).all()]
        bad += [f"{i} (terminal observation)" for i, frame in terminal.items() if not np.isfinite(frame).all()]
        if bad:
            raise ValueError(f"observations of sub-environment(s) {', '.join(bad)} hold NaN or inf; no memory was changed")

    def _transform_terminal_observations(
        self, frames: np.ndarray, terminal: dict[int, np.ndarray], infos: list[dict[str, Any]]
    ) -> np.ndarray:
        """Replace each finished sub-environment's ``terminal_observation`` by its wrapped form, read from its old memory.

        :param frames: the frames of the new observations ``[num_envs, *frame_shape]``.
        :param terminal: the frames of the terminal observations, by sub-environment.
        :return: the exploration bonus ``[num_envs]`` of those terminal observations (0 elsewhere,
            and for a finished sub-environment that reports no terminal observation).
        """
        bonus = np.zeros(self.num_envs, np.float32)
        if not terminal:
            return bonus
        frames = frames.copy()  # rows of unfinished sub-environments are read and discarded
        for i, frame in terminal.items():
            frames[i] = frame
        readouts = self.core.step(frames, write=False)
        for i in terminal:
            readouts_i = {name: value[i] for name, value in readouts.items()}
            infos[i]["terminal_observation"] = self.layout.wrap(infos[i]["terminal_observation"], readouts_i)
            bonus[i] = self.core.last_bonus[i]
        return bonus
