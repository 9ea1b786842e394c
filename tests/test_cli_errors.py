"""Bad input to every CLI subcommand and to the wrappers: an error that says what to do, and no lost or half-written files.

Every CLI case runs ``episodic_memory.train.cli.main`` in-process and checks the exit code (2), that stderr is one
``episodic-memory COMMAND: error: ...`` message (no traceback) naming the fix, and that the files on
disk are byte-identical afterwards: nothing deleted, nothing half-written, no ``*.tmp`` leftovers,
no empty run directory.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

from episodic_memory import DynamicKanervaMachine, KanervaMachine, MemoryMachine, VariationalAutoencoder
from episodic_memory.envs.collect import CollectConfig, collect
from episodic_memory.envs.dataset import FrameDataset
from episodic_memory.train.cli import main
from episodic_memory.train.pretrain import PretrainConfig, latest_checkpoint, pretrain
from episodic_memory.train.tracking import RunLogger
from episodic_memory.wrappers import EpisodicMemoryWrapper
from episodic_memory.wrappers.vec_env import VecEpisodicMemory

FRAME = 16
TEST_FRACTION = 0.1  # 3 of the 24 layouts of the dataset below: too few for the evaluation's 'layouts=8' episodes
# A DKM small enough to train in well under a second a step on one CPU thread.
TINY = [
    *("--code-size", "8", "--num-slots", "4", "--hidden-channels", "4", "--episode-length", "4", "--batch-size", "2"),
    *("--lr", "0.001", "--log-every", "1", "--checkpoint-every", "2", "--image-every", "0"),
    *("--evaluate", "false", "--wandb-mode", "disabled", "--test-fraction", str(TEST_FRACTION), "--device", "cpu"),
]


def collect_frames(out: Path, frame_size: int = FRAME, envs: tuple[str, ...] = ("MiniGrid-FourRooms-v0",)) -> Path:
    collect(
        CollectConfig(out=str(out), envs=envs, layouts_per_env=12, steps_per_layout=8, frame_size=frame_size, shard_size=6),
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return collect_frames(tmp_path_factory.mktemp("frames"), envs=("MiniGrid-FourRooms-v0", "EpisodicMemory-RandomMaze-S9-v0"))


@pytest.fixture(scope="module")
def frames8(tmp_path_factory) -> Path:
    """Frames of another shape than the models': 8x8."""
    return collect_frames(tmp_path_factory.mktemp("frames8"), frame_size=8)


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory) -> Path:
    """A finished 2-step DKM run: model.safetensors and checkpoints/step-0000002."""
    out = tmp_path_factory.mktemp("run")
    assert main(["pretrain", "--data", str(dataset), "--out", str(out), "--steps", "2", *TINY]) == 0
    return out


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------
def snapshot(*roots: Path) -> dict[str, bytes | None]:
    """Every path under ``roots`` (and the roots) with its bytes, None for directories."""
    tree: dict[str, bytes | None] = {}
    for root in roots:
        for path in [root, *sorted(root.rglob("*"))] if root.exists() else []:
            tree[str(path)] = path.read_bytes() if path.is_file() else None
    return tree


@contextmanager
def nothing_written(*roots: Path) -> Iterator[None]:
    """Assert that the files and directories under ``roots`` are exactly as before (bytes included)."""
    before = snapshot(*roots)
    yield
    after = snapshot(*roots)
    assert sorted(set(after) - set(before)) == [], "files or directories were created"
    assert sorted(set(before) - set(after)) == [], "files or directories were deleted"
    assert [p for p in before if before[p] != after[p]] == [], "files were changed"
    assert [p for p in after if ".tmp" in Path(p).name] == []


def fails(capsys, command: str, argv: list[str], *patterns: str) -> str:
    """Run ``episodic-memory COMMAND ARGV``; assert a one-message user error matching every regex of ``patterns``."""
    code = main([command, *argv])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.startswith(f"episodic-memory {command}: error: "), captured.err
    assert "Traceback" not in captured.err and captured.err.count("error:") == 1
    for pattern in patterns:
        assert re.search(pattern, captured.err, flags=re.DOTALL), f"{pattern!r} not in {captured.err!r}"
    return captured.err


