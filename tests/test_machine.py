"""Checkpoints: round trips, and clear errors for missing, corrupted, foreign and mismatched files."""

from __future__ import annotations

import json

import pytest
import torch
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
