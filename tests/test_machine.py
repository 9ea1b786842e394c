"""Checkpoints: round trips, and clear errors for missing, corrupted, foreign and mismatched files."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from episodic_memory import DynamicKanervaMachine, load_machine, read_checkpoint_header


@pytest.fixture
def model() -> DynamicKanervaMachine:
    torch.manual_seed(0)
    return DynamicKanervaMachine((8, 8, 3), code_size=6, num_slots=4, likelihood="gaussian", hidden_channels=4)


@pytest.fixture
def episode() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(0, 256, (2, 3, 8, 8, 3), dtype=torch.uint8)


def test_round_trip_restores_config_and_outputs(tmp_path, model, episode):
    with torch.no_grad():
        model.memory.prior_mean.add_(1.0)  # differ from a fresh initialisation
    path = model.save(tmp_path / "dkm.safetensors")
    loaded = DynamicKanervaMachine.load(path)
    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded.energy(loaded.write(episode), episode), model.energy(model.write(episode), episode))
    assert type(load_machine(path)) is DynamicKanervaMachine
    assert read_checkpoint_header(path)["kind"] == "DynamicKanervaMachine"


def test_save_replaces_an_existing_checkpoint_and_leaves_no_temporary_file(tmp_path, model):
    path = tmp_path / "dkm.safetensors"
    model.save(path)
    with torch.no_grad():
        model.log_w_std.fill_(-2.0)
    model.save(path)
    assert DynamicKanervaMachine.load(path).log_w_std.item() == pytest.approx(-2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dkm.safetensors"]


def test_save_to_a_directory_is_refused(tmp_path, model):
    with pytest.raises(ValueError, match="is a directory"):
        model.save(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        DynamicKanervaMachine.load(tmp_path / "nothing.safetensors")


def test_corrupted_file(tmp_path, model):
    path = model.save(tmp_path / "dkm.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="is not a readable safetensors checkpoint"):
        DynamicKanervaMachine.load(path)


def test_safetensors_file_of_another_library(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not an episodic-memory checkpoint"):
        load_machine(path)


def _rewrite_header(path, **changes):
    header = read_checkpoint_header(path)
    for key, value in changes.items():
        if key == "config":
            header["config"].update(value)
        else:
            header[key] = value
    save_file(load_file(str(path)), str(path), metadata={"episodic_memory": json.dumps(header)})


def test_tensor_shapes_that_do_not_match_the_config(tmp_path, model):
    path = model.save(tmp_path / "dkm.safetensors")
    _rewrite_header(path, config={"num_slots": 5})
    with pytest.raises(
        ValueError, match=r"tensor 'memory.prior_mean' has shape \(4, 6\), the DynamicKanervaMachine config implies \(5, 6\)"
    ):
        DynamicKanervaMachine.load(path)


def test_tensors_missing_for_the_config(tmp_path, model):
    path = model.save(tmp_path / "dkm.safetensors")
    _rewrite_header(path, config={"likelihood": "bernoulli"})
    with pytest.raises(ValueError, match=r"unexpected tensors \['likelihood.raw_std'\]"):
        DynamicKanervaMachine.load(path)


def test_unknown_kind_and_version(tmp_path, model):
    path = model.save(tmp_path / "dkm.safetensors")
    _rewrite_header(path, kind="HopfieldNet")
    with pytest.raises(ValueError, match="holds a HopfieldNet, not a DynamicKanervaMachine"):
        DynamicKanervaMachine.load(path)
    with pytest.raises(ValueError, match="unknown model kind 'HopfieldNet'"):
        load_machine(path)
    _rewrite_header(path, kind="DynamicKanervaMachine", format_version=99)
    with pytest.raises(ValueError, match="format version 99"):
        load_machine(path)


def test_invalid_config(tmp_path, model):
    path = model.save(tmp_path / "dkm.safetensors")
    _rewrite_header(path, config={"likelihood": "poisson"})
    with pytest.raises(ValueError, match="invalid DynamicKanervaMachine config: likelihood must be one of"):
        load_machine(path)


class TestResize:
    """Image frames of another height and width are resized by the machine's own preprocessing."""

    @pytest.mark.parametrize("resize", ["area", "bilinear"])
    @pytest.mark.parametrize("channel_order", ["hwc", "chw"])
    @pytest.mark.parametrize("size", [(20, 13), (5, 4), (8, 8)])  # shrink, enlarge, and the model's own size
    def test_frames_are_resized_as_f_interpolate_does(self, resize, channel_order, size):
        torch.manual_seed(0)
        shape = (8, 8, 3) if channel_order == "hwc" else (3, 8, 8)
        model = DynamicKanervaMachine(shape, code_size=6, num_slots=4, likelihood="gaussian", hidden_channels=4, resize=resize)
        x = torch.randint(0, 256, (2, 3, *size, 3), dtype=torch.uint8)  # [B, T, h, w, C]
        if channel_order == "chw":
            x = x.permute(0, 1, 4, 2, 3)  # [B, T, C, h, w]
        frames = x.flatten(0, 1).float() / 255  # [B*T, *frame_shape]
        frames = frames.permute(0, 3, 1, 2) if channel_order == "hwc" else frames  # [B*T, C, h, w]
        kwargs = {"mode": "area"} if resize == "area" else {"mode": "bilinear", "align_corners": False, "antialias": True}
        by_hand = F.interpolate(frames, size=(8, 8), **kwargs) if size != (8, 8) else frames  # [B*T, C, 8, 8]
        torch.testing.assert_close(model._frames_in(x), by_hand)
        by_hand_frames = model.input_spec.from_model(by_hand).reshape(2, 3, *shape)  # [B, T, *input_shape], floats
        with torch.no_grad():
            torch.testing.assert_close(model.encode(x), model.encode(by_hand_frames))
            state = model.write(x)
            assert model.reconstruct(state, x).shape == (2, 3, *shape)  # read back at the model's size

    def test_shrinking_averages_whole_pixel_blocks(self):
        """Area resizing by an integer factor is the mean of each block: a closed form without F.interpolate."""
        model = DynamicKanervaMachine(
            (4, 4, 1), code_size=3, num_slots=2, likelihood="gaussian", channel_order="hwc", hidden_channels=2
        )
        x = torch.rand(1, 1, 8, 12, 1, dtype=torch.float64)
        blocks = x[0, 0, :, :, 0].reshape(4, 2, 4, 3).mean((1, 3))  # 2x3 blocks [4, 4]
        torch.testing.assert_close(model.double()._frames_in(x)[0, 0], blocks)

    @pytest.mark.parametrize(
        ("shape", "message"),
        [
            (
                (2, 3, 16, 16, 4),
                r"frames of shape \(16, 16, 4\) have 4 channels \(channels last\), "
                r"the machine's frames of shape \(8, 8, 3\) have 3",
            ),
            ((2, 3, 3, 16, 16), r"frames of shape \(3, 16, 16\) have 16 channels"),
            ((2, 3, 16, 16), r"frames of shape \(16, 16\) are not images like the machine's frames of shape \(8, 8, 3\)"),
            ((2, 16, 16, 3), r"the time axis T is missing"),
        ],
    )
    def test_another_rank_or_channel_count_is_refused(self, model, shape, message):
        with pytest.raises(ValueError, match=r"x must have shape \[B, T, H, W, 3\], got .*: " + message):
            model.encode(torch.zeros(shape, dtype=torch.uint8))

    def test_resize_none_refuses_another_size(self):
        model = DynamicKanervaMachine((8, 8, 3), code_size=6, num_slots=4, hidden_channels=4, resize="none")
        with pytest.raises(ValueError, match=r"x must have shape \[B, T, 8, 8, 3\].*resize='none'"):
            model.encode(torch.zeros(1, 1, 16, 16, 3, dtype=torch.uint8))

    def test_vectors_are_never_resized(self):
        model = DynamicKanervaMachine((12,), code_size=4, num_slots=3, hidden_size=8)
        with pytest.raises(ValueError, match=r"frames of shape \(11,\) are not the machine's vectors of shape \(12,\)"):
            model.encode(torch.zeros(1, 1, 11))

    def test_unknown_resize_mode(self):
        with pytest.raises(ValueError, match=r"resize must be one of \['area', 'bilinear', 'none'\], got 'bicubic'"):
            DynamicKanervaMachine((8, 8, 3), resize="bicubic")

    def test_resize_is_saved_and_old_checkpoints_read_area(self, tmp_path):
        torch.manual_seed(0)
        model = DynamicKanervaMachine(
            (8, 8, 3), code_size=6, num_slots=4, likelihood="gaussian", hidden_channels=4, resize="bilinear"
        )
        path = model.save(tmp_path / "dkm.safetensors")
        assert read_checkpoint_header(path)["config"]["resize"] == "bilinear"
        assert load_machine(path).input_spec.resize == "bilinear"
        header = read_checkpoint_header(path)
        del header["config"]["resize"]  # a checkpoint written before the machine's config had it
        save_file(load_file(str(path)), str(path), metadata={"episodic_memory": json.dumps(header)})
        old = load_machine(path)
        assert old.input_spec.resize == "area" and old.config["resize"] == "area"
        x = torch.randint(0, 256, (1, 2, 16, 16, 3), dtype=torch.uint8)
        assert old.encode(x).shape == (1, 2, 6)