def copy_run(run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the finished run (shared by the tests) and its checkpoint directory."""
    out = shutil.copytree(run, tmp_path / "run")
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None and checkpoint.name == "step-0000002"
    return out, checkpoint


# ------------------------------------------------------------------------------------------------
# pretrain
# ------------------------------------------------------------------------------------------------
class TestPretrain:
    def test_missing_data_directory(self, tmp_path, capsys):
        with nothing_written(tmp_path):
            fails(
                capsys,
                "pretrain",
                ["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "out"), *TINY],
                "nothing: the directory does not exist",
                "collect one with `episodic-memory collect --out",
            )

    def test_empty_data_directory(self, tmp_path, capsys):
        (tmp_path / "empty").mkdir()
        with nothing_written(tmp_path):
            fails(
                capsys,
                "pretrain",
                ["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), *TINY],
                r"is not a frame dataset \(no manifest\.json\)",
                "collect one with `episodic-memory collect --out",
            )

    @pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
    def test_corrupted_shard(self, dataset, tmp_path, capsys, damage):
        data = shutil.copytree(dataset, tmp_path / "data")
        shard = data / "shard-00001.npz"
        if damage == "garbage":
            shard.write_bytes(b"not a shard")
        elif damage == "truncated":
            shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
        else:
            shard.unlink()
        with nothing_written(tmp_path):  # the dataset is left as it is: collect is what repairs it
            err = fails(
                capsys,
                "pretrain",
                ["--data", str(data), "--out", str(tmp_path / "out"), *TINY],
                "shard shard-00001.npz",
                "corrupted" if damage != "missing" else "listed in the manifest .* but missing",
                "re-run `episodic-memory collect --out",
            )
        assert "allow_pickle" not in err  # numpy's advice to unpickle an untrusted file must not reach the user

    def test_resume_from_a_missing_checkpoint(self, dataset, run, tmp_path, capsys):
        out, _ = copy_run(run, tmp_path)
        with nothing_written(tmp_path, run):
            fails(
                capsys,
                "pretrain",
                ["--data", str(dataset), "--out", str(out), *TINY, "--resume", str(out / "checkpoints" / "step-9")],
                "step-9': the directory does not exist",
                "--resume takes a checkpoint directory OUT/checkpoints/step-NNNNNNN",
            )
            fails(
                capsys,
                "pretrain",
                ["--data", str(dataset), "--out", str(tmp_path / "fresh"), *TINY, "--resume"],
                "--resume: no checkpoint in .*fresh/checkpoints'; run without --resume to start",
            )

    def test_resume_from_a_file(self, dataset, run, tmp_path, capsys):
        out, checkpoint = copy_run(run, tmp_path)
        with nothing_written(tmp_path):
            fails(
                capsys,
                "pretrain",
                ["--data", str(dataset), "--out", str(out), *TINY, "--resume", str(checkpoint / "model.safetensors")],
                "model.safetensors' is a file, not a checkpoint directory",
            )

    @pytest.mark.parametrize(
        ("name", "damage"),
        [
            ("model.safetensors", "garbage"),
            ("model.safetensors", "truncated"),
            ("trainer.pt", "garbage"),
            ("trainer.pt", "truncated"),
            ("trainer.pt", "missing"),
        ],
    )
    def test_resume_from_a_corrupted_checkpoint(self, dataset, run, tmp_path, capsys, name, damage):
        out, checkpoint = copy_run(run, tmp_path)
        path = checkpoint / name
        if damage == "garbage":
            path.write_bytes(b"\x00garbage" * 10)
        elif damage == "truncated":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        else:
            path.unlink()
        argv = ["--data", str(dataset), "--out", str(out), "--steps", "4", *TINY, "--resume"]
        with nothing_written(tmp_path):  # the damaged checkpoint, the model and metrics.jsonl are all kept
            fails(
                capsys,
                "pretrain",
                [*argv, str(checkpoint)],
                "step-0000002' is corrupted or incomplete",
                "delete .*step-0000002' to resume from the checkpoint before it, or start afresh in another --out",
            )
            if damage == "missing":  # the newest checkpoint in --out: without trainer.pt it does not count as one
                fails(capsys, "pretrain", argv, r"no complete checkpoint in .*\['step-0000002'\] lack trainer.pt")
            else:
                fails(capsys, "pretrain", argv, "step-0000002' is corrupted or incomplete")

    @pytest.mark.parametrize(
        ("flags", "difference"),
        [
            (["--model", "km"], "model: 'dkm' -> 'km'"),
            (["--num-slots", "8"], "num_slots: 4 -> 8"),
            (["--code-size", "16"], "code_size: 8 -> 16"),
            (["--likelihood", "bernoulli"], "likelihood: 'gaussian' -> 'bernoulli'"),
        ],
    )
    def test_resume_as_another_model_kind_or_shape(self, dataset, run, tmp_path, capsys, flags, difference):
        out, _ = copy_run(run, tmp_path)
        with nothing_written(tmp_path):
            fails(
                capsys,
                "pretrain",
                ["--data", str(dataset), "--out", str(out), "--steps", "4", *TINY, *flags, "--resume"],
                re.escape(f"with a different experiment ({difference})"),
                "pass the options of that run again, or start a new run in another --out",
            )

    @pytest.mark.parametrize(
        ("model", "difference"),
        [
            (KanervaMachine((FRAME, FRAME, 3), 8, 4, "gaussian", hidden_channels=4), "KanervaMachine vs DynamicKanervaMachine"),
            (DynamicKanervaMachine((FRAME, FRAME, 3), 8, 6, "gaussian", hidden_channels=4), "num_slots: 6 vs 4"),
        ],
    )
    def test_resume_a_checkpoint_whose_model_is_another_kind_or_shape(self, dataset, run, tmp_path, capsys, model, difference):
        out, checkpoint = copy_run(run, tmp_path)
        model.save(checkpoint / "model.safetensors")  # files of two runs mixed up: the options match trainer.pt
        with nothing_written(tmp_path):
            fails(
                capsys,
                "pretrain",
                ["--data", str(dataset), "--out", str(out), "--steps", "4", *TINY, "--resume"],
                "step-0000002' is inconsistent: its model.safetensors is not the model its trainer.pt describes",
                re.escape(difference),
                "delete .*step-0000002'",
            )

    def test_resume_on_frames_of_another_shape(self, frames8, run, tmp_path, capsys):
        out, _ = copy_run(run, tmp_path)
        with nothing_written(tmp_path, frames8):
            fails(
                capsys,
                "pretrain",
                ["--data", str(frames8), "--out", str(out), "--steps", "4", *TINY, "--resume"],
                re.escape("have shape (8, 8, 3), the model expects (16, 16, 3)"),
                "resume with --data of the frames it was trained on",
            )

    @pytest.mark.parametrize(
        ("flags", "message"),
        [
            (["--log-every", "0"], "log_every must be a positive int, actual value: 0"),
            (["--checkpoint-every", "0"], "checkpoint_every must be a positive int, actual value: 0"),
            (["--keep-checkpoints", "0"], "keep_checkpoints must be a positive int, actual value: 0"),
            (["--lr", "-1"], "lr must be a positive finite number, actual value: -1.0"),
            (["--lr", "nan"], "lr must be a positive finite number, actual value: nan"),
            (["--mode", "layouts=0"], "mode must be 'mixed' or 'layouts=n'"),
            (["--mode", "layouts=500"], "--mode layouts=500 needs 500 layouts per episode, the train split of .* has"),
        ],
    )
    def test_bad_options_fail_before_any_file_is_written(self, dataset, tmp_path, capsys, flags, message):
        with nothing_written(tmp_path):
            fails(capsys, "pretrain", ["--data", str(dataset), "--out", str(tmp_path / "out"), *TINY, *flags], message)

    def test_bad_options_from_a_config_file(self, dataset, tmp_path, capsys):
        config = tmp_path / "pretrain.yaml"
        config.write_text("device: gpu\n")  # the choices of a flag are checked for file values too
        with nothing_written(tmp_path):
            fails(
                capsys,
                "pretrain",
                ["--config", str(config), "--data", str(dataset), "--out", str(tmp_path / "out")],
                r"device must be one of \('auto', 'cpu', 'cuda'\), actual value: 'gpu'",
            )

    def test_evaluation_that_cannot_run_fails_before_training(self, dataset, tmp_path, capsys):
        test_layouts = FrameDataset(dataset, split="test", test_fraction=TEST_FRACTION).num_layouts
        assert 0 < test_layouts < 8  # the capacity curve samples 'layouts=8' episodes
        with nothing_written(tmp_path):
            fails(
                capsys,
                "pretrain",
                ["--data", str(dataset), "--out", str(tmp_path / "out"), *TINY, "--evaluate", "true"],
                rf"modes \[.*'layouts=8'\], but the test split of .* has only {test_layouts} layouts \(it needs 8\)",
                "pass --evaluate false",
            )

    def test_options_are_checked_when_the_config_is_built(self):
        with pytest.raises(ValueError, match="batch_size must be a positive int, actual value: 0"):
            PretrainConfig(batch_size=0)
        with pytest.raises(ValueError, match="grad_clip must be a finite number >= 0.0, actual value: -1"):
            PretrainConfig(grad_clip=-1)
        with pytest.raises(ValueError, match="model must be one of .*actual value: 'gan'"):
            PretrainConfig(model="gan")
        PretrainConfig(grad_clip=0.0, image_every=0)  # both legal: they disable clipping and images


# ------------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------------
class TestEvaluate:
    def args(self, data: Path, model: str, out: Path, fraction: float = TEST_FRACTION) -> list[str]:
        return ["--data", str(data), "--model", model, "--out", str(out), "--device", "cpu", "--test-fraction", str(fraction)]

    def test_missing_model_file(self, dataset, tmp_path, capsys):
        with nothing_written(tmp_path, dataset):
            fails(
                capsys,
                "evaluate",
                self.args(dataset, f"dkm={tmp_path / 'absent.safetensors'}", tmp_path / "eval"),
                "--model dkm=.*absent.safetensors: no such file",
                "`episodic-memory pretrain --out DIR` writes DIR/model.safetensors",
            )

    @pytest.mark.parametrize("damage", ["garbage", "truncated", "not ours"])
    def test_corrupted_model_file(self, dataset, run, tmp_path, capsys, damage):
        path = tmp_path / "model.safetensors"
        if damage == "garbage":
            path.write_bytes(b"\x00" * 64)
        elif damage == "truncated":
            data = (run / "model.safetensors").read_bytes()
            path.write_bytes(data[: len(data) // 2])
        else:
            from safetensors.torch import save_file

            save_file({"w": torch.zeros(2)}, str(path))  # a safetensors file, but no model of this library
        with nothing_written(tmp_path, dataset):
            fails(
                capsys,
                "evaluate",
                self.args(dataset, f"dkm={path}", tmp_path / "eval"),
                "--model dkm=.*model.safetensors: ",
                "safetensors",
                "pass a model.safetensors written by `episodic-memory pretrain`",
            )

    def test_model_of_another_frame_shape(self, frames8, run, tmp_path, capsys):
        with nothing_written(tmp_path, frames8, run):
            fails(
                capsys,
                "evaluate",
                self.args(frames8, f"dkm={run / 'model.safetensors'}", tmp_path / "eval", fraction=0.5),
                re.escape("model 'dkm' expects frames of shape (16, 16, 3)"),
                re.escape("holds (8, 8, 3)"),
                "collected with --frame-size 16",
            )

    def test_test_split_too_small_for_the_capacity_curve(self, dataset, run, tmp_path, capsys):
        with nothing_written(tmp_path, dataset, run):
            fails(
                capsys,
                "evaluate",
                self.args(dataset, f"dkm={run / 'model.safetensors'}", tmp_path / "eval"),
                r"modes \[.*'layouts=8'\], but the test split of .* has only 3 layouts \(it needs 8\)",
                "pass --mode / --capacity-modes with fewer layouts",
            )

    @pytest.mark.parametrize(
        ("model", "message"), [("runs/dkm.safetensors", "--model must look like NAME=PATH"), ("=x", "NAME=PATH")]
    )
    def test_model_option_without_a_name(self, dataset, tmp_path, capsys, model, message):
        with nothing_written(tmp_path):
            fails(capsys, "evaluate", self.args(dataset, model, tmp_path / "eval"), message)

    def test_the_same_name_twice(self, dataset, run, tmp_path, capsys):
        path = run / "model.safetensors"
        argv = [*self.args(dataset, f"dkm={path}", tmp_path / "eval"), "--model", f"dkm={path}"]
        with nothing_written(tmp_path):
            fails(capsys, "evaluate", argv, "--model dkm: the name is given twice")


# ------------------------------------------------------------------------------------------------
# train-agent
# ------------------------------------------------------------------------------------------------
AGENT = ["--num-envs", "2", "--n-steps", "16", "--batch-size", "16", "--total-steps", "32", "--eval-episodes", "0"]
AGENT += ["--frame-size", str(FRAME), "--wandb-mode", "disabled", "--device", "cpu"]


class TestTrainAgent:
    def test_unknown_env_id_with_similar_ids(self, tmp_path, capsys):
        with nothing_written(tmp_path):
            fails(
                capsys,
                "train-agent",
                ["--env-id", "MiniGrid-MemoryS77-v0", "--memory", "none", "--out", str(tmp_path / "agent"), *AGENT],
                "unknown env id 'MiniGrid-MemoryS77-v0'",
                "Did you mean MiniGrid-MemoryS7-v0",
            )

    def test_unknown_env_id_says_how_to_list_the_ids(self, tmp_path, capsys):
        with nothing_written(tmp_path):
            err = fails(
                capsys,
                "train-agent",
                ["--env-id", "Qwertyuiop", "--out", str(tmp_path / "agent"), *AGENT],
                "unknown env id 'Qwertyuiop'",
                "gymnasium.pprint_registry()",
            )
        assert "Did you mean" not in err  # nothing is close to it

    def test_missing_memory_checkpoint(self, tmp_path, capsys):
        with nothing_written(tmp_path):
            fails(
                capsys,
                "train-agent",
                ["--memory", "km", "--memory-checkpoint", str(tmp_path / "km.safetensors"), "--out", str(tmp_path / "a"), *AGENT],
                "--memory-checkpoint .*km.safetensors': no such file",
                "`episodic-memory pretrain --model km --out DIR`",
                "leave out --memory-checkpoint",
            )

    def test_corrupted_memory_checkpoint(self, tmp_path, capsys):
        path = tmp_path / "dkm.safetensors"
        path.write_bytes(b"{}" * 8)
        with nothing_written(tmp_path):
            fails(
                capsys,
                "train-agent",
                ["--memory-checkpoint", str(path), "--out", str(tmp_path / "agent"), *AGENT],
                "--memory-checkpoint .*dkm.safetensors': .*not a readable safetensors checkpoint",
                "episodic-memory pretrain --model dkm",
            )

    @pytest.mark.parametrize(
        ("memory", "model", "message"),
        [
            (
                "dkm",
                VariationalAutoencoder((FRAME, FRAME, 3), code_size=8, hidden_channels=4),
                "holds a VariationalAutoencoder, which has no memory; --memory needs a DynamicKanervaMachine or .*KanervaMachine",
            ),
            (
                "hopfield-storkey",
                VariationalAutoencoder((FRAME, FRAME, 3), code_size=8, hidden_channels=4),
                "holds a VariationalAutoencoder, which has no memory",
            ),
            (
                "km",
                DynamicKanervaMachine((FRAME, FRAME, 3), 8, 4, hidden_channels=4),
                "--memory km is the memory of a KanervaMachine, but --memory-checkpoint .* holds a DynamicKanervaMachine; "
                "use --memory dkm",
            ),
        ],
    )
    def test_memory_checkpoint_of_another_kind(self, tmp_path, capsys, memory, model, message):
        path = model.save(tmp_path / "model.safetensors")
        with nothing_written(tmp_path):
            fails(
                capsys,
                "train-agent",
                ["--memory", memory, "--memory-checkpoint", str(path), "--out", str(tmp_path / "agent"), *AGENT],
                message,
            )

    def test_memory_checkpoint_that_cannot_read_rgb_frames(self, tmp_path, capsys):
        gray = tmp_path / "gray.safetensors"
        DynamicKanervaMachine((16, 16, 1), code_size=4, num_slots=3, likelihood="gaussian", hidden_channels=4).save(gray)
        argv = ["--memory-checkpoint", str(gray), "--out", str(tmp_path / "agent"), *AGENT]
        with nothing_written(tmp_path):
            fails(
                capsys,
                "train-agent",
                argv,
                re.escape(f"reads frames of shape (16, 16, 1), it cannot read the agent's frames of shape ({FRAME}, {FRAME}, 3)"),
            )

    @pytest.fixture(scope="class")
    def agent_run(self, tmp_path_factory) -> Path:
        """A finished 32-step PPO run without memory: checkpoints/step-000000032."""
        out = tmp_path_factory.mktemp("agent")
        assert main(["train-agent", "--memory", "none", "--out", str(out), *AGENT]) == 0
        return out

    def test_a_fresh_start_over_checkpoints(self, agent_run, capsys):
        with nothing_written(agent_run):
            fails(
                capsys,
                "train-agent",
                ["--memory", "none", "--out", str(agent_run), *AGENT],
                "already holds checkpoints: pass --resume to continue that run, or choose another --out",
            )

    def test_resume_with_another_experiment(self, agent_run, capsys):
        with nothing_written(agent_run):
            fails(
                capsys,
                "train-agent",
                ["--memory", "none", "--out", str(agent_run), *AGENT, "--resume", "--ent-coef", "0.1", "--total-steps", "64"],
                "cannot resume .*step-000000032' with a different experiment \\(ent_coef: 0.01 -> 0.1\\)",
                "pass the options of that run again",
            )

    def test_resume_from_a_corrupted_checkpoint(self, agent_run, tmp_path, capsys):
        out = shutil.copytree(agent_run, tmp_path / "agent")
        (out / "checkpoints" / "step-000000032" / "agent.zip").write_bytes(b"not a zip")
        with nothing_written(tmp_path):
            fails(
                capsys,
                "train-agent",
                ["--memory", "none", "--out", str(out), *AGENT, "--resume", "--total-steps", "64"],
                "checkpoint .*step-000000032' is corrupted",
                "delete it to resume from the checkpoint before it",
            )

    @pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
    def test_device_cuda_without_a_gpu(self, tmp_path, capsys):
        with nothing_written(tmp_path):
            fails(
                capsys,
                "train-agent",
                ["--memory", "none", "--out", str(tmp_path / "agent"), *AGENT, "--device", "cuda"],
                "--device cuda: no CUDA device is available; use --device cpu or auto",
            )


# ------------------------------------------------------------------------------------------------
# evaluate-agent
# ------------------------------------------------------------------------------------------------
class TestEvaluateAgent:
    def test_missing_run_directory(self, tmp_path, capsys):
        with nothing_written(tmp_path):
            fails(
                capsys,
                "evaluate-agent",
                ["--agent", str(tmp_path / "runs" / "agent" / "agent.zip")],
                "no agent at .*agent.zip'; train one with `episodic-memory train-agent --out DIR`",
            )

    def test_run_directory_instead_of_the_agent(self, tmp_path, capsys):
        (tmp_path / "agent").mkdir()
        with nothing_written(tmp_path):
            fails(
                capsys,
                "evaluate-agent",
                ["--agent", str(tmp_path / "agent")],
                "is a directory; pass the agent.zip in it",
            )

    def test_missing_agent_config(self, tmp_path, capsys):
        (tmp_path / "agent.zip").write_bytes(b"PK")
        with nothing_written(tmp_path):
            fails(
                capsys,
                "evaluate-agent",
                ["--agent", str(tmp_path / "agent.zip")],
                "agent_config.json' is missing: it is written by `episodic-memory train-agent`",
            )

    @pytest.mark.parametrize(
        ("config", "message"),
        [
            ("{not json", "agent_config.json' is not valid JSON"),
            ("[1, 2]", "must hold a JSON object"),
            (json.dumps({"algo": "ddpg", "memory": "none"}), "holds invalid agent options"),
        ],
    )
    def test_corrupted_agent_config(self, tmp_path, capsys, config, message):
        (tmp_path / "agent.zip").write_bytes(b"PK")
        (tmp_path / "agent_config.json").write_text(config)
        with nothing_written(tmp_path):
            fails(capsys, "evaluate-agent", ["--agent", str(tmp_path / "agent.zip")], message, "train the agent again")

    def test_corrupted_agent(self, tmp_path, capsys):
        (tmp_path / "agent.zip").write_bytes(b"not a zip")
        config = {"env_id": "MiniGrid-MemoryS7-v0", "memory": "none", "frame_size": FRAME, "num_envs": 1}
        (tmp_path / "agent_config.json").write_text(json.dumps(config))
        with nothing_written(tmp_path):  # in particular, no evaluation.json
            fails(
                capsys,
                "evaluate-agent",
                ["--agent", str(tmp_path / "agent.zip"), "--episodes", "1"],
                "cannot load the agent .*agent.zip'",
                "train the agent again",
            )

    @pytest.mark.parametrize("episodes", ["0", "-3"])
    def test_no_episodes(self, tmp_path, capsys, episodes):
        (tmp_path / "agent.zip").write_bytes(b"PK")
        (tmp_path / "agent_config.json").write_text(json.dumps({"memory": "none", "frame_size": FRAME}))
        with nothing_written(tmp_path):  # no evaluation.json of NaNs
            fails(
                capsys,
                "evaluate-agent",
                ["--agent", str(tmp_path / "agent.zip"), "--episodes", episodes],
                f"--episodes must be an int >= 1 \\(episodes to evaluate\\), actual value: {episodes}",
            )

    def test_without_an_agent(self, tmp_path, capsys):
        with nothing_written(tmp_path):
            fails(capsys, "evaluate-agent", ["--episodes", "3"], "missing required options: --agent")

    def test_memory_of_a_fresh_memory_agent_is_gone(self, tmp_path, capsys):
        (tmp_path / "agent.zip").write_bytes(b"PK")
        (tmp_path / "agent_config.json").write_text(json.dumps({"memory": "dkm", "frame_size": FRAME}))
        with nothing_written(tmp_path):
            fails(
                capsys,
                "evaluate-agent",
                ["--agent", str(tmp_path / "agent.zip")],
                "machine.safetensors' is missing: it holds the memory the agent was trained with",
                "train the agent again",
            )

    def test_memory_checkpoint_of_the_agent_is_gone(self, tmp_path, capsys):
        (tmp_path / "agent.zip").write_bytes(b"PK")
        config = {"memory": "dkm", "memory_checkpoint": str(tmp_path / "gone.safetensors"), "frame_size": FRAME}
        (tmp_path / "agent_config.json").write_text(json.dumps(config))
        with nothing_written(tmp_path):
            fails(
                capsys,
                "evaluate-agent",
                ["--agent", str(tmp_path / "agent.zip")],
                "the memory checkpoint of .*agent_config.json' .*gone.safetensors': no such file",
                "the agent was trained with that memory: put the file back",
            )


# ------------------------------------------------------------------------------------------------
# collect
# ------------------------------------------------------------------------------------------------
class TestCollect:
    def test_unknown_env_id_touches_no_disk(self, tmp_path, capsys):
        with nothing_written(tmp_path):
            fails(
                capsys,
                "collect",
                ["--out", str(tmp_path / "frames"), "--envs", "MiniGrid-FourRoom-v0"],
                "unknown env id 'MiniGrid-FourRoom-v0'",
                "Did you mean MiniGrid-FourRooms-v0",
            )

    def test_unknown_env_id_leaves_an_existing_dataset_alone(self, dataset, tmp_path, capsys):
        data = shutil.copytree(dataset, tmp_path / "data")
        argv = ["--out", str(data), "--envs", "MiniGrid-FourRooms-v0", "MiniGrid-Nowhere-v0", "--frame-size", str(FRAME)]
        with nothing_written(tmp_path):
            fails(capsys, "collect", [*argv, "--layouts-per-env", "20"], "unknown env id 'MiniGrid-Nowhere-v0'")


# ------------------------------------------------------------------------------------------------
# The wrappers: NaN / inf observations mid-episode
# ------------------------------------------------------------------------------------------------
class FloatFrames(gymnasium.Env):
    """Random float frames in [0, 1] in episodes of ``length`` steps; frame number ``bad_frame`` (counted over
    all episodes from 0, the first reset frame) holds ``bad`` in one pixel."""

    observation_space = spaces.Box(0.0, 1.0, (FRAME, FRAME, 3), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, bad_frame: int | None = None, bad: float = math.nan, length: int = 100) -> None:
        self.bad_frame, self.bad, self.length = bad_frame, bad, length
        self.frames = self.t = 0

    def _frame(self) -> np.ndarray:
        frame = self.np_random.random((FRAME, FRAME, 3), dtype=np.float32)
        if self.frames == self.bad_frame:
            frame[3, 5, 1] = self.bad
        self.frames += 1
        return frame

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._frame(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        return self._frame(), 0.0, self.t >= self.length, False, {}


@pytest.fixture(scope="module")
def dkm() -> DynamicKanervaMachine:
    torch.manual_seed(0)
    return DynamicKanervaMachine((FRAME, FRAME, 3), code_size=12, num_slots=6, likelihood="gaussian", hidden_channels=4).eval()


def memory_state(wrapper) -> list[torch.Tensor]:
    """Copies of what the wrapper's memories hold: the mean R, the covariance U and the addressing inverse."""
    online = wrapper.core.backend.online
    return [online.R.clone(), online.U.clone(), online.A_inv.clone()]


BAD_VALUES = pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])


