"""Any registered Gymnasium environment, as the command line makes it for collection and agents.

    env = make_env("CartPole-v1")                                   # its own observations, Box(4)
    env = make_env("popgym-RepeatPreviousEasy-v0", imports=("popgym",))
    env = make_env("popgym:popgym-CountRecallEasy-v0")              # Gymnasium imports the module itself
    env = make_env("MiniGrid-MemoryS7-v0", frame_size=32)           # egocentric RGB frames uint8 [32, 32, 3]

MiniGrid ids (and the ``EpisodicMemory-RandomMaze-*`` ids) keep the egocentric frames of
:func:`~episodic_memory.envs.mazes.make_frame_env`; every other id keeps its own observations,
except that observations Stable-Baselines3 policies cannot take are made into ones they can:
``Tuple`` spaces (and Dicts holding a Tuple or a Dict) are flattened, one-hot, by Gymnasium's
``FlattenObservation``. Text keys of a Dict stay; the memory wrappers (and, without memory,
:func:`agent_observations`) leave them out.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from minigrid.minigrid_env import MiniGridEnv

from episodic_memory.envs.mazes import FrameObservation, make_registered
from episodic_memory.models.observations import readable_keys

__all__ = [
    "PreviousAction",
    "agent_observations",
    "import_modules",
    "make_env",
    "random_observations",
    "stackable",
    "time_aware",
]


def import_modules(modules: Sequence[str]) -> None:
    """Import each module (e.g. ``popgym``), which registers its Gymnasium ids.

    :raises ValueError: a module that cannot be imported, with what to install.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ValueError(
                f"--import {module}: cannot import it ({error}); install the package that registers the env ids "
                f"(e.g. `pip install {module.split('.')[0]}`)"
            ) from error


def _needs_flattening(space: gymnasium.Space) -> bool:
    """Whether SB3 policies cannot take ``space``: a Tuple, or a Dict with a Tuple or Dict inside."""
    if isinstance(space, spaces.Tuple):
        return True
    return isinstance(space, spaces.Dict) and any(isinstance(s, (spaces.Tuple, spaces.Dict)) for s in space.spaces.values())


def make_env(
    env_id: str,
    frame_size: int = 32,
    env_kwargs: dict[str, Any] | None = None,
    imports: Sequence[str] = (),
    view: str = "egocentric",
) -> gymnasium.Env:
    """``gymnasium.make(env_id, **env_kwargs)`` as the commands use it (module docstring).

    :param env_id: a registered id, or ``module:Id`` (Gymnasium imports ``module`` first).
    :param frame_size: side of the egocentric frames of MiniGrid ids (other ids ignore it).
    :param env_kwargs: keyword arguments of ``gymnasium.make``.
    :param imports: modules to import first, for ids registered by third-party packages.
    :param view: ``"egocentric"`` or ``"topdown"`` frames of MiniGrid ids (:class:`FrameObservation`).
    :raises ValueError: an id that is not registered (with the closest ones), a module that cannot be
        imported, keyword arguments the environment refuses, or a top-down view of an env that is not MiniGrid.
    """
    import_modules(imports)
    unknown_hint = (
        "Ids of third-party packages need their module imported first: --import MODULE (e.g. --import popgym), "
        "or an id of the form module:Env-v0; `python -c 'import gymnasium; gymnasium.pprint_registry()'` lists the "
        "registered ids."
    )
    try:
        env = make_registered(env_id, unknown_hint, **(env_kwargs or {}))
    except ModuleNotFoundError as error:
        raise ValueError(f"env id {env_id!r}: cannot import its module ({error})") from error
    except TypeError as error:
        raise ValueError(f"env id {env_id!r} refuses the keyword arguments {env_kwargs!r} ({error}); see --env-kwargs") from error
    if isinstance(env.unwrapped, MiniGridEnv):
        return FrameObservation(env, frame_size=frame_size, view=view)
    if view != "egocentric":
        env.close()
        raise ValueError(f"view {view!r} is for MiniGrid ids only; {env_id!r} records its own observations")
    if _needs_flattening(env.observation_space):
        return gymnasium.wrappers.FlattenObservation(env)
    return env


def agent_observations(env: gymnasium.Env) -> gymnasium.Env:
    """``env`` with Dict observations, as agents without a memory see them: ``{"observation": obs}``, or the
    env's own Dict without its text keys (SB3's vectorised environments cannot hold strings)."""
    space = env.observation_space
    if isinstance(space, spaces.Dict):
        keys = readable_keys(space)
        return env if len(keys) == len(space.spaces) else gymnasium.wrappers.FilterObservation(env, list(keys))
    return gymnasium.wrappers.TransformObservation(env, lambda obs: {"observation": obs}, spaces.Dict({"observation": space}))


def stackable(env: gymnasium.Env) -> gymnasium.Env:
    """``env`` with Box observations, as SB3's ``VecFrameStack`` needs: a Box stays as it is; anything else loses
    its text keys and is flattened one-hot (Gymnasium's ``FlattenObservation``)."""
    space = env.observation_space
    if isinstance(space, spaces.Box):
        return env
    if isinstance(space, spaces.Dict) and len(readable_keys(space)) < len(space.spaces):
        env = gymnasium.wrappers.FilterObservation(env, list(readable_keys(space)))
    return gymnasium.wrappers.FlattenObservation(env)


