"""benchmarks/memory_suite.py: its scores, its table, and a real (tiny) run that resumes and skips."""

from __future__ import annotations

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
    args = ["--tasks", "RepeatFirstEasy", "--methods", "ppo", "ppo+dkm", "--steps", "1024", "--out", str(tmp_path)]
    suite.main(args)
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["method"], r["steps"], r["resumed"]) for r in rows] == [("ppo", 1024, False), ("ppo+dkm", 1024, False)]
    for row in rows:
        assert -1.0 <= row["final_return"] <= row["mmer"] <= 1.0  # POPGym's returns lie in [-1, 1]
        assert row["fps"] > 0
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    assert "| RepeatFirstEasy | ppo+dkm | 0 | 1,024 |" in (tmp_path / "results.md").read_text()

    result_file = tmp_path / "RepeatFirstEasy" / "ppo" / "seed0" / "result.json"
    written = result_file.stat().st_mtime_ns
    suite.main(args)
    assert "2 runs, 2 finished already, 0 to train" in capsys.readouterr().out
    assert result_file.stat().st_mtime_ns == written

    suite.main([*args[:5], "--steps", "2048", "--out", str(tmp_path)])  # a bigger budget continues the runs
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["method"], r["steps"], r["resumed"]) for r in rows] == [("ppo", 2048, True), ("ppo+dkm", 2048, True)]
    curve = suite.training_curve(tmp_path / "RepeatFirstEasy" / "ppo" / "seed0")
    assert [step for step, _ in curve] == [1024, 2048]


def test_unknown_task_in_a_per_task_option_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown task 'MemoryS9'"):
        suite.main(["--memory-checkpoint", "MemoryS9=x.safetensors", "--out", str(tmp_path)])


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
