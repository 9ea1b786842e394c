"""Maze environments (MiniGrid) and their observations as small RGB frames.

Shape convention (every array in this module):

- ``S``: frame side in pixels (``frame_size``), frames are square;
- a frame is ``uint8 [S, S, 3]`` (height, width, RGB), the layout Gymnasium and MiniGrid use.

A *layout* (the walls, objects, start and goal of one maze) is fixed by the pair
``(env id, reset seed)``: MiniGrid regenerates the grid from ``env.np_random`` at every reset,
so ``env.reset(seed=s)`` always rebuilds the same maze. :func:`layout_id` names that pair.

Example::

    env = make_frame_env("EpisodicMemory-RandomMaze-S11-v0", frame_size=32)
    frame, info = env.reset(seed=3)    # uint8 [32, 32, 3], the agent's point of view
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Literal

import gymnasium
import minigrid  # noqa: F401  (registers the MiniGrid-* ids)
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import Goal
from minigrid.minigrid_env import MiniGridEnv

__all__ = [
    "DEFAULT_MAZES",
    "LIST_ENVS_HINT",
    "RANDOM_MAZE_SIZES",
    "VIEWS",
    "FrameObservation",
    "RandomMazeEnv",
    "layout_id",
    "make_frame_env",
    "make_registered",
    "random_maze_id",
    "register_envs",
]

RANDOM_MAZE_SIZES: tuple[int, ...] = (9, 11, 15, 21)
"""Grid sizes of the registered ``EpisodicMemory-RandomMaze-S{n}-v0`` ids."""

VIEWS: tuple[str, ...] = ("egocentric", "topdown")
"""Valid values of the ``view`` argument of :class:`FrameObservation`."""


def random_maze_id(size: int) -> str:
    """The Gymnasium id of the random maze of side ``size``: ``EpisodicMemory-RandomMaze-S{size}-v0``."""
    return f"EpisodicMemory-RandomMaze-S{size}-v0"


LIST_ENVS_HINT = "python -c 'import episodic_memory.envs, gymnasium; gymnasium.pprint_registry()'"
"""The command that lists every registered Gymnasium id (frames need a MiniGrid-* or EpisodicMemory-* one)."""

DEFAULT_MAZES: tuple[str, ...] = (
    random_maze_id(9),
    random_maze_id(15),
    random_maze_id(21),
    "MiniGrid-FourRooms-v0",
    "MiniGrid-MultiRoom-N4-S5-v1",
    "MiniGrid-MemoryS7-v0",
    "MiniGrid-MemoryS11-v0",
)
"""The default suite for frame collection: random perfect mazes of three sizes, rooms joined by
gaps (FourRooms) or doors (MultiRoom: 4 rooms; minigrid 3.2 keeps ``-N4-S5-v0`` with 6 rooms for
backward compatibility) and the corridors and objects of the Memory tasks."""


def layout_id(env_id: str, seed: int) -> str:
    """The name of the layout that ``gymnasium.make(env_id).reset(seed=seed)`` generates: ``"{env_id}/{seed}"``."""
    return f"{env_id}/{seed}"


class RandomMazeEnv(MiniGridEnv):
    """A random perfect maze: every two free cells are joined by exactly one path.

    The maze is carved by a recursive backtracker (depth-first search with a stack) on the
    ``m × m`` cells at odd coordinates of a ``size × size`` grid, ``m = (size - 1) // 2``; the
    agent (random position and direction) and a green goal are then placed on random free
    cells. Everything is drawn from ``self.np_random``, so ``reset(seed=s)`` fixes the layout.
    Reaching the goal pays ``1 - 0.9 * step_count / max_steps`` and ends the episode.

    :param size: side of the grid, walls included; an odd int ``>= 5``.
    :param max_steps: steps before truncation; ``None`` means ``4 * size**2``, room enough to
        walk (and turn along) the longest path of the maze several times.
    :param kwargs: passed to :class:`minigrid.minigrid_env.MiniGridEnv` (e.g. ``render_mode``,
        ``agent_view_size``, ``see_through_walls``).
    """

    def __init__(self, size: int = 11, max_steps: int | None = None, **kwargs: Any) -> None:
        if not isinstance(size, int) or size < 5 or size % 2 == 0:
            raise ValueError(f"size must be an odd int >= 5, actual value: {size!r}")
        if max_steps is None:
            max_steps = 4 * size**2
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive int or None, actual value: {max_steps!r}")
        self.size = size
        super().__init__(
            mission_space=MissionSpace(mission_func=self._gen_mission),
            grid_size=size,
            max_steps=max_steps,
            **kwargs,
        )

    @staticmethod
    def _gen_mission() -> str:
        return "get to the green goal square"

    def _gen_grid(self, width: int, height: int) -> None:
        self.grid = Grid(width, height)
        for y in range(height):
            self.grid.horz_wall(0, y, width)
        m = (width - 1) // 2  # cells per side; cell (a, b) sits at grid position (2a + 1, 2b + 1)
        visited = np.zeros((m, m), dtype=bool)
        start = (int(self.np_random.integers(m)), int(self.np_random.integers(m)))
        visited[start] = True
        self.grid.set(2 * start[0] + 1, 2 * start[1] + 1, None)
        stack = [start]
        while stack:
            a, b = stack[-1]
            moves = [
                (da, db)
                for da, db in ((1, 0), (-1, 0), (0, 1), (0, -1))
                if 0 <= a + da < m and 0 <= b + db < m and not visited[a + da, b + db]
            ]
            if not moves:
                stack.pop()
                continue
            da, db = moves[int(self.np_random.integers(len(moves)))]
            self.grid.set(2 * a + 1 + da, 2 * b + 1 + db, None)  # the wall between the two cells
            self.grid.set(2 * (a + da) + 1, 2 * (b + db) + 1, None)
            visited[a + da, b + db] = True
            stack.append((a + da, b + db))
        self.place_obj(Goal())
        self.place_agent()
        self.mission = self._gen_mission()


def register_envs() -> None:
    """Register ``EpisodicMemory-RandomMaze-S{n}-v0`` for n in :data:`RANDOM_MAZE_SIZES`; calling it again is a no-op."""
    for size in RANDOM_MAZE_SIZES:
        env_id = random_maze_id(size)
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point="episodic_memory.envs.mazes:RandomMazeEnv", kwargs={"size": size})


class FrameObservation(gymnasium.ObservationWrapper, gymnasium.utils.RecordConstructorArgs):
    """Replace a MiniGrid observation by one RGB frame ``uint8 [S, S, 3]``.

    - ``view="egocentric"``: what the agent sees, its ``agent_view_size`` cells ahead and to the
      sides, walls occluding, the agent at the bottom centre facing up (the render of MiniGrid's
      :class:`~minigrid.wrappers.RGBImgPartialObsWrapper`);
    - ``view="topdown"``: the whole grid from above, with the agent and (if the env's
      ``highlight`` is on) its field of view (the render of :class:`~minigrid.wrappers.RGBImgObsWrapper`);
      a non-square grid is padded with black to a square first.

    The frame is rendered here with the same ``get_frame`` call as those wrappers rather than by
    wrapping them: they do not record their constructor arguments, so an env made with them
    could not be recreated from its spec (``check_env`` and vector envs do that).

    The render (``tile_size`` pixels per cell) is area-resized to ``S × S``: each output pixel is
    the mean of the render pixels it covers, rounded.

    :param env: a Gymnasium env whose ``unwrapped`` is a :class:`~minigrid.minigrid_env.MiniGridEnv`.
    :param frame_size: S, side of the frame in pixels.
    :param view: ``"egocentric"`` or ``"topdown"``.
    :param tile_size: pixels per grid cell of the render before resizing; ``None`` picks the
        smallest tile whose render is at least ``2 * frame_size`` pixels wide, so that resizing
        averages at least 2×2 render pixels per frame pixel.

    Example::

        >>> env = FrameObservation(gymnasium.make("MiniGrid-FourRooms-v0"), frame_size=32)
        >>> env.observation_space
        Box(0, 255, (32, 32, 3), uint8)
    """

    def __init__(
        self,
        env: gymnasium.Env,
        frame_size: int = 32,
        view: Literal["egocentric", "topdown"] = "egocentric",
        tile_size: int | None = None,
    ) -> None:
        if not isinstance(env.unwrapped, MiniGridEnv):
            raise TypeError(f"FrameObservation expects a MiniGrid env, actual value: {env.unwrapped!r}")
        if not isinstance(frame_size, int) or frame_size < 1:
            raise ValueError(f"frame_size must be a positive int, actual value: {frame_size!r}")
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, actual value: {view!r}")
        base = env.unwrapped
        if view == "egocentric":
            cells = base.agent_view_size
        else:
            cells = max(base.width, base.height)
        if tile_size is None:
            tile_size = math.ceil(2 * frame_size / cells)
        if not isinstance(tile_size, int) or tile_size < 1:
            raise ValueError(f"tile_size must be a positive int or None, actual value: {tile_size!r}")
        gymnasium.utils.RecordConstructorArgs.__init__(self, frame_size=frame_size, view=view, tile_size=tile_size)
        gymnasium.ObservationWrapper.__init__(self, env)
        self.frame_size = frame_size
        self.view = view
        self.tile_size = tile_size
        self.observation_space = spaces.Box(0, 255, (frame_size, frame_size, 3), np.uint8)

    def observation(self, observation: dict[str, Any]) -> np.ndarray:
        """The frame ``uint8 [S, S, 3]`` of the env's current state (the symbolic ``observation`` is not used)."""
        base = self.unwrapped
        if self.view == "egocentric":
            image = base.get_frame(tile_size=self.tile_size, agent_pov=True)  # [h, w, 3]
        else:
            image = base.get_frame(highlight=base.highlight, tile_size=self.tile_size)  # [h, w, 3]
        h, w = image.shape[:2]
        if h != w:
            side = max(h, w)
            top, left = (side - h) // 2, (side - w) // 2
            image = np.pad(image, ((top, side - h - top), (left, side - w - left), (0, 0)))  # [side, side, 3]
        if image.shape[0] == self.frame_size:
            return np.ascontiguousarray(image, dtype=np.uint8)
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()  # [1, 3, side, side]
        x = F.interpolate(x, size=(self.frame_size, self.frame_size), mode="area")  # [1, 3, S, S]
        return x.round_()[0].permute(1, 2, 0).to(torch.uint8).contiguous().numpy()  # [S, S, 3]


