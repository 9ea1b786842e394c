"""SB3 callbacks for agents with an episodic memory, and the size of the window behind SB3's mean return."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import unwrap_vec_wrapper

from episodic_memory.wrappers.vec_env import VecEpisodicMemory

__all__ = ["EPISODE_WINDOW_KEY", "EpisodeWindowCallback", "MemoryMetricsCallback"]

EPISODE_WINDOW_KEY = "rollout/ep_window"


class EpisodeWindowCallback(BaseCallback):
    """Logs ``rollout/ep_window``, the number of episodes behind ``rollout/ep_rew_mean`` (at most SB3's 100).

    Early in training, and again after a resume, SB3's mean return averages the few episodes that have
    ended, and the first to end are rarely typical (on MiniGrid-Memory the quick ones are the successes:
    a first rollout of a random policy can read 0.85). A training curve counts a point once its window
    is full (:func:`~episodic_memory.train.curves.training_curve`).
    """

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.logger.record(EPISODE_WINDOW_KEY, len(self.model.ep_info_buffer or ()))


class MemoryMetricsCallback(BaseCallback):
    """Logs memory metrics through the SB3 logger (so they reach tensorboard/wandb with the agent's).

    Averaged over each rollout and written under ``memory/``: ``novelty`` (the surprise read-out),
    ``retrieval_error`` (relative distance of the attractor-cleaned code to the observation's
    code) and ``step_ms`` (wall time of one batched memory step: encode, read-outs, write); with
    an exploration bonus (``novelty_reward > 0``) also ``novelty_bonus``, the mean bonus per step.
    The training environment must contain a :class:`VecEpisodicMemory`.
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self._memory: VecEpisodicMemory | None = None
        self._values: dict[str, list[float]] = {"novelty": [], "retrieval_error": [], "step_ms": [], "novelty_bonus": []}

    def _on_training_start(self) -> None:
        memory = unwrap_vec_wrapper(self.training_env, VecEpisodicMemory)
        if memory is None:
            raise ValueError("MemoryMetricsCallback needs a training environment wrapped in VecEpisodicMemory")
        self._memory = memory

    def _on_step(self) -> bool:
        memory = self._memory
        new_obs = self.locals.get("new_obs")
        if isinstance(new_obs, dict) and "novelty" in new_obs:
            self._values["novelty"].append(float(np.mean(new_obs["novelty"])))
        self._values["retrieval_error"].append(memory.core.retrieval_error())
        self._values["step_ms"].append(1e3 * memory.last_step_seconds)
        infos = self.locals.get("infos") or []
        if memory.core.novelty_reward > 0 and infos:
            self._values["novelty_bonus"].append(float(np.mean([info["episodic_memory"]["novelty_bonus"] for info in infos])))
        return True

    def _on_rollout_end(self) -> None:
        for name, values in self._values.items():
            if values:
                self.logger.record(f"memory/{name}", float(np.nanmean(values)))
            values.clear()