@BAD_VALUES
def test_wrapper_refuses_bad_observations_and_keeps_its_memory(dkm, bad):
    env = EpisodicMemoryWrapper(FloatFrames(bad_frame=3, bad=bad), dkm, attractor_steps=2)
    env.reset(seed=0)
    env.step(0)
    env.step(0)
    before = memory_state(env)
    assert not torch.equal(before[0][0], dkm.memory.prior_mean)  # two frames written: the check below can fail
    with pytest.raises(ValueError, match="observations hold NaN or inf values"):
        env.step(0)
    for tensor, saved in zip(memory_state(env), before, strict=True):
        assert torch.equal(tensor, saved)
    obs, *_ = env.step(0)  # a good frame again: read from the untouched memory, then written
    np.testing.assert_array_equal(obs["memory"], before[0][0].numpy())
    assert np.isfinite(obs["retrieval"]).all() and np.isfinite(obs["novelty"]).all()


@BAD_VALUES
@pytest.mark.parametrize(
    ("bad_frame", "length"),
    [
        (3, 100),  # mid-episode
        (3, 3),  # the terminal observation of an episode (infos["terminal_observation"])
        (4, 3),  # the first frame of the next episode, returned by the same step
    ],
    ids=["mid-episode", "terminal", "next-episode"],
)
def test_vec_wrapper_refuses_bad_observations_and_keeps_every_memory(dkm, bad, bad_frame, length):
    envs = [lambda: FloatFrames(), lambda: FloatFrames(bad_frame, bad, length), lambda: FloatFrames(length=length)]
    venv = VecEpisodicMemory(DummyVecEnv(envs), dkm, attractor_steps=2)
    venv.seed(0)
    venv.reset()
    actions = np.zeros(3, dtype=np.int64)
    venv.step(actions)
    venv.step(actions)
    before = memory_state(venv)
    with pytest.raises(ValueError, match=r"observations of sub-environment\(s\) 1.* hold NaN or inf; no memory was changed"):
        venv.step(actions)
    for tensor, saved in zip(memory_state(venv), before, strict=True):
        assert torch.equal(tensor, saved)  # no memory written, none reset