def make_registered(env_id: str, unknown_hint: str, **kwargs: Any) -> gymnasium.Env:
    """``gymnasium.make(env_id, **kwargs)`` after :func:`register_envs`; an unregistered id is a ValueError that
    names the closest registered ids, then ``unknown_hint`` (what to do)."""
    register_envs()
    try:
        return gymnasium.make(env_id, **kwargs)
    except (gymnasium.error.NameNotFound, gymnasium.error.NamespaceNotFound, gymnasium.error.VersionNotFound) as error:
        close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown env id {env_id!r}.{hint} {unknown_hint}") from error


def make_frame_env(env_id: str, frame_size: int = 32, view: str = "egocentric", **kwargs: Any) -> gymnasium.Env:
    """``gymnasium.make(env_id, **kwargs)`` wrapped in :class:`FrameObservation`.

    :param env_id: a registered MiniGrid id, e.g. ``"MiniGrid-FourRooms-v0"``, ``"MiniGrid-MemoryS7-v0"``
        or one of the ``EpisodicMemory-RandomMaze-S{n}-v0`` ids (see :data:`DEFAULT_MAZES`).
    :param frame_size: S, side of the frames in pixels.
    :param view: ``"egocentric"`` or ``"topdown"`` (see :class:`FrameObservation`).
    :param kwargs: passed to ``gymnasium.make`` (e.g. ``max_steps``, ``render_mode``).
    :return: an env whose observations are frames ``uint8 [S, S, 3]``.
    """
    env = make_registered(
        env_id,
        f"Valid ids include: {', '.join(DEFAULT_MAZES)}; list the registered ids with `{LIST_ENVS_HINT}` "
        "(frames need a MiniGrid-* or EpisodicMemory-* id).",
        **kwargs,
    )
    if not isinstance(env.unwrapped, MiniGridEnv):
        env.close()
        raise ValueError(f"env id {env_id!r} is not a MiniGrid env; frames need one, e.g. {DEFAULT_MAZES[0]!r}")
    return FrameObservation(env, frame_size=frame_size, view=view)
