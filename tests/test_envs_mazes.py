"""Maze environments and frame observations: layouts fixed by the seed, perfect mazes, frames in their space."""

from __future__ import annotations

import warnings
from collections import deque

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from minigrid.core.world_object import Goal

from episodic_memory.envs import (
    DEFAULT_MAZES,
    FrameObservation,
    RandomMazeEnv,
    layout_id,
    make_frame_env,
    random_maze_id,
    register_envs,
)
from episodic_memory.envs.mazes import RANDOM_MAZE_SIZES

SEED = 0


def free_cells(env: RandomMazeEnv) -> set[tuple[int, int]]:
    """The cells the agent can stand on (empty or goal)."""
    grid = env.grid
    return {
        (x, y)
        for x in range(grid.width)
        for y in range(grid.height)
        if grid.get(x, y) is None or isinstance(grid.get(x, y), Goal)
    }


def reachable(cells: set[tuple[int, int]], start: tuple[int, int]) -> set[tuple[int, int]]:
    """The cells of ``cells`` reachable from ``start`` in 4-connected steps (BFS)."""
    seen, queue = {start}, deque([start])
    while queue:
        x, y = queue.popleft()
        for nxt in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
            if nxt in cells and nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def test_register_envs_is_idempotent() -> None:
    register_envs()
    register_envs()
    for size in RANDOM_MAZE_SIZES:
        env = gymnasium.make(random_maze_id(size))
        assert isinstance(env.unwrapped, RandomMazeEnv)
        assert env.unwrapped.width == size


def test_same_seed_same_layout() -> None:
    env = RandomMazeEnv(size=11)
    env.reset(seed=SEED + 3)
    first = (env.grid.encode().copy(), tuple(env.agent_pos), env.agent_dir)
    env.reset(seed=SEED + 4)
    env.reset(seed=SEED + 3)
    assert np.array_equal(env.grid.encode(), first[0])
    assert (tuple(env.agent_pos), env.agent_dir) == first[1:]


def test_different_seeds_different_layouts() -> None:
    env = RandomMazeEnv(size=11)
    grids = set()
    for seed in range(SEED, SEED + 6):
        env.reset(seed=seed)
        grids.add(env.grid.encode().tobytes())
    assert len(grids) == 6


@pytest.mark.parametrize("size", [5, 9, 21])
def test_maze_is_perfect_and_goal_reachable(size: int) -> None:
    env = RandomMazeEnv(size=size)
    m = (size - 1) // 2
    for seed in range(SEED, SEED + 5):
        env.reset(seed=seed)
        cells = free_cells(env)
        goal = next((x, y) for x, y in cells if isinstance(env.grid.get(x, y), Goal))
        assert tuple(env.agent_pos) in cells and tuple(env.agent_pos) != goal
        component = reachable(cells, tuple(env.agent_pos))
        assert goal in component
        assert component == cells
        assert len(cells) == m * m + (m * m - 1)  # m² cells joined by m² - 1 passages: a spanning tree


def test_random_maze_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match="size must be an odd int >= 5, actual value: 10"):
        RandomMazeEnv(size=10)


@pytest.mark.parametrize("view", ["egocentric", "topdown"])
@pytest.mark.parametrize("env_id", [random_maze_id(9), "MiniGrid-MemoryS7-v0", "MiniGrid-MultiRoom-N4-S5-v1"])
def test_frames_lie_in_their_space(env_id: str, view: str) -> None:
    env = make_frame_env(env_id, frame_size=16, view=view)
    assert env.observation_space == gymnasium.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    frame, _ = env.reset(seed=SEED)
    env.action_space.seed(SEED)
    frames = [frame]
    for _ in range(5):
        frames.append(env.step(env.action_space.sample())[0])
    for frame in frames:
        assert frame.shape == (16, 16, 3) and frame.dtype == np.uint8
        assert env.observation_space.contains(frame)
    assert frames[0].std() > 0  # not a blank frame


def test_egocentric_frame_changes_after_turn() -> None:
    env = make_frame_env(random_maze_id(11), frame_size=32)
    for seed in range(SEED, SEED + 3):
        before, _ = env.reset(seed=seed)
        after = env.step(int(env.unwrapped.actions.left))[0]
        assert not np.array_equal(before, after)


def test_topdown_shows_the_whole_grid() -> None:
    """A top-down frame changes more with the layout than with a turn of the agent."""
    env = make_frame_env(random_maze_id(11), frame_size=32, view="topdown")
    a, _ = env.reset(seed=SEED)
    b, _ = env.reset(seed=SEED + 1)
    turned = env.step(int(env.unwrapped.actions.left))[0]
    assert not np.array_equal(a, b)
    assert np.mean(turned != b) < np.mean(a != b)


@pytest.mark.parametrize("view", ["egocentric", "topdown"])
def test_check_env_passes(view: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any complaint of the checker fails the test...
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version")  # ...but that it got a wrapper
        check_env(make_frame_env(random_maze_id(9), frame_size=16, view=view), skip_render_check=True)


def test_frame_observation_validates_arguments() -> None:
    with pytest.raises(ValueError, match="view must be one of .*actual value: 'side'"):
        FrameObservation(gymnasium.make(random_maze_id(9)), view="side")
    with pytest.raises(ValueError, match="frame_size must be a positive int, actual value: 0"):
        FrameObservation(gymnasium.make(random_maze_id(9)), frame_size=0)
    with pytest.raises(TypeError, match="expects a MiniGrid env"):
        FrameObservation(gymnasium.make("CartPole-v1"))


def test_make_frame_env_unknown_id() -> None:
    message = r"unknown env id 'MiniGrid-FourRoom-v0'.*MiniGrid-FourRooms-v0.*EpisodicMemory-RandomMaze"
    with pytest.raises(ValueError, match=message):
        make_frame_env("MiniGrid-FourRoom-v0")
    with pytest.raises(ValueError, match="'CartPole-v1' is not a MiniGrid env"):
        make_frame_env("CartPole-v1")


def test_default_mazes_make_frames() -> None:
    assert len(DEFAULT_MAZES) == len(set(DEFAULT_MAZES)) >= 6
    for env_id in DEFAULT_MAZES:
        frame, _ = make_frame_env(env_id).reset(seed=SEED)
        assert frame.shape == (32, 32, 3)


def test_layout_id() -> None:
    assert layout_id("MiniGrid-FourRooms-v0", 7) == "MiniGrid-FourRooms-v0/7"
