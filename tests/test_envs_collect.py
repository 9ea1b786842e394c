"""Frame collection: manifest, determinism, resuming, recovery from interrupted runs and corrupted shards."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from minigrid.core.actions import Actions
from minigrid.core.world_object import Door

from episodic_memory.envs import CollectConfig, FrameDataset, collect, make_frame_env, random_maze_id
from episodic_memory.envs.collect import _walk
from episodic_memory.models.observations import ObservationEncoding

SEED = 0
ENVS = (random_maze_id(9), "MiniGrid-MemoryS7-v0")


def tiny(out: Path, **overrides: object) -> CollectConfig:
    """A config that collects in well under a second: 2 envs, 2 layouts each, 6 frames of 16x16."""
    settings = {"envs": ENVS, "layouts_per_env": 2, "steps_per_layout": 6, "frame_size": 16, "shard_size": 2, "seed": SEED}
    return CollectConfig(out=str(out), **{**settings, **overrides})


def frames_by_layout(root: Path) -> dict[str, np.ndarray]:
    """Every layout's frames ``uint8 [T, H, W, 3]`` in the dataset at ``root``, by layout id."""
    dataset = FrameDataset(root, split="all")
    return dict(zip(dataset.layout_ids, dataset.frames.numpy(), strict=True))


def test_every_config_field_has_help() -> None:
    for config_field in dataclasses.fields(CollectConfig):
        assert config_field.metadata.get("help"), config_field.name


def test_manifest_contents(tmp_path: Path) -> None:
    manifest_path = collect(tiny(tmp_path, layouts_per_env=3), progress=False)
    assert manifest_path == tmp_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["format_version"] == 1
    assert manifest["frame_shape"] == [16, 16, 3] and manifest["frame_size"] == 16
    assert manifest["steps_per_layout"] == 6 and manifest["view"] == "egocentric"
    assert manifest["envs"] == list(ENVS)
    assert manifest["num_layouts"] == 6 and manifest["num_frames"] == 36
    assert manifest["config"]["layouts_per_env"] == 3 and manifest["config"]["envs"] == list(ENVS)
    assert [shard["file"] for shard in manifest["shards"]] == ["shard-00000.npz", "shard-00001.npz", "shard-00002.npz"]
    ids = [lid for shard in manifest["shards"] for lid in shard["layout_ids"]]
    assert ids == [f"{env_id}/{j}" for env_id in ENVS for j in range(3)]
    for shard in manifest["shards"]:
        with np.load(tmp_path / shard["file"]) as archive:
            assert archive["frames"].shape == (shard["num_layouts"], 6, 16, 16, 3)
            assert archive["frames"].dtype == np.uint8
            assert archive["layout_ids"].tolist() == shard["layout_ids"]
        assert shard["num_frames"] == 6 * shard["num_layouts"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["manifest.json", *(s["file"] for s in manifest["shards"])]


def test_same_config_same_frames(tmp_path: Path) -> None:
    collect(tiny(tmp_path / "a"), progress=False)
    collect(tiny(tmp_path / "b"), progress=False)
    collect(tiny(tmp_path / "c", seed=SEED + 1), progress=False)
    a, b, c = (frames_by_layout(tmp_path / name) for name in "abc")
    assert a.keys() == b.keys() and all(np.array_equal(a[lid], b[lid]) for lid in a)
    assert a.keys().isdisjoint(c.keys())
    for frames in a.values():
        assert len({frame.tobytes() for frame in frames}) > 1  # the walk moves


def test_resume_adds_only_new_layouts(tmp_path: Path) -> None:
    collect(tiny(tmp_path), progress=False)
    first = {path.name: path.read_bytes() for path in tmp_path.glob("shard-*.npz")}
    assert len(first) == 2
    collect(tiny(tmp_path, layouts_per_env=4), progress=False)
    for name, content in first.items():
        assert (tmp_path / name).read_bytes() == content
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["num_layouts"] == 8 and len(manifest["shards"]) == 4
    for env_id in ENVS:
        assert sum(lid.startswith(env_id + "/") for s in manifest["shards"] for lid in s["layout_ids"]) == 4
    before = (tmp_path / "manifest.json").read_bytes()
    collect(tiny(tmp_path, layouts_per_env=4), progress=False)  # nothing left to do
    assert (tmp_path / "manifest.json").read_bytes() == before

    collect(tiny(tmp_path / "fresh", layouts_per_env=4, shard_size=100), progress=False)
    resumed, fresh = frames_by_layout(tmp_path), frames_by_layout(tmp_path / "fresh")
    assert resumed.keys() == fresh.keys() and all(np.array_equal(resumed[lid], fresh[lid]) for lid in fresh)


def test_leftovers_of_interrupted_run_are_removed(tmp_path: Path) -> None:
    collect(tiny(tmp_path), progress=False)
    orphan, tmp = tmp_path / "shard-00007.npz", tmp_path / "shard-00002.npz.tmp"
    orphan.write_bytes(b"not a shard")
    tmp.write_bytes(b"half a shard")
    with pytest.warns(UserWarning, match="interrupted collection") as record:
        collect(tiny(tmp_path), progress=False)
    assert len(record) == 2
    assert not orphan.exists() and not tmp.exists()
    assert FrameDataset(tmp_path, split="all").num_layouts == 4


@pytest.mark.parametrize("damage", ["garbage", "wrong_dtype", "deleted"])
def test_damaged_shard_is_recollected(tmp_path: Path, damage: str) -> None:
    collect(tiny(tmp_path), progress=False)
    original = frames_by_layout(tmp_path)
    shard = tmp_path / "shard-00000.npz"
    if damage == "garbage":
        shard.write_bytes(shard.read_bytes()[:100])
    elif damage == "wrong_dtype":
        with np.load(shard) as archive:
            np.savez_compressed(shard, frames=archive["frames"].astype(np.float32), layout_ids=archive["layout_ids"])
    else:
        shard.unlink()
    with pytest.raises(ValueError, match=r"shard shard-00000\.npz .*re-run `episodic-memory collect"):
        FrameDataset(tmp_path, split="all")
    with pytest.warns(UserWarning, match=r"dropping shard .*shard-00000\.npz"):
        collect(tiny(tmp_path), progress=False)
    recovered = frames_by_layout(tmp_path)
    assert recovered.keys() == original.keys() and all(np.array_equal(recovered[lid], original[lid]) for lid in original)


def test_mismatched_frame_shape_leaves_data_untouched(tmp_path: Path) -> None:
    collect(tiny(tmp_path), progress=False)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="frame shape, dtype, view or observations differ"):
        collect(tiny(tmp_path, frame_size=8), progress=False)
    with pytest.raises(ValueError, match="frame shape, dtype, view or observations differ"):
        collect(tiny(tmp_path, view="topdown"), progress=False)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_unknown_env_fails_before_touching_disk(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown env id 'MiniGrid-Nowhere-v0'"):
        collect(tiny(tmp_path / "out", envs=("MiniGrid-Nowhere-v0",)), progress=False)
    assert not (tmp_path / "out").exists()


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="view must be one of .*actual value: 'side'"):
        tiny(tmp_path, view="side")
    with pytest.raises(ValueError, match=r"forward_bias must be a probability in \[0, 1\], actual value: 1.5"):
        tiny(tmp_path, forward_bias=1.5)
    with pytest.raises(ValueError, match="not one string"):
        tiny(tmp_path, envs="MiniGrid-FourRooms-v0")
    with pytest.raises(ValueError, match="steps_per_layout must be a positive int, actual value: 0"):
        tiny(tmp_path, steps_per_layout=0)


