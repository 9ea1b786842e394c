"""The demo: the whole path at a tiny scale, its summary against the stage reports, reuse of finished stages."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from episodic_memory.train.cli import main
from episodic_memory.train.demo import PRETRAIN_MAZES, SCALES, SUMMARY, DemoConfig, make_plan, run_demo

ROOT = Path(__file__).resolve().parents[1]


def run(argv: list[str]) -> tuple[int, str]:
    """``episodic-memory demo ARGV``: exit status and what it printed."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["demo", *argv])
    return status, stdout.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "run"
    status, printed = run(["--scale", "tiny", "--out", str(out), "--wandb-mode", "offline"])
    assert status == 0, printed
    return out, printed


# ------------------------------------------------------------------------------------------------
# The plan (fast)
# ------------------------------------------------------------------------------------------------
def test_small_and_full_scales_train_the_model_of_the_pretrain_config():
    saved = yaml.safe_load((ROOT / "configs" / "pretrain-mazes.yaml").read_text())
    assert {k: saved[k] for k in PRETRAIN_MAZES} == PRETRAIN_MAZES
    assert SCALES["full"].pretrain["steps"] == saved["steps"] == 3000
    for scale in ("small", "full"):
        pretrain = make_plan(DemoConfig(scale=scale)).pretrain
        assert {k: getattr(pretrain, k) for k in PRETRAIN_MAZES} == PRETRAIN_MAZES


def test_plan_defaults_and_overrides():
    small = make_plan(DemoConfig())
    assert small.out == Path("runs/demo") and make_plan(DemoConfig(scale="full")).out == Path("runs/demo-full")
    assert small.pretrain.data == small.collect.out == str(Path("runs/demo/data"))
    memories = {name: agent.memory for name, agent in small.agents.items()}
    assert memories == {"ppo+dkm": "dkm", "ppo": "none", "second:ppo+dkm": "dkm", "second:ppo": "none"}
    assert Path(small.agents["ppo+dkm"].memory_checkpoint).is_absolute()
    assert small.agents["ppo"].env_id == "MiniGrid-MemoryS7-v0" and small.agents["ppo"].num_envs == 8
    second = small.agents["second:ppo+dkm"]
    assert second.env_id == small.agents["second:ppo"].env_id == "popgym-RepeatFirstEasy-v0" and second.imports == ("popgym",)
    assert second.memory_checkpoint is None and second.readouts == ("recall",) and second.recall_positions == (0,)  # fresh
    assert second.total_steps == 50_000 and make_plan(DemoConfig(scale="full")).agents["second:ppo"].total_steps == 100_000
    plan = make_plan(
        DemoConfig(
            out="x",
            seed=3,
            layouts_per_env=5,
            pretrain_steps=7,
            agent_steps=99,
            second_agent_steps=77,
            agent_eval_episodes=4,
            device="cpu",
        )
    )
    assert (plan.collect.layouts_per_env, plan.pretrain.steps, plan.agent_eval_episodes) == (5, 7, 4)
    assert [a.total_steps for a in plan.agents.values()] == [99, 99, 77, 77]
    assert all(a.seed == 3 and a.device == "cpu" for a in plan.agents.values())
    assert plan.pretrain.seed == plan.collect.seed == plan.evaluation.seed == 3


def test_flags_and_yaml(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("episodic_memory.train.cli.run_demo", lambda config: seen.append(config) or 0)
    path = tmp_path / "demo.yaml"
    path.write_text("agent_steps: 1000\nseed: 2\n")
    assert main(["demo", "--config", str(path), "--seed", "5", "--scale", "full"]) == 0
    assert seen == [DemoConfig(scale="full", agent_steps=1000, seed=5)]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scale": "huge"}, r"scale must be one of \('small', 'full'\), actual value: 'huge'"),
        ({"pretrain_steps": 0}, "pretrain_steps must be a positive int, actual value: 0"),
        ({"rl_threads": -1}, "rl_threads must be an int >= 0, actual value: -1"),
    ],
)
def test_bad_options(changes, message):
    with pytest.raises(ValueError, match=message):
        replace(DemoConfig(), **changes)