# ------------------------------------------------------------------------------------------------
# wandb: unreachable network, disabled mode (the real wandb, never mocked)
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def wandb_home(tmp_path, monkeypatch) -> Path:
    """wandb's own directories under tmp_path, and its server at a closed port (127.0.0.1:9 refuses connections)."""
    home = tmp_path / "wandb-home"
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(home / name.lower()))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # a key, so that wandb gets as far as the network
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return home


def test_online_logger_without_network_warns_and_keeps_the_local_log(tmp_path, wandb_home):
    # the closed port, or under load the init timeout that fires first: either way wandb cannot start
    with pytest.warns(UserWarning, match=r"(?s)wandb could not start .*logging to .*metrics\.jsonl only"):
        logger = RunLogger(tmp_path / "run", "online", "episodic-memory-tests", {"lr": 0.1}, "run")
    assert logger.run is None and logger.run_id is None and logger.run_dir is None
    logger.log({"train/loss": 2.5}, 1)
    logger.log({"train/loss": float("nan")}, 2)
    logger.log_images({"images/x": np.zeros((4, 4, 3), np.uint8)}, 2)
    logger.finish()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records == [{"step": 1, "train/loss": 2.5}, {"step": 2, "train/loss": "nan"}]


def test_pretrain_online_without_network_finishes_and_writes_its_model(dataset, tmp_path, wandb_home, capsys):
    out = tmp_path / "run"
    argv = ["--data", str(dataset), "--out", str(out), "--steps", "3", *TINY, "--wandb-mode", "online"]
    with pytest.warns(UserWarning, match="wandb could not start"):
        assert main(["pretrain", *argv]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 3 and summary["wandb_run_dir"] is None
    model = MemoryMachine.load(out / "model.safetensors")
    assert model.kind == "DynamicKanervaMachine" and latest_checkpoint(out).name == "step-0000003"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and all(np.isfinite(r["train/loss"]) for r in records)
    assert [p for p in out.rglob("*") if ".tmp" in p.name] == []


def test_disabled_wandb_writes_no_wandb_files(dataset, tmp_path, wandb_home):
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # disabled means wandb is not even tried: no warning either
        logger = RunLogger(out / "logger", "disabled")
        logger.log({"x": 1.0}, 1)
        logger.finish()
        summary = pretrain(
            PretrainConfig(
                data=str(dataset),
                out=str(out / "pretrain"),
                code_size=8,
                num_slots=4,
                hidden_channels=4,
                episode_length=4,
                batch_size=2,
                steps=2,
                image_every=0,
                evaluate=False,
                wandb_mode="disabled",
                test_fraction=TEST_FRACTION,
                device="cpu",
            ),
            progress=False,
        )
    assert summary["wandb_run_dir"] is None and (out / "pretrain" / "model.safetensors").is_file()
    assert sorted(p.name for p in (out / "logger").iterdir()) == ["metrics.jsonl"]
    assert [p for p in out.rglob("*") if "wandb" in p.name] == []
    assert not wandb_home.exists()  # nor anything in wandb's own directories
