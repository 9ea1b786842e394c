"""The memory trainer: exact resumption, signals, DDP, wandb offline, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from episodic_memory import MemoryMachine
from episodic_memory.envs.collect import CollectConfig, collect
from episodic_memory.train.cli import main
from episodic_memory.train.pretrain import PretrainConfig, _seed_step, build_model, latest_checkpoint, pretrain

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("frames")
    collect(
        CollectConfig(
            out=str(out),
            envs=("MiniGrid-FourRooms-v0", "EpisodicMemory-RandomMaze-S9-v0"),
            layouts_per_env=12,
            steps_per_layout=8,
            frame_size=16,
            shard_size=6,
        ),
        progress=False,
    )
    return out


def tiny(dataset: Path, out: Path, **changes) -> PretrainConfig:
    config = PretrainConfig(
        data=str(dataset),
        out=str(out),
        code_size=8,
        num_slots=4,
        hidden_channels=4,
        episode_length=4,
        batch_size=2,
        steps=4,
        lr=1e-3,
        log_every=1,
        checkpoint_every=2,
        image_every=0,
        evaluate=False,
        wandb_mode="disabled",
        test_fraction=0.25,
    )
    return replace(config, **changes)


def flags(config: PretrainConfig) -> list[str]:
    """The command-line flags that give ``config``."""
    return [
        item
        for name, value in asdict(config).items()
        for item in (f"--{name.replace('_', '-')}", str(value).lower() if isinstance(value, bool) else str(value))
    ]


def logged_losses(out: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in records}


@pytest.mark.parametrize("model", ["dkm", "ebmm", "km", "kpp", "pkm", "vae"])
def test_training_runs_and_saves_a_loadable_model(dataset, tmp_path, model):
    summary = pretrain(tiny(dataset, tmp_path, model=model), progress=False)
    assert summary["step"] == 4 and not summary["interrupted"]
    loaded = MemoryMachine.load(tmp_path / "model.safetensors")
    kinds = {"dkm": "DynamicKanervaMachine", "ebmm": "EnergyBasedMemoryMachine", "km": "KanervaMachine", "kpp": "KanervaPlusPlus"}
    kinds["pkm"] = "ProductKanervaMachine"
    assert loaded.kind == kinds.get(model, "VariationalAutoencoder")
    assert all(np.isfinite(v) for v in logged_losses(tmp_path).values())


@pytest.mark.parametrize("model", ["dkm", "pkm", "kpp", "ebmm"])
def test_resume_repeats_the_uninterrupted_losses(dataset, tmp_path, model):
    pretrain(tiny(dataset, tmp_path / "full", steps=6, model=model), progress=False)
    pretrain(tiny(dataset, tmp_path / "parts", steps=3, checkpoint_every=100, model=model), progress=False)
    pretrain(tiny(dataset, tmp_path / "parts", steps=6, checkpoint_every=100, model=model), resume=True, progress=False)
    full, parts = logged_losses(tmp_path / "full"), logged_losses(tmp_path / "parts")
    assert sorted(parts) == list(range(1, 7))
    assert parts == full  # bit-for-bit on CPU
    resumed = MemoryMachine.load(tmp_path / "parts" / "model.safetensors").state_dict()
    for name, tensor in MemoryMachine.load(tmp_path / "full" / "model.safetensors").state_dict().items():
        assert torch.equal(tensor, resumed[name]), name


def test_the_same_seed_gives_the_same_run_and_another_seed_does_not(dataset, tmp_path):
    a = pretrain(tiny(dataset, tmp_path / "a"), progress=False)["losses"]
    b = pretrain(tiny(dataset, tmp_path / "b"), progress=False)["losses"]
    c = pretrain(tiny(dataset, tmp_path / "c", seed=1), progress=False)["losses"]
    assert a == b and a != c


def test_sigint_saves_a_checkpoint_and_the_run_resumes(dataset, tmp_path):
    out = tmp_path / "run"
    options = flags(tiny(dataset, out, steps=100_000, checkpoint_every=100_000))
    cmd = [sys.executable, "-m", "episodic_memory.train.cli", "pretrain", *options]
    process = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not (
        (out / "metrics.jsonl").exists() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3
    ):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr.decode()
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None
    stopped_at = int(checkpoint.name.split("-")[1])
    assert stopped_at >= 3 and max(logged_losses(out)) == stopped_at
    summary = pretrain(tiny(dataset, out, steps=stopped_at + 2, checkpoint_every=100000), resume=True, progress=False)
    assert summary["step"] == stopped_at + 2


@pytest.mark.parametrize("model", ["dkm", "pkm", "kpp", "ebmm"])
def test_torchrun_ddp_averages_gradients_across_two_processes(dataset, tmp_path, model):
    out = tmp_path / "ddp"
    config = tiny(dataset, out, steps=1, grad_clip=0.0, model=model)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "episodic_memory.train.cli",
        "pretrain",
        *flags(config),
    ]
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    ddp = MemoryMachine.load(out / "model.safetensors")

    # One Adam step on the mean of the two processes' gradients, computed here by hand.
    from episodic_memory.envs.dataset import FrameDataset

    data = FrameDataset(config.data, split="train", test_fraction=config.test_fraction)
    torch.manual_seed(config.seed)
    model = build_model(config, data.frame_shape)
    grads = []
    for rank in (0, 1):
        rng = _seed_step(config.seed, rank, 0)
        model.zero_grad()
        model.loss(data.sample(config.batch_size, config.episode_length, config.mode, rng))["loss"].backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    for p, g0, g1 in zip(model.parameters(), *grads, strict=True):
        p.grad = (g0 + g1) / 2
    averaged = dict(
        zip((name for name, _ in model.named_parameters()), (p.grad.clone() for p in model.parameters()), strict=True)
    )
    optimizer.step()
    single = model.state_dict()
    # Adam's first step is about lr * g / (|g| + eps): where the two ranks' gradients cancel to
    # rounding level its sign is arbitrary, so compare where the averaged gradient is well defined.
    compared = total = 0
    for name, tensor in ddp.state_dict().items():
        defined = averaged[name].abs() > 1e-6
        torch.testing.assert_close(tensor[defined], single[name][defined], rtol=1e-5, atol=1e-6, msg=name)
        compared, total = compared + int(defined.sum()), total + defined.numel()
    assert compared > total // 2


def test_wandb_offline_writes_a_run_directory(dataset, tmp_path):
    summary = pretrain(tiny(dataset, tmp_path, wandb_mode="offline", image_every=2), progress=False)
    run_dir = Path(summary["wandb_run_dir"])
    assert run_dir.is_dir() and run_dir.name.startswith("offline-run-")
    assert any(run_dir.glob("*.wandb"))


class TestBadInput:
    def test_missing_dataset_says_which_command_makes_it(self, tmp_path, capsys):
        code = main(["pretrain", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "out"), "--wandb-mode", "disabled"])
        assert code == 2
        assert "episodic-memory collect" in capsys.readouterr().err

    def test_existing_checkpoints_need_resume(self, dataset, tmp_path):
        pretrain(tiny(dataset, tmp_path, steps=2), progress=False)
        with pytest.raises(ValueError, match="already holds checkpoints: pass --resume"):
            pretrain(tiny(dataset, tmp_path, steps=3), progress=False)

    def test_resume_without_checkpoint(self, dataset, tmp_path):
        with pytest.raises(ValueError, match="no checkpoint in"):
            pretrain(tiny(dataset, tmp_path), resume=True, progress=False)

    def test_resume_with_another_experiment(self, dataset, tmp_path):
        pretrain(tiny(dataset, tmp_path, steps=2), progress=False)
        with pytest.raises(ValueError, match=r"different experiment \(code_size: 8 -> 16\)"):
            pretrain(tiny(dataset, tmp_path, steps=3, code_size=16), resume=True, progress=False)

    def test_corrupted_checkpoint(self, dataset, tmp_path):
        pretrain(tiny(dataset, tmp_path, steps=2), progress=False)
        checkpoint = latest_checkpoint(tmp_path)
        (checkpoint / "model.safetensors").write_bytes(b"garbage")
        before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
        with pytest.raises(ValueError, match="is corrupted or incomplete.*delete"):
            pretrain(tiny(dataset, tmp_path, steps=3), resume=True, progress=False)
        assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before  # nothing removed

    def test_frames_of_another_shape_than_the_checkpoint(self, dataset, tmp_path):
        pretrain(tiny(dataset, tmp_path / "run", steps=2), progress=False)
        other = tmp_path / "frames32"
        collect(
            CollectConfig(
                out=str(other),
                envs=("MiniGrid-FourRooms-v0",),
                layouts_per_env=8,
                steps_per_layout=4,
                frame_size=24,
                shard_size=8,
            ),
            progress=False,
        )
        with pytest.raises(ValueError, match=r"have shape \(24, 24, 3\), the model expects \(16, 16, 3\)"):
            pretrain(tiny(other, tmp_path / "run", steps=3), resume=True, progress=False)