def test_walk_resets_to_the_same_layout() -> None:
    """After a truncation the walk goes on in the same layout: the reset frame repeats the first one."""
    config = tiny(Path("unused"), steps_per_layout=9)
    env = make_frame_env(random_maze_id(9), frame_size=16, max_steps=3)
    encoding = ObservationEncoding.for_space(env.observation_space)
    # frame 0 reset, 1-3 steps, 4 reset, 5-7 steps, 8 reset
    frames = _walk(env, 5, np.random.default_rng(SEED), config, None, encoding)
    assert frames.shape == (9, 16, 16, 3)
    assert np.array_equal(frames[4], frames[0]) and np.array_equal(frames[8], frames[0])


class ActionLog(gymnasium.Wrapper):
    """Records the actions taken and whether the agent faced a closed door when it took them."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self.log: list[tuple[int, bool]] = []

    def step(self, action: int) -> tuple:
        front = self.unwrapped.grid.get(*self.unwrapped.front_pos)
        self.log.append((action, isinstance(front, Door) and not front.is_open))
        return super().step(action)


def test_random_walk_uses_navigation_and_opens_doors() -> None:
    config = tiny(Path("unused"), steps_per_layout=200, forward_bias=0.8)
    env = ActionLog(make_frame_env("MiniGrid-MultiRoom-N4-S5-v1", frame_size=16))
    for seed in range(SEED, SEED + 3):
        _walk(env, seed, np.random.default_rng(seed), config, None, ObservationEncoding.for_space(env.observation_space))
    actions = [action for action, _ in env.log]
    assert set(actions) == {Actions.left, Actions.right, Actions.forward, Actions.toggle}
    assert all(at_door for action, at_door in env.log if action == Actions.toggle)
    assert actions.count(Actions.forward) > 3 * actions.count(Actions.left)  # forward_bias 0.8 against 0.1


def test_collect_with_policy(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", make_frame_env(random_maze_id(9), frame_size=8), n_steps=16, batch_size=16, seed=SEED)
    model.save(tmp_path / "policy.zip")
    config = tiny(tmp_path / "a", frame_size=8, policy=str(tmp_path / "policy.zip"))
    collect(config, progress=False)
    collect(dataclasses.replace(config, out=str(tmp_path / "b")), progress=False)
    a, b = frames_by_layout(tmp_path / "a"), frames_by_layout(tmp_path / "b")
    assert a.keys() == b.keys() and all(np.array_equal(a[lid], b[lid]) for lid in a)  # sampled actions, seeded
    with pytest.raises(ValueError, match=r"expects observations Box\(0, 255, \(3, 8, 8\), uint8\).*frame_size"):
        collect(tiny(tmp_path / "c", policy=str(tmp_path / "policy.zip")), progress=False)
