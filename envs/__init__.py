"""Maze environments, frame collection and frame datasets (MiniGrid).

Importing this package registers the ``EpisodicMemory-RandomMaze-S{n}-v0`` Gymnasium ids.
"""

from episodic_memory.envs.collect import CollectConfig, collect
from episodic_memory.envs.dataset import FrameDataset
from episodic_memory.envs.mazes import (
    DEFAULT_MAZES,
    RANDOM_MAZE_SIZES,
    VIEWS,
    FrameObservation,
    RandomMazeEnv,
    layout_id,
    make_frame_env,
    random_maze_id,
    register_envs,
)

register_envs()

__all__ = [
    "DEFAULT_MAZES",
    "RANDOM_MAZE_SIZES",
    "VIEWS",
    "CollectConfig",
    "FrameDataset",
    "FrameObservation",
    "RandomMazeEnv",
    "collect",
    "layout_id",
    "make_frame_env",
    "random_maze_id",
    "register_envs",
]
