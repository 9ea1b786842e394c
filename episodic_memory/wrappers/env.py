"""Gymnasium wrapper that gives an agent an episodic memory of what it has seen.

Every episode starts from the memory prior; at every step the observation is encoded, read-outs
are computed from the memory before it is written, then it is written (see
:mod:`episodic_memory.wrappers.core`). Reads are deterministic (posterior means), so seeded resets
repeat exactly.

The frames go to the machine as they are: the machine's own preprocessing (saved in its config)
scales them and resizes images of another height and width to the size it was trained on.
With ``novelty_reward > 0`` every step's reward gains an episodic exploration bonus; the
extrinsic reward and the bonus are reported in ``info["episodic_memory"]``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from episodic_memory.models.machine import GenerativeMemory
from episodic_memory.models.observations import ObservationEncoding, batch_of_one, readable_keys
from episodic_memory.wrappers.core import EpisodicMemoryCore, Readout, RecallSource, resolve_machine

__all__ = [
    "EpisodicMemoryVectorWrapper",
    "EpisodicMemoryWrapper",
    "MemoryObservation",
    "batch_of_one",
    "memory_observation_space",
]


@dataclass(frozen=True)
class MemoryObservation:
    """What the wrappers read from an environment's observations and what they hand the agent.

    :param encoding: how the memory reads the observations (:class:`~episodic_memory.models.observations.ObservationEncoding`).
    :param keys: the environment's Dict keys the agent keeps (all but the ``Text`` ones); None for other
        spaces, whose observation the agent gets as ``observation``.
    :param observation: False to hand the agent the read-outs only.
    """

    encoding: ObservationEncoding
    keys: tuple[str, ...] | None
    observation: bool

    def frames(self, obs: Any, batch: int) -> np.ndarray:
        """The frames the memory reads ``[B, *frame_shape]`` of a batch of observations."""
        return self.encoding.encode(obs, batch)

    def wrap(self, obs: Any, readouts: dict[str, np.ndarray]) -> dict[str, Any]:
        """The agent's observation: the environment's (its keys, or ``observation``) unless left out, plus the read-outs."""
        if not self.observation:
            return dict(readouts)
        base = {key: obs[key] for key in self.keys} if self.keys is not None else {"observation": obs}
        return {**base, **readouts}


def memory_observation_space(
    observation_space: gymnasium.Space, core: EpisodicMemoryCore, obs_key: str | Sequence[str] | None, observation: bool = True
) -> tuple[spaces.Dict, MemoryObservation]:
    """The wrapped ``Dict`` space and how observations are read and wrapped.

    Any space the memory can encode is read (:mod:`episodic_memory.models.observations`): images as they
    are, other spaces one-hot encoded and flattened; for ``Dict`` observations ``obs_key`` names
    the key (or keys) the memory reads, every non-Text key when None. The agent's observation is
    ``{"observation": obs, **read-outs}``, or for a Dict the original keys without the ``Text``
    ones (SB3's vectorised environments cannot hold strings; MiniGrid's ``mission``) plus the
    read-outs; with ``observation=False`` the read-outs only. The read-out boxes are unbounded
    (codes and the memory's mean have no a priori bound) except for novelty, a sum of squares in
    ``[0, inf)``.

    :raises ValueError: a space or key the memory cannot read, observations the machine cannot
        read (another rank, channel count or vector size than its input; images of another height
        and width are fine, it resizes them; another space than the one it was built for; values
        outside its likelihood's range), or keys that clash with the read-outs.
    """
    encoding = ObservationEncoding.for_space(observation_space, obs_key)
    problem = core.machine.cannot_read(encoding)
    if problem is not None:
        raise ValueError(
            f"observations {observation_space}: frames of shape {encoding.frame_shape} do not fit the memory's machine, "
            f"which expects {tuple(core.machine.input_shape)}: {problem}; train (or load) a machine for these "
            f"observations, or build one with {type(core.machine).__name__}.for_space(env.observation_space)"
        )
    keys = readable_keys(observation_space) if isinstance(observation_space, spaces.Dict) else None
    if not observation:
        base: dict[str, gymnasium.Space] = {}
    elif keys is not None:
        base = {key: observation_space.spaces[key] for key in keys}
    else:
        base = {"observation": observation_space}
    clash = sorted(set(base) & set(core.readouts))
    if clash:
        raise ValueError(f"observation keys {clash} clash with the memory read-outs; rename them first")
    if not base and not core.readouts:
        raise ValueError("with observation=False the agent sees the read-outs only: select at least one read-out")
    low = {"novelty": 0.0} if core.backend.nonnegative_novelty else {}  # a surprise >= 0; the rest has no a priori bound
    readouts = {name: spaces.Box(low.get(name, -np.inf), np.inf, shape, np.float32) for name, shape in core.shapes().items()}
    return spaces.Dict({**base, **readouts}), MemoryObservation(encoding, keys, observation)


class EpisodicMemoryWrapper(gymnasium.Wrapper, gymnasium.utils.RecordConstructorArgs):
    """Adds episodic-memory read-outs to the observations of one environment.

    :param env: the environment. Any observation space the memory encodes (Box, Discrete,
        MultiDiscrete, MultiBinary, Tuple, Dict; see :func:`memory_observation_space`) that the
        machine reads: images of its input shape or of another height and width with the same
        channels, which its preprocessing resizes (e.g. MiniGrid's 56 x 56 RGB views for a machine
        trained on 32 x 32 frames); the space it was built for (``DynamicKanervaMachine.for_space``).
    :param machine: a trained (or freshly built) DKM or KM, or the path of its checkpoint.
    :param readouts: any of the backend's read-outs (the Kanerva backends': ``"retrieval"`` (C floats),
        ``"novelty"`` (1 float), ``"memory"`` (K x C); the classical ones': ``"retrieval"``, ``"novelty"``)
        ``"code"`` (C floats, the observation's own code), ``"recall"`` (L x C, with ``recall_lags`` or
        ``recall_positions``) and ``"recall_sum"`` (C floats, the sum of the episode's recalled steps); None
        (default): every read-out of the backend, and ``recall`` when there are lags or positions.
    :param attractor_steps: iterations of the backend's retrieval dynamics (the DKM's code-space attractor).
    :param obs_key: for ``Dict`` observations, the key (or keys, flattened together) the memory reads;
        None reads every key but the ``Text`` ones.
    :param device: where the memory runs.
    :param novelty_reward: ``c >= 0``. Every step's reward becomes ``extrinsic + c · n_t / n⁰_t``:
        ``n_t`` is the novelty read-out of the new observation (memory before its write, computed
        whether or not ``"novelty"`` is a selected read-out), ``n⁰_t`` its novelty under the empty
        memory. The ratio is 1 for an episode's first view, lower for a view new to the episode
        (0.3-0.5 with a pretrained MiniGrid DKM, 0.4 with a fresh calibrated one) and near 0 for one
        it has seen (see :mod:`episodic_memory.wrappers.core`, ``benchmarks/fresh_memory.py``). 0 (the
        default) leaves rewards untouched. Each step's ``info["episodic_memory"]`` holds
        ``novelty``, ``extrinsic_reward`` and ``novelty_bonus``.
    :param observation: False hands the agent the read-outs only, without the environment's observation.
    :param backend: the memory, a name of :data:`episodic_memory.registry.BACKENDS` (e.g. ``"hopfield-storkey"``,
        ``"store-everything"``) run on the machine's codes; None (default): the machine's own Kanerva memory.
    :param recall_lags: steps back (1: the previous observation) whose codes a second, time-addressed memory returns
        in the ``recall`` read-out ``[L, C]`` (:mod:`episodic_memory.wrappers.core`).
    :param recall_positions: steps from the episode's start (0: its first observation) whose codes ``recall`` returns
        after the lags'. Neither lags nor positions (default): no ``recall``.
    :param recall_slots: K of the time-addressed memory: it recalls exactly while an episode has at most K steps.
    :param recall_source: what the time-addressed memory keeps: ``"code"`` (default), or ``"observation"``, the
        observations as the machine reads them (flattened; a one-hot vector for a ``Discrete`` space), so that
        ``recall`` returns them as they were and ``C`` is their size.

    Example::

        env = EpisodicMemoryWrapper(make_frame_env("MiniGrid-MemoryS7-v0"), "runs/dkm/model.safetensors")
        obs, info = env.reset(seed=0)
        obs["observation"].shape, obs["retrieval"].shape, obs["novelty"].shape, obs["memory"].shape
        # ((32, 32, 3), (100,), (1,), (32, 100))
    """

    def __init__(
        self,
        env: gymnasium.Env,
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
        gymnasium.utils.RecordConstructorArgs.__init__(
            self,
            machine=machine,
            readouts=readouts,
            attractor_steps=attractor_steps,
            obs_key=obs_key,
            device=device,
            novelty_reward=novelty_reward,
            observation=observation,
            backend=backend,
            recall_lags=recall_lags,
            recall_positions=recall_positions,
            recall_slots=recall_slots,
            recall_source=recall_source,
        )
        gymnasium.Wrapper.__init__(self, env)
        self.core = EpisodicMemoryCore(
            resolve_machine(machine, device),
            1,
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
        self.last_step_seconds = 0.0  # wall time of the latest memory step (encode, read-outs, write)
        self.observation_space, self.layout = memory_observation_space(env.observation_space, self.core, obs_key, observation)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.core.reset()
        return self._observe(obs, info)

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self._observe(obs, info)
        bonus = float(self.core.last_bonus[0])
        info["episodic_memory"].update(extrinsic_reward=float(reward), novelty_bonus=bonus)
        if self.core.novelty_reward > 0:
            reward = float(reward) + bonus
        return obs, reward, terminated, truncated, info

    def _observe(self, obs: Any, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        start = time.perf_counter()
        readouts = self.core.step(self.layout.frames(batch_of_one(obs), 1))
        self.last_step_seconds = time.perf_counter() - start  # not in info: info must repeat exactly under a seed
        stats = {"novelty": float(self.core.last_novelty[0])}
        return self.layout.wrap(obs, {name: value[0] for name, value in readouts.items()}), {
            **info,
            "episodic_memory": stats,
        }


class EpisodicMemoryVectorWrapper(gymnasium.vector.VectorWrapper):
    """Adds episodic-memory read-outs to a Gymnasium vector environment (next-step or same-step auto-reset).

    Same parameters as :class:`EpisodicMemoryWrapper`; all memories are stepped in one batched
    call. Every episode starts from the memory prior; how its end is handled follows the vector
    environment's ``autoreset_mode``:

    - ``AutoresetMode.NEXT_STEP`` (Gymnasium's default): a sub-environment whose episode ended on
      step t returns the first observation of its next episode on step t + 1. That observation
      starts a fresh memory and is never written into the old one. With ``novelty_reward > 0``
      the rewards gain the bonus of each new observation, except on a sub-environment's reset
      step (no transition, reward 0).
    - ``AutoresetMode.SAME_STEP``: the step that ends an episode returns the first observation of
      the next one, and the finished episode's last observation is in ``info["final_obs"][i]``
      (mask ``info["_final_obs"]``). That final observation is read from the finished episode's
      memory (read-outs only, no write) and replaced by its wrapped form, the memory returns to
      the prior, and the new first observation is written into it. With ``novelty_reward > 0``
      the terminal step's reward gains the bonus of the final observation, the transition's,
      never that of the next episode's first observation.

    ``AutoresetMode.DISABLED`` is refused: its resets go through partial ``reset`` calls
    (``options["reset_mask"]``), which this wrapper does not support. ``info["episodic_memory"]``
    holds ``extrinsic_reward`` and ``novelty_bonus`` arrays (with Gymnasium's ``_``-prefixed masks).

    :raises ValueError: for ``AutoresetMode.DISABLED`` or an ``autoreset_mode`` Gymnasium does not know.
    """

    def __init__(
        self,
        env: gymnasium.vector.VectorEnv,
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
        super().__init__(env)
        self.autoreset_mode = _autoreset_mode(env)
        self.core = EpisodicMemoryCore(
            resolve_machine(machine, device),
            env.num_envs,
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
        self.single_observation_space, self.layout = memory_observation_space(
            env.single_observation_space, self.core, obs_key, observation
        )
        self.observation_space = gymnasium.vector.utils.batch_space(self.single_observation_space, env.num_envs)
        self._starts_episode = np.zeros(env.num_envs, dtype=bool)  # NEXT_STEP: this step returns reset observations

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if options and "reset_mask" in options:
            raise ValueError(
                "EpisodicMemoryVectorWrapper does not support partial resets (options['reset_mask']); reset all sub-environments"
            )
        obs, info = self.env.reset(seed=seed, options=options)
        self.core.reset()
        self._starts_episode[:] = False
        return self._observe(obs), info

    def step(self, actions: Any) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, rewards, terminations, truncations, info = self.env.step(actions)
        ended = np.logical_or(terminations, truncations)
        if self.autoreset_mode == gymnasium.vector.AutoresetMode.SAME_STEP:
            info, final_bonus = self._wrap_final_observations(obs, ended, info)  # from the memories before the reset
            fresh = ended  # these observations are the first of new episodes
        else:
            fresh = self._starts_episode
        if fresh.any():
            self.core.reset(fresh)
        augmented = self._observe(obs)
        if self.autoreset_mode == gymnasium.vector.AutoresetMode.SAME_STEP:
            bonus = np.where(ended, final_bonus, self.core.last_bonus)  # the transition led to the final observation
        else:
            bonus = np.where(fresh, 0.0, self.core.last_bonus)  # a reset step has no transition to reward
        every = np.ones(self.num_envs, dtype=bool)
        info = {
            **info,
            "episodic_memory": {
                "extrinsic_reward": np.asarray(rewards).copy(),
                "_extrinsic_reward": every,
                "novelty_bonus": bonus,
                "_novelty_bonus": every,
            },
            "_episodic_memory": every,
        }
        if self.core.novelty_reward > 0:
            rewards = rewards + bonus
        if self.autoreset_mode == gymnasium.vector.AutoresetMode.NEXT_STEP:
            self._starts_episode = ended
        return augmented, rewards, terminations, truncations, info

    def _observe(self, obs: Any) -> dict[str, Any]:
        return self.layout.wrap(obs, self.core.step(self.layout.frames(obs, self.num_envs)))

    def _wrap_final_observations(self, obs: Any, ended: np.ndarray, info: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
        """SAME_STEP: ``info`` with each finished sub-environment's ``final_obs`` wrapped, read from its memory without a write.

        Returns the new ``info`` (the vector environment's own is left as it was) and the
        exploration bonus ``[num_envs]`` of those final observations (0 elsewhere).
        """
        bonus = np.zeros(self.num_envs, np.float32)
        has_final = np.asarray(info.get("_final_obs", np.zeros(self.num_envs, dtype=bool)), dtype=bool)
        finished = np.flatnonzero(ended & has_final)
        if len(finished) == 0:
            return info, bonus
        final_obs = np.empty(self.num_envs, dtype=object)  # [num_envs] of observations or None, a copy
        for i in range(self.num_envs):  # one by one: numpy would stack same-shape arrays into one block
            final_obs[i] = info["final_obs"][i]
        frames = self.layout.frames(obs, self.num_envs).copy()  # rows of unfinished sub-environments are read and discarded
        for i in finished:
            frames[i] = self.layout.frames(batch_of_one(final_obs[i]), 1)[0]
        readouts = self.core.step(frames, write=False)
        for i in finished:
            final_obs[i] = self.layout.wrap(final_obs[i], {name: value[i] for name, value in readouts.items()})
            bonus[i] = self.core.last_bonus[i]
        return {**info, "final_obs": final_obs}, bonus


def _autoreset_mode(env: gymnasium.vector.VectorEnv) -> gymnasium.vector.AutoresetMode:
    """The vector environment's ``metadata["autoreset_mode"]`` (NEXT_STEP when absent), if the wrapper supports it."""
    supported = (gymnasium.vector.AutoresetMode.NEXT_STEP, gymnasium.vector.AutoresetMode.SAME_STEP)
    declared = env.metadata.get("autoreset_mode", gymnasium.vector.AutoresetMode.NEXT_STEP)
    mode: gymnasium.vector.AutoresetMode | None
    try:
        mode = gymnasium.vector.AutoresetMode(declared)
    except ValueError:
        mode = None
    if mode not in supported:
        raise ValueError(
            "EpisodicMemoryVectorWrapper supports autoreset_mode AutoresetMode.NEXT_STEP (Gymnasium's default) or "
            f"AutoresetMode.SAME_STEP, actual value: {declared!r}; make the vector environment with one of them, e.g. "
            'gymnasium.make_vec(..., vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})'
        )
    return mode
