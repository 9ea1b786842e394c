"""FrameDataset: the split by layout, episode sampling modes and the errors that say what to do."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from episodic_memory.envs import CollectConfig, FrameDataset, collect, random_maze_id
from episodic_memory.envs.dataset import is_test_layout, parse_mode

SEED = 0
STEPS = 8


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A top-down dataset (so frames of different mazes differ): 2 envs x 8 layouts x 8 frames of 16x16."""
    out = tmp_path_factory.mktemp("frames")
    config = CollectConfig(
        out=str(out),
        envs=(random_maze_id(9), "MiniGrid-FourRooms-v0"),
        layouts_per_env=8,
        steps_per_layout=STEPS,
        frame_size=16,
        view="topdown",
        shard_size=5,
        seed=SEED,
    )
    collect(config, progress=False)
    return out


def layouts_needed(episode: torch.Tensor, dataset: FrameDataset) -> int:
    """The fewest layouts whose frames contain every frame of ``episode`` ``[T, H, W, 3]`` (up to 3; 4 means more)."""
    frame_sets = [{frame.tobytes() for frame in layout} for layout in dataset.frames.numpy()]
    candidates = [{k for k, frames in enumerate(frame_sets) if frame.tobytes() in frames} for frame in episode.numpy()]
    assert all(candidates), "a sampled frame is in no layout of the split"
    for n in (1, 2, 3):
        for chosen in itertools.combinations(range(dataset.num_layouts), n):
            if all(c & set(chosen) for c in candidates):
                return n
    return 4


def test_loads_the_split(root: Path) -> None:
    dataset = FrameDataset(root, split="all")
    assert dataset.root == root and dataset.split == "all" and dataset.view == "topdown"
    assert dataset.frame_shape == (16, 16, 3) and dataset.steps_per_layout == STEPS
    assert dataset.num_layouts == 16 == len(dataset.layout_ids) == len(set(dataset.layout_ids))
    assert dataset.num_frames == 16 * STEPS
    assert dataset.frames.shape == (16, STEPS, 16, 16, 3) and dataset.frames.dtype == torch.uint8


@pytest.mark.parametrize("mode", ["mixed", "layouts=1", "layouts=2"])
def test_sample_shape_and_dtype(root: Path, mode: str) -> None:
    episodes = FrameDataset(root, split="all").sample(5, 12, mode=mode, rng=np.random.default_rng(SEED))
    assert episodes.shape == (5, 12, 16, 16, 3) and episodes.dtype == torch.uint8


def test_layouts_mode_limits_the_layouts_of_an_episode(root: Path) -> None:
    dataset = FrameDataset(root, split="all")
    rng = np.random.default_rng(SEED)
    for episode in dataset.sample(6, 12, mode="layouts=2", rng=rng):
        assert layouts_needed(episode, dataset) <= 2
    for episode in dataset.sample(3, 3 * STEPS, mode="layouts=1", rng=rng):  # more frames than a layout has: replacement
        assert layouts_needed(episode, dataset) == 1
    assert max(layouts_needed(episode, dataset) for episode in dataset.sample(6, 12, mode="mixed", rng=rng)) > 2


def test_layouts_mode_without_replacement_when_possible(root: Path) -> None:
    dataset = FrameDataset(root, split="all")
    layouts = [sorted(frame.tobytes() for frame in layout) for layout in dataset.frames.numpy()]
    pairs = [sorted(layouts[a] + layouts[b]) for a, b in itertools.combinations(range(dataset.num_layouts), 2)]
    for episode in dataset.sample(4, 2 * STEPS, mode="layouts=2", rng=np.random.default_rng(SEED)):
        assert sorted(frame.tobytes() for frame in episode.numpy()) in pairs  # all frames of two layouts, each once


def test_same_rng_same_episodes(root: Path) -> None:
    dataset = FrameDataset(root, split="all")
    for mode in ("mixed", "layouts=2"):
        a = dataset.sample(4, 10, mode=mode, rng=np.random.default_rng(SEED))
        b = dataset.sample(4, 10, mode=mode, rng=np.random.default_rng(SEED))
        c = dataset.sample(4, 10, mode=mode, rng=np.random.default_rng(SEED + 1))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_split_by_layout_is_disjoint(root: Path) -> None:
    train = FrameDataset(root, split="train", test_fraction=0.5)
    test = FrameDataset(root, split="test", test_fraction=0.5)
    everything = FrameDataset(root, split="all")
    assert train.num_layouts > 0 and test.num_layouts > 0
    assert set(train.layout_ids).isdisjoint(test.layout_ids)
    assert set(train.layout_ids) | set(test.layout_ids) == set(everything.layout_ids)
    assert all(is_test_layout(lid, 0.5) for lid in test.layout_ids)
    train_frames = {frame.tobytes() for frame in train.frames.reshape(-1, 16, 16, 3).numpy()}
    sampled = test.sample(4, 8, rng=np.random.default_rng(SEED)).reshape(-1, 16, 16, 3).numpy()
    assert not any(frame.tobytes() in train_frames for frame in sampled)  # top-down frames: no test maze in training


def test_empty_split(root: Path) -> None:
    with pytest.raises(ValueError, match="the 'test' split of .* is empty.*test_fraction=0.0"):
        FrameDataset(root, split="test", test_fraction=0.0)
    with pytest.raises(ValueError, match="the 'train' split .* is empty"):
        FrameDataset(root, split="train", test_fraction=1.0)


def test_bad_arguments(root: Path) -> None:
    dataset = FrameDataset(root, split="all")
    for mode in ("layouts", "layouts=0", "layouts=-1", "sequential"):
        with pytest.raises(ValueError, match=f"mode must be 'mixed' or 'layouts=n'.*actual value: '{mode}'"):
            dataset.sample(2, 4, mode=mode)
    with pytest.raises(ValueError, match="asks for 17 layouts per episode, but the 'all' split has only 16"):
        dataset.sample(2, 4, mode="layouts=17")
    with pytest.raises(ValueError, match="episode_length must be a positive int, actual value: 0"):
        dataset.sample(2, 0)
    with pytest.raises(ValueError, match="split must be one of"):
        FrameDataset(root, split="validation")
    with pytest.raises(ValueError, match="test_fraction must be in"):
        FrameDataset(root, test_fraction=1.5)
    assert parse_mode("mixed") is None and parse_mode("layouts=3") == 3


def test_missing_or_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist; collect one with `episodic-memory collect --out DIR`"):
        FrameDataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"no manifest\.json.*episodic-memory collect --out DIR"):
        FrameDataset(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1, "shards": []}))
    with pytest.raises(ValueError, match="no shards.*episodic-memory collect --out DIR"):
        FrameDataset(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid manifest"):
        FrameDataset(tmp_path)