def test_refuses_a_directory_it_did_not_make(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.txt").write_text("not the demo's")
    assert main(["demo", "--scale", "tiny", "--out", str(tmp_path), "--wandb-mode", "disabled"]) == 2
    assert "exists but was not made by `episodic-memory demo`" in capsys.readouterr().err
    assert (tmp_path / "data" / "mine.txt").read_text() == "not the demo's"


# ------------------------------------------------------------------------------------------------
# The whole path at the tiny scale
# ------------------------------------------------------------------------------------------------
def test_every_listed_artefact_exists(demo):
    out, printed = demo
    summary = json.loads((out / SUMMARY).read_text())
    assert len(summary["artefacts"]) >= 15
    for label, path in summary["artefacts"].items():
        assert Path(path).exists(), label
        assert path in printed
    assert {Path(p).name for p in summary["artefacts"].values()} >= {
        "manifest.json",
        "model.safetensors",
        "report.json",
        "nll.png",
        "denoising.png",
        "agent.zip",
        "evaluation.json",
    }
    assert len(summary["wandb_runs"]) == 5  # pretraining and the four agents
    for run_dir, line in zip(summary["wandb_runs"], summary["wandb_sync"], strict=True):
        assert Path(run_dir).is_dir() and line == f"wandb sync {run_dir}" and line in printed
    for stage in ("collect", "pretrain", "evaluate", "ppo+dkm", "ppo", "second:ppo+dkm", "second:ppo"):
        assert summary["timings"][stage]["seconds"] > 0 and not summary["timings"][stage]["reused"]


def test_summary_numbers_are_those_of_the_stage_reports(demo):
    out, printed = demo
    summary = json.loads((out / SUMMARY).read_text())
    report = json.loads((out / "eval" / "report.json").read_text())["models"]["dkm"]
    assert summary["memory"]["conditional_nll_bits_per_dim"] == report["conditional_nll"]["bits_per_dim"]
    assert summary["memory"]["conditional_nll_nats"] == report["conditional_nll"]["nats"]
    mse = report["denoising"]["gaussian"]["mse"]
    memory = summary["memory"]
    assert (memory["denoising_mse_first"], memory["denoising_mse_best"], memory["denoising_mse_last"]) == (
        mse[0],
        min(mse),
        mse[-1],
    )
    assert mse[memory["denoising_best_iteration"]] == min(mse) and memory["denoising_iterations"] == len(mse) - 1
    converged = report["denoising"]["gaussian"]["converged"]
    assert memory["denoising_mse_converged"] == converged["mse"][-1]
    assert memory["denoising_converged_iterations"] == converged["iterations"]
    assert f"{report['conditional_nll']['bits_per_dim']:.3f} bits/dim" in printed
    agents = (("ppo+dkm", "ppo-dkm"), ("ppo", "ppo"), ("second:ppo+dkm", "second-ppo-dkm"), ("second:ppo", "second-ppo"))
    for name, directory in agents:
        evaluation = json.loads((out / directory / "evaluation.json").read_text())
        agent = summary["agents"][name]
        records = [json.loads(line) for line in (out / directory / "metrics.jsonl").read_text().splitlines()]
        returns = [r["rollout/ep_rew_mean"] for r in records if "rollout/ep_rew_mean" in r]
        assert agent["mmer"] == (max(returns) if returns else None)
        assert (agent["success_rate"], agent["mean_return"], agent["episodes"]) == (
            evaluation["success_rate"],
            evaluation["mean_return"],
            evaluation["episodes"],
        )
        assert agent["steps"] >= 64 and agent["fps"] > 0
        assert evaluation["memory"] == ("dkm" if name.endswith("ppo+dkm") else "none")
    assert "agents on popgym-RepeatFirstEasy-v0: a fresh DKM" in printed


def test_a_second_run_reuses_the_finished_stages(demo):
    out, _ = demo
    files = [out / "data" / "manifest.json", *sorted((out / "data").glob("shard-*.npz")), out / "ppo-dkm" / "agent.zip"]
    before = [f.stat().st_mtime_ns for f in files]
    first = json.loads((out / SUMMARY).read_text())
    status, printed = run(["--scale", "tiny", "--out", str(out), "--wandb-mode", "offline"])
    assert status == 0
    assert [f.stat().st_mtime_ns for f in files] == before
    assert printed.count("reusing the finished stage") == 7
    second = json.loads((out / SUMMARY).read_text())
    assert all(timing["reused"] for timing in second["timings"].values())
    assert second["memory"] == first["memory"] and second["agents"] == first["agents"]


def test_an_interrupted_pretraining_continues_from_its_checkpoint(demo):
    out, _ = demo
    record_path = out / "dkm" / "demo_stage.json"
    record = json.loads(record_path.read_text())
    model = (out / "dkm" / "model.safetensors").read_bytes()
    shutil.rmtree(out / "dkm" / "checkpoints" / "step-0000004")  # as if stopped after the checkpoint of step 2
    record_path.write_text(json.dumps({**record, "status": "started", "result": None}))
    status, printed = run(["--scale", "tiny", "--out", str(out), "--wandb-mode", "disabled"])
    assert status == 0 and "continuing the unfinished stage" in printed
    assert (out / "dkm" / "model.safetensors").read_bytes() == model  # exact resumption: the same model...
    assert printed.count("reusing the finished stage") == 6  # ...so the evaluation and the agents are reused
    assert json.loads(record_path.read_text())["status"] == "finished"


def test_a_stage_with_missing_files_is_redone_and_the_rest_reused(demo):
    out, _ = demo
    (out / "eval" / "report.json").unlink()
    status, printed = run(["--scale", "tiny", "--out", str(out), "--wandb-mode", "disabled"])
    assert status == 0 and (out / "eval" / "report.json").is_file()
    assert "of its files are missing" in printed and printed.count("reusing the finished stage") == 6


def test_never_reuses_a_stage_made_with_other_settings(demo):
    out, _ = demo
    status = main(["demo", "--scale", "tiny", "--out", str(out), "--pretrain-steps", "5", "--wandb-mode", "disabled"])
    assert status == 2
    with pytest.raises(ValueError, match=r"made by a demo with other settings \(steps: 4 -> 5\) and is never reused"):
        run_demo(DemoConfig(scale="tiny", out=str(out), pretrain_steps=5, wandb_mode="disabled"), progress=False)
