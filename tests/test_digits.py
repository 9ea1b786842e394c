"""The bundled binarized digits: load_digits thresholded at half intensity, grouped by digit, read as any frame dataset."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from episodic_memory.envs.dataset import FrameDataset
from episodic_memory.envs.digits import DigitsConfig, write_digits
from episodic_memory.envs.shards import write_json_atomic
from episodic_memory.train.cli import main


def test_the_dataset_holds_each_digit_binarized_in_groups_of_one_digit(tmp_path):
    assert main(["digits", "--out", str(tmp_path), "--group-size", "16"]) == 0
    data = FrameDataset(tmp_path, split="all")
    digits = load_digits()
    assert data.frame_shape == (8, 8, 1) and data.steps_per_layout == 16
    assert data.num_layouts == sum(int((digits.target == d).sum()) // 16 for d in range(10))  # 109 groups
    first = data.frames[data.layout_ids.index("digits/3-00"), 0, :, :, 0].numpy()  # the first 3 of load_digits
    image = digits.images[np.flatnonzero(digits.target == 3)[0]]
    np.testing.assert_array_equal(first, np.where(image > 8, 255, 0))
    for k, layout in enumerate(data.layout_ids):  # every frame of a group is an image of its digit
        digit = int(layout.split("/")[1].split("-")[0])
        pool = np.where(digits.images[digits.target == digit] > 8, 255, 0)
        group = data.frames[k, :, :, :, 0].numpy()
        assert all((pool == frame).all(axis=(1, 2)).any() for frame in group), layout
    test, train = FrameDataset(tmp_path, split="test"), FrameDataset(tmp_path, split="train")
    assert not set(test.layout_ids) & set(train.layout_ids) and test.num_layouts + train.num_layouts == data.num_layouts
    episodes = train.sample(3, 32, "layouts=2", np.random.default_rng(0))
    assert episodes.shape == (3, 32, 8, 8, 1) and set(np.unique(episodes.numpy())) == {0, 255}


def test_writing_again_gives_the_same_frames_and_another_dataset_is_left_alone(tmp_path):
    write_digits(DigitsConfig(out=str(tmp_path / "a")))
    write_digits(DigitsConfig(out=str(tmp_path / "a")))
    write_digits(DigitsConfig(out=str(tmp_path / "b")))
    a, b = FrameDataset(tmp_path / "a", split="all"), FrameDataset(tmp_path / "b", split="all")
    assert a.layout_ids == b.layout_ids and (a.frames == b.frames).all()
    other = tmp_path / "mazes"
    other.mkdir()
    write_json_atomic(other / "manifest.json", {"format_version": 1, "view": "egocentric", "shards": []})
    with pytest.raises(ValueError, match="holds another dataset"):
        write_digits(DigitsConfig(out=str(other)))
    with pytest.raises(ValueError, match="group_size"):
        DigitsConfig(group_size=0)
