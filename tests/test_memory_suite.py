"""benchmarks/memory_suite.py: its scores, its table, and a real (tiny) run that resumes and skips."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # spawned workers import it by name too
import memory_suite as suite  # noqa: E402


def test_curve_scores_are_the_maximum_the_last_point_and_the_first_crossing() -> None:
    curve = [(1024, -0.5), (2048, 0.9), (3072, 0.7), (4096, 0.95)]
    assert suite.curve_scores(curve, 0.85) == {"mmer": 0.95, "final_return": 0.95, "steps_to_threshold": 2048}
    assert suite.curve_scores(curve[:3], 0.92)["steps_to_threshold"] is None
    assert suite.curve_scores(curve, None)["steps_to_threshold"] is None
    with pytest.raises(ValueError, match="no training episodes"):
        suite.curve_scores([], 0.85)


def _row(task: str, method: str, mmer: float, fps: float, seed: int = 0) -> dict:
    return {"task": task, "method": method, "seed": seed, "steps": 100, "seconds": 60.0, "fps": fps,
            "mmer": mmer, "final_return": mmer, "steps_to_threshold": None}  # fmt: skip


def test_comparisons_count_tasks_where_a_method_matches_recurrent_ppo() -> None:
    results = [
        _row("RepeatFirstEasy", "recurrent_ppo", -0.4, 50),
        _row("RepeatFirstEasy", "ppo+dkm", -0.3, 400),
        _row("CountRecallEasy", "recurrent_ppo", -0.5, 50),
        _row("CountRecallEasy", "ppo+dkm", -0.7, 600, seed=0),
        _row("CountRecallEasy", "ppo+dkm", -0.2, 600, seed=1),  # mean -0.45 over the seeds: matches
        _row("AutoencodeEasy", "ppo+dkm", 0.9, 600),  # no RecurrentPPO beside it: not counted
    ]
    (line,) = suite.comparisons(results)
    assert line.startswith("- ppo+dkm: MMER ≥ recurrent_ppo's on 2/2 POPGym tasks")
    assert "10.0× its fps" in line  # median of 8x and 12x
    table = suite.results_table(results)
    assert "| CountRecallEasy | ppo+dkm | 0,1 | 100 | -0.45 ± 0.25 |" in table


def test_a_tiny_suite_runs_skips_finished_runs_and_extends_budgets(tmp_path: Path, capsys) -> None:
    # 6 rollouts of 8 x 128 steps: RepeatFirstEasy's 51-step episodes fill the 100-episode window in the last one.
    args = ["--tasks", "RepeatFirstEasy", "--methods", "ppo", "ppo+dkm", "--steps", "6144", "--out", str(tmp_path)]
    suite.main(args)
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["method"], r["steps"], r["resumed"]) for r in rows] == [("ppo", 6144, False), ("ppo+dkm", 6144, False)]
    for row in rows:
        assert -1.0 <= row["final_return"] <= row["mmer"] <= 1.0  # POPGym's returns lie in [-1, 1]
        assert row["fps"] > 0
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    assert "| RepeatFirstEasy | ppo+dkm | 0 | 6,144 |" in (tmp_path / "results.md").read_text()

    result_file = tmp_path / "RepeatFirstEasy" / "ppo" / "seed0" / "result.json"
    written = result_file.stat().st_mtime_ns
    suite.main(args)
    assert "2 runs, 2 finished already, 0 to train" in capsys.readouterr().out
    assert result_file.stat().st_mtime_ns == written
    suite.main(["--tasks", "RepeatFirstEasy", "--methods", "ppo", "--steps", "6144", "--out", str(tmp_path)])
    assert [r["method"] for r in json.loads((tmp_path / "results.json").read_text())] == ["ppo", "ppo+dkm"]  # adds, keeps

    suite.main([*args[:5], "--steps", "7168", "--out", str(tmp_path)])  # a bigger budget continues the runs
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["method"], r["steps"], r["resumed"]) for r in rows] == [("ppo", 7168, True), ("ppo+dkm", 7168, True)]
    run = tmp_path / "RepeatFirstEasy" / "ppo" / "seed0"
    windows = [json.loads(line).get("rollout/ep_window") for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert windows[:6] == [16, 40, 56, 80, 96, 100]  # 8 envs, 51-step episodes: floor(128 i / 51) each, at most 100
    full = [1024 * (i + 1) for i, w in enumerate(windows) if w >= 100]
    assert [step for step, _ in suite.training_curve(run)] == full and full  # only full 100-episode windows


def test_a_training_curve_starts_once_its_window_holds_100_episodes(tmp_path: Path) -> None:
    records = [
        {"step": 1024, "rollout/ep_rew_mean": 0.85, "rollout/ep_len_mean": 40.0, "rollout/ep_window": 7},  # lucky quick ones
        {"step": 2048, "train/loss": 0.1},  # no curve point
        {"step": 3072, "rollout/ep_rew_mean": 0.5, "rollout/ep_len_mean": 30.0, "rollout/ep_window": 100},
        {"step": 4096, "rollout/ep_rew_mean": 0.6, "rollout/ep_len_mean": 30.0},  # logged before the window: 4096/30 >= 100
        {"step": 5120, "rollout/ep_rew_mean": 0.9, "rollout/ep_len_mean": 60.0},  # 5120/60 < 100 episodes
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert suite.training_curve(tmp_path) == [(3072, 0.5), (4096, 0.6)]


def test_unknown_task_in_a_per_task_option_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown task 'MemoryS9'"):
        suite.main(["--memory-checkpoint", "MemoryS9=x.safetensors", "--out", str(tmp_path)])


def test_the_tasks_popgym_marks_as_needing_the_previous_action_get_it_for_every_method() -> None:
    import gymnasium
    import popgym  # noqa: F401 - registers the ids

    args = argparse.Namespace(memory_checkpoint={}, device="cpu", num_envs=8, eval_episodes=0, wandb_mode="disabled",
                              out="unused", steps=1000)  # fmt: skip
    for name in suite.POPGYM_TASKS:
        needs = gymnasium.make(suite.TASKS[name].env_id).unwrapped.obs_requires_prev_action
        assert {suite.run_config(name, method, 0, args).previous_action for method in suite.METHODS} == {needs}, name


def test_the_probe_finds_the_paid_action_of_popgym_tasks() -> None:
    import gymnasium
    import popgym  # noqa: F401 - registers the ids
    import popgym_probe

    env = gymnasium.make("popgym-RepeatFirstEasy-v0")
    first, _ = env.reset(seed=3)
    for _ in range(5):
        assert popgym_probe.correct_action(env.unwrapped, env.action_space) == first  # the first card, whatever came since
        env.step(env.action_space.sample())
    env = gymnasium.make("popgym-CountRecallEasy-v0")
    obs, _ = env.reset(seed=3)
    seen = [int(obs[0])]
    for _ in range(5):
        value, query = (int(v) for v in obs)
        assert popgym_probe.correct_action(env.unwrapped, env.action_space) == seen.count(query)  # how often it was dealt
        obs, *_ = env.step(0)
        seen.append(int(obs[0]))


def test_the_mmer_table_has_a_row_per_method_and_a_column_per_task() -> None:
    results = [
        _row("RepeatFirstEasy", "ppo", -0.4, 1000),
        _row("RepeatFirstEasy", "ppo", -0.2, 1000, seed=1),
        _row("CountRecallEasy", "ppo", -0.9, 500),
        _row("CountRecallEasy", "ppo+dkm", -0.8, 300),
    ]
    lines = suite.mmer_table(results).splitlines()
    assert lines[0] == "| method | RepeatFirstEasy | CountRecallEasy | fps (median) |"
    assert lines[2] == "| ppo | -0.30 ± 0.10 (2) | -0.90 (1) | 1000 |"
    assert lines[3] == "| ppo+dkm |  | -0.80 (1) | 300 |"