def time_aware(env: gymnasium.Env) -> gymnasium.Env:
    """``env`` with the elapsed fraction of its step limit, ``t / T``, appended to a flat observation (Gymnasium's
    ``TimeAwareObservation``, normalised and flattened; discrete observations one-hot).

    ``T`` is the limit of the env's spec (``max_episode_steps``), or else one more than the env's own step limit
    (POPGym's ``max_episode_length``, MiniGrid's ``max_steps``), held by a ``TimeLimit`` that therefore never ends
    an episode before the env does. Episodes of a fixed length (POPGym's) let a value function read the return left
    from it.

    :raises ValueError: for image observations (flattening would destroy them), or an env without a step limit.
    """
    space = env.observation_space
    if isinstance(space, spaces.Dict) or (isinstance(space, spaces.Box) and len(space.shape) == 3):
        raise ValueError(f"--time-feature appends t/T to a flat observation; this env's observations are {space}")
    if env.spec is None or env.spec.max_episode_steps is None:
        limit = getattr(env.unwrapped, "max_episode_length", None) or getattr(env.unwrapped, "max_steps", None)
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(
                "--time-feature needs the env's step limit: this env has no max_episode_steps in its spec and no "
                "max_episode_length or max_steps; set one with --env-kwargs '{\"max_episode_steps\": N}'"
            )
        env = gymnasium.wrappers.TimeLimit(env, limit + 1)
    return gymnasium.wrappers.TimeAwareObservation(env, flatten=True, normalize_time=True)


class PreviousAction(gymnasium.Wrapper, gymnasium.utils.RecordConstructorArgs):
    """The previous action beside the observation, ``(obs, a_{t-1})``, flattened one-hot (POPGym's ``PreviousAction``
    for any env: POPGym marks the envs whose observations do not say what the agent did, e.g. MineSweeper's count of
    mines next to a clicked tile without the tile, ``obs_requires_prev_action``).

    Before the first action there is none, and the observation says so: a ``Discrete(n)`` action becomes
    ``Discrete(n + 1)`` (``n``: none yet) and each entry of a ``MultiDiscrete`` one gains a value, where POPGym's
    null action 0 could not be told from the action 0 without its ``Antialias`` flag. ``Box`` and ``MultiBinary``
    actions enter as they are (zeros first) with a first-step flag (1 before the first action).

    :raises ValueError: image or Dict observations (flattening would destroy or mix them), or another action space.
    """

    def __init__(self, env: gymnasium.Env) -> None:
        gymnasium.utils.RecordConstructorArgs.__init__(self)
        gymnasium.Wrapper.__init__(self, env)
        space, action_space = env.observation_space, env.action_space
        if isinstance(space, spaces.Dict) or (isinstance(space, spaces.Box) and len(space.shape) == 3):
            raise ValueError(f"--previous-action appends the action to a flat observation; this env's observations are {space}")
        if isinstance(action_space, spaces.Discrete):
            action_part: spaces.Space = spaces.Discrete(int(action_space.n) + 1)
        elif isinstance(action_space, spaces.MultiDiscrete):
            action_part = spaces.MultiDiscrete(action_space.nvec + 1)
        elif isinstance(action_space, (spaces.Box, spaces.MultiBinary)):
            action_part = spaces.Tuple((action_space, spaces.MultiBinary(1)))
        else:
            raise ValueError(f"--previous-action takes Discrete, MultiDiscrete, MultiBinary or Box actions, got {action_space}")
        self._pair = spaces.Tuple((space, action_part))
        self.observation_space = spaces.flatten_space(self._pair)
        # no action yet: the extra value, or zeros and the first-step flag
        if isinstance(action_space, spaces.Discrete):
            self._none: Any = int(action_space.n)
        elif isinstance(action_space, spaces.MultiDiscrete):
            self._none = action_space.nvec.copy()
        else:
            self._none = (np.zeros(action_space.shape, action_space.dtype), np.ones(1, np.int8))

    def _observation(self, obs: Any, action: Any) -> np.ndarray:
        action_space = self.env.action_space
        part: Any
        if action is None:
            part = self._none
        elif isinstance(action_space, spaces.Discrete):
            part = int(np.asarray(action).item()) - int(action_space.start)
        elif isinstance(action_space, spaces.MultiDiscrete):
            part = np.asarray(action, dtype=np.int64) - action_space.start
        else:
            part = (np.asarray(action, dtype=action_space.dtype).reshape(action_space.shape), np.zeros(1, np.int8))
        return spaces.flatten(self._pair, (obs, part)).astype(self.observation_space.dtype, copy=False)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return self._observation(obs, None), info

    def step(self, action: Any) -> tuple[np.ndarray, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observation(obs, action), reward, terminated, truncated, info


def random_observations(env: gymnasium.Env, steps: int, seed: int) -> list[Any]:
    """The ``steps`` observations of a random walk in ``env``: ``reset(seed=seed)``, then uniformly random
    actions (the action space seeded by ``seed``), resetting when an episode ends; the same seed gives the
    same walk."""
    env.action_space.seed(seed)
    observation, _ = env.reset(seed=seed)
    walk = [observation]
    while len(walk) < steps:
        observation, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            observation, _ = env.reset()
        walk.append(observation)
    return walk
