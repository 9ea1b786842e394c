"""The memory suite: methods x tasks x seeds on one step budget, scored with POPGym's MMER.

Every run is ``episodic-memory train-agent`` with the suite's settings (8 envs, default PPO
hyperparameters, one torch thread); only the method's options differ. Concentration and MineSweeper,
which POPGym marks ``obs_requires_prev_action`` (their observations do not say which card or tile the
agent chose), get the previous action in the observation for every method (``--previous-action true``),
as POPGym's own baselines run them. For every run the suite reads
the training curve (``rollout/ep_rew_mean``, the mean extrinsic return of the last 100 episodes,
logged after every rollout) from its ``metrics.jsonl`` and reports

- ``mmer``: POPGym's metric (Morad et al., ICLR 2023), the maximum over training of the mean episode
  return. POPGym's environments scale every episode's return to [-1, 1] themselves, so their returns
  are MMER-normalised as they come; MiniGrid's lie in [0, 1]. POPGym averages the episodes of one
  training batch; the suite averages the last 100 episodes (SB3's window), a little smoother, and
  counts a point once that window is full (the first episodes to end are rarely typical);
- ``final_return``: the last point of the curve;
- ``steps_to_threshold``: the first step at which the curve reached the task's threshold (MiniGrid:
  0.85, about 90% success; POPGym: none unless ``--threshold`` sets one);
- ``fps`` and ``seconds``: training frames per second and wall time, evaluations left out;
- MiniGrid only: greedy and sampled success rates at the end (``--eval-episodes`` each).

Outputs, in ``--out``: ``results.json`` (one row per run), ``results.md`` (the table, also printed),
``learning_curves.png``; every run in ``<task>/<method>/seed<N>/`` with its ``result.json``. The
suite is resumable: a run whose ``result.json`` matches the requested budget is skipped, and an
interrupted run continues from its last checkpoint.

Usage::

    python benchmarks/memory_suite.py --jobs 2                      # the default: 6 POPGym tasks x 9 methods, seed 0 (~90 min)
    python benchmarks/memory_suite.py --jobs 2 --methods all        # every method (30), about 4-5 hours
    python benchmarks/memory_suite.py --tasks RepeatFirstEasy --methods ppo ppo+dkm --seeds 0 1 2 --steps 200000
    python benchmarks/memory_suite.py --tasks MemoryS7 --steps 300000 --memory-checkpoint runs/demo/dkm/model.safetensors
    python benchmarks/memory_suite.py --report                       # tables and figure of the runs already in --out
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from episodic_memory.registry import BACKENDS
from episodic_memory.train.curves import training_curve
from episodic_memory.train.train_agent import TrainAgentConfig, evaluate_agent, latest_agent_checkpoint, train_agent


@dataclass(frozen=True)
class Task:
    """One environment of the suite: its Gymnasium id and the training return that counts as solved (or None)."""

    env_id: str
    threshold: float | None = None
    imports: tuple[str, ...] = ()
    previous_action: bool = False  # POPGym's obs_requires_prev_action: the observation does not say what the agent did

    @property
    def minigrid(self) -> bool:
        return self.env_id.startswith("MiniGrid-")


TASKS = {
    **{
        name: Task(f"popgym-{name}-v0", imports=("popgym",), previous_action=name in ("ConcentrationEasy", "MineSweeperEasy"))
        for name in (
            "RepeatFirstEasy",
            "RepeatPreviousEasy",
            "CountRecallEasy",
            "AutoencodeEasy",
            "ConcentrationEasy",
            "MineSweeperEasy",
        )
    },
    "MemoryS7": Task("MiniGrid-MemoryS7-v0", threshold=0.85),
    "MemoryS11": Task("MiniGrid-MemoryS11-v0", threshold=0.85),
}
POPGYM_TASKS = tuple(name for name, task in TASKS.items() if not task.minigrid)

RECALL_LAGS, RECALL_POSITIONS = (1, 2, 3, 4), (0,)  # the recall methods' steps: the frame stack's window, and the first
RECALL = {
    "algo": "ppo",
    "memory": "dkm",
    "policy_input": "both",
    "recall_lags": RECALL_LAGS,
    "recall_positions": RECALL_POSITIONS,
}
METHODS: dict[str, dict[str, Any]] = {  # name -> the TrainAgentConfig options that make it
    "ppo": {"algo": "ppo", "memory": "none"},
    "ppo+framestack": {"algo": "ppo", "memory": "none", "frame_stack": 4},  # SB3's advice before an LSTM
    "recurrent_ppo": {"algo": "recurrent_ppo", "memory": "none"},  # sb3-contrib's LSTM policy
    "ppo+dkm": {"algo": "ppo", "memory": "dkm", "policy_input": "both"},
    "ppo+dkm-readouts": {"algo": "ppo", "memory": "dkm", "policy_input": "readouts"},
    "ppo+km": {"algo": "ppo", "memory": "km", "policy_input": "both"},
    "ppo+dkm-linear": {"algo": "ppo", "memory": "dkm", "policy_input": "both", "memory_head": "linear"},
    "ppo+dkm-linear+std": {  # and each read-out entry standardised by its running statistics
        "algo": "ppo",
        "memory": "dkm",
        "policy_input": "both",
        "memory_head": "linear",
        "standardise_readouts": True,
    },
    "ppo+dkm-linear+std+framestack": {
        "algo": "ppo",
        "memory": "dkm",
        "policy_input": "both",
        "memory_head": "linear",
        "standardise_readouts": True,
        "frame_stack": 4,
    },
    "ppo+dkm+framestack": {"algo": "ppo", "memory": "dkm", "policy_input": "both", "frame_stack": 4},  # order beside the memory
    # Order: the codes of the last steps and of the first, recalled from a time-addressed memory (README: recall by time),
    # beside the best DKM method's read-outs, and alone beside the observation.
    "ppo+dkm-linear+std+recall": {**RECALL, "memory_head": "linear", "standardise_readouts": True},
    "ppo+recall": {**RECALL, "readouts": ("recall",)},
    "ppo+recall+sum": {**RECALL, "readouts": ("recall", "recall_sum")},
    # The same recall of the observations themselves (one-hot for POPGym: a frame stack and the first observation),
    # and with the sum of every step's recall (of one-hot observations, how often each value came up).
    "ppo+recall-obs": {**RECALL, "readouts": ("recall",), "recall_source": "observation"},
    "ppo+recall-obs+sum": {**RECALL, "readouts": ("recall", "recall_sum"), "recall_source": "observation"},
    # Controls: the step count t/T beside the observation (--time-feature), which recall_sum carries for one-hot
    # observations (README: the memory suite), given to the baselines and to the recall without the sum.
    "ppo+time": {"algo": "ppo", "memory": "none", "time_feature": True},
    "ppo+framestack+time": {"algo": "ppo", "memory": "none", "frame_stack": 4, "time_feature": True},
    "recurrent_ppo+time": {"algo": "recurrent_ppo", "memory": "none", "time_feature": True},
    "ppo+recall-obs+time": {**RECALL, "readouts": ("recall",), "recall_source": "observation", "time_feature": True},
    # The Product Kanerva Machine's, Kanerva++'s and the EBMM's memories, as the DKM's two main methods read theirs.
    **{
        f"ppo+{name}{suffix}": {"algo": "ppo", "memory": name, "policy_input": "both", **options}
        for name in ("pkm", "kpp", "ebmm")
        for suffix, options in (("", {}), ("-linear+std", {"memory_head": "linear", "standardise_readouts": True}))
    },
    # The classical memories of the machine's codes, read as the best DKM method reads its memory (ppo+dkm-linear+std).
    **{
        f"ppo+{name}": {
            "algo": "ppo",
            "memory": name,
            "policy_input": "both",
            "memory_head": "linear",
            "standardise_readouts": True,
        }
        for name, kind in BACKENDS.items()
        if kind.machine is None
    },
}
BASELINE = "recurrent_ppo"
DEFAULT_METHODS = (  # the methods and the best of each kind of read-out: about 90 minutes with --jobs 2
    "ppo",
    "ppo+framestack",
    "recurrent_ppo",
    "ppo+dkm",
    "ppo+dkm-readouts",
    "ppo+km",
    "ppo+dkm-linear+std",
    "ppo+recall",
    "ppo+recall-obs+sum",
)


def curve_scores(curve: Sequence[tuple[int, float]], threshold: float | None) -> dict[str, Any]:
    """``mmer`` (the curve's maximum), ``final_return`` (its last point) and ``steps_to_threshold`` (the
    first step at which it reached ``threshold``; None if it never did or there is no threshold)."""
    if not curve:
        raise ValueError("the run logged no training episodes: raise --steps above one rollout of the longest episode")
    returns = [value for _, value in curve]
    reached = next((step for step, value in curve if threshold is not None and value >= threshold), None)
    return {"mmer": max(returns), "final_return": returns[-1], "steps_to_threshold": reached}


def run_config(task: str, method: str, seed: int, args: argparse.Namespace) -> TrainAgentConfig:
    """The ``train-agent`` settings of one run."""
    options = dict(METHODS[method])
    if options["memory"] != "none":
        options["memory_checkpoint"] = args.memory_checkpoint.get(task)
    return TrainAgentConfig(
        env_id=TASKS[task].env_id,
        imports=TASKS[task].imports,
        previous_action=TASKS[task].previous_action,
        seed=seed,
        device=args.device,
        num_envs=args.num_envs,
        out=str(run_dir_of(args.out, task, method, seed)),
        total_steps=args.steps,
        checkpoint_every=max(args.steps // 4, 1),
        eval_episodes=args.eval_episodes if TASKS[task].minigrid else 0,
        wandb_mode=args.wandb_mode,
        **options,
    )


def run_dir_of(out: str | Path, task: str, method: str, seed: int) -> Path:
    return Path(out) / task / method / f"seed{seed}"


def finished_runs(out: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every finished run under ``out`` of ``args.tasks`` x ``args.methods``, any seed: what the tables report, so that
    a run of a few tasks or methods adds to the tables of the directory rather than replacing them."""
    results = []
    for task in args.tasks:
        for method in args.methods:
            seeds = sorted(int(d.name[len("seed") :]) for d in (out / task / method).glob("seed*") if d.name[4:].isdigit())
            for seed in seeds:
                result = finished(run_dir_of(out, task, method, seed), args.steps, _threshold(task, args))
                if result is not None:
                    results.append(result)
    return results


def finished(run_dir: Path, steps: int, threshold: float | None) -> dict[str, Any] | None:
    """The run's ``result.json`` if it finished with ``steps`` steps, its curve scores read again from its
    ``metrics.jsonl`` (the curve is the record; the scores follow :func:`training_curve` as it is now); else None."""
    path = run_dir / "result.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    if result.get("budget") != steps:
        return None
    return {**result, **curve_scores(training_curve(run_dir), threshold)}


def _threshold(task: str, args: argparse.Namespace) -> float | None:
    return args.threshold.get(task, TASKS[task].threshold)


def run_one(task: str, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or continue) one run and score it; writes and returns its ``result.json`` row."""
    torch.set_num_threads(1)  # FACTS.md: a second thread stalls a busy 2-core machine
    config = run_config(task, method, seed, args)
    run_dir = Path(config.out)
    resume = latest_agent_checkpoint(run_dir) is not None
    summary = train_agent(config, progress=args.jobs == 1, resume=resume)
    if summary.get("interrupted"):
        raise KeyboardInterrupt
    result = {
        "task": task,
        "env_id": config.env_id,
        "method": method,
        "seed": seed,
        "budget": args.steps,
        "steps": summary["steps"],
        "seconds": summary["train_seconds"],
        "fps": summary["fps"],
        "resumed": resume,
        **curve_scores(training_curve(run_dir), _threshold(task, args)),
    }
    if TASKS[task].minigrid and args.eval_episodes:
        sampled = evaluate_agent(Path(summary["agent"]), args.eval_episodes, seed=seed + 10_000, deterministic=False)
        result["greedy_success"] = summary["evaluation"]["success_rate"]
        result["sampled_success"] = sampled["success_rate"]
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _mean_std(values: Sequence[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def results_table(results: Sequence[dict[str, Any]]) -> str:
    """The markdown table: one row per (task, method), mean ± std over seeds; then the comparisons with
    RecurrentPPO (see :func:`comparisons`)."""
    minigrid = any(TASKS[r["task"]].minigrid for r in results)
    header = ["task", "method", "seeds", "steps", "MMER", "final return", "steps to threshold", "fps", "minutes"]
    header += ["greedy success", "sampled success"] if minigrid else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, method in dict.fromkeys((r["task"], r["method"]) for r in results):
        rows = [r for r in results if (r["task"], r["method"]) == (task, method)]
        reached = [r["steps_to_threshold"] for r in rows if r["steps_to_threshold"] is not None]
        to_threshold = "—" if TASKS[task].threshold is None and not reached else f"{len(reached)}/{len(rows)}"
        if reached:
            to_threshold = f"{statistics.median(reached):,.0f} ({to_threshold})"
        cells = [
            task,
            method,
            ",".join(str(r["seed"]) for r in rows),
            f"{rows[0]['steps']:,}",
            _mean_std([r["mmer"] for r in rows]),
            _mean_std([r["final_return"] for r in rows]),
            to_threshold,
            f"{np.mean([r['fps'] for r in rows]):.0f}",
            f"{np.mean([r['seconds'] for r in rows]) / 60:.1f}",
        ]
        if minigrid:
            cells += [
                _mean_std([r[k] for r in rows]) if "greedy_success" in rows[0] else "—"
                for k in ("greedy_success", "sampled_success")
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", *comparisons(results)])


def mmer_table(results: Sequence[dict[str, Any]]) -> str:
    """MMER at a glance: one row per method, one column per task (mean ± std over seeds), and the
    method's median training fps over the tasks."""
    tasks = list(dict.fromkeys(r["task"] for r in results))
    lines = ["| method | " + " | ".join(tasks) + " | fps (median) |", "|" + "---|" * (len(tasks) + 2)]
    for method in dict.fromkeys(r["method"] for r in results):
        cells = []
        for task in tasks:
            values = [r["mmer"] for r in results if (r["task"], r["method"]) == (task, method)]
            cells.append(f"{_mean_std(values)} ({len(values)})" if values else "")
        fps = statistics.median(r["fps"] for r in results if r["method"] == method)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {fps:.0f} |")
    return "\n".join(lines)


def comparisons(results: Sequence[dict[str, Any]]) -> list[str]:
    """For every method with RecurrentPPO beside it: on how many POPGym tasks its mean MMER matches or
    beats RecurrentPPO's, and its training speed over RecurrentPPO's (median over tasks)."""

    def mean_of(task: str, method: str, key: str) -> float | None:
        values = [r[key] for r in results if (r["task"], r["method"]) == (task, method)]
        return float(np.mean(values)) if values else None

    lines = []
    for method in dict.fromkeys(r["method"] for r in results):
        if method == BASELINE:
            continue
        tasks = [t for t in dict.fromkeys(r["task"] for r in results) if mean_of(t, BASELINE, "mmer") is not None]
        tasks = [t for t in tasks if mean_of(t, method, "mmer") is not None]
        if not tasks:
            continue
        wins = [t for t in tasks if not TASKS[t].minigrid and mean_of(t, method, "mmer") >= mean_of(t, BASELINE, "mmer")]
        popgym = [t for t in tasks if not TASKS[t].minigrid]
        speed = statistics.median(mean_of(t, method, "fps") / mean_of(t, BASELINE, "fps") for t in tasks)
        lines.append(
            f"- {method}: MMER ≥ {BASELINE}'s on {len(wins)}/{len(popgym)} POPGym tasks"
            f"{' (' + ', '.join(wins) + ')' if wins else ''}; {speed:.1f}× its fps (median over {len(tasks)} tasks)"
        )
    return lines


def plot_learning_curves(out: Path, results: Sequence[dict[str, Any]]) -> Path:
    """``out/learning_curves.png``: per task, the curve of every run, one colour and line style per method (one legend)."""
    tasks = list(dict.fromkeys(r["task"] for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    columns = min(len(tasks), 4)
    rows = -(-len(tasks) // columns)
    fig = Figure(figsize=(4.5 * columns + 2.5, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    labelled: set[str] = set()
    for ax, task in zip(axes, tasks, strict=False):
        for r in (r for r in results if r["task"] == task):
            curve = training_curve(run_dir_of(out, task, r["method"], r["seed"]))
            label = None if r["method"] in labelled else r["method"]
            labelled.add(r["method"])
            index = methods.index(r["method"])  # ten colours, then the same ten dashed, then dotted
            style = ("-", "--", ":")[index // 10 % 3]
            ax.plot(*zip(*curve, strict=True), color=f"C{index % 10}", ls=style, lw=1, label=label)
        if TASKS[task].threshold is not None:
            ax.axhline(TASKS[task].threshold, color="grey", ls=":", lw=1)
        ax.set(title=task, xlabel="environment steps", ylabel="mean training return (100 episodes)")
    for ax in axes[len(tasks) :]:
        ax.set_visible(False)
    fig.legend(loc="outside right upper", fontsize="small")
    path = out / "learning_curves.png"
    fig.savefig(path, dpi=90)
    return path


def report(out: Path, results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Write ``results.json``, ``results.md`` and ``learning_curves.png``; print the table."""
    (out / "results.json").write_text(json.dumps(results, indent=2))
    title = f"{args.steps:,} steps per run, {args.num_envs} envs, default PPO hyperparameters, 1 torch thread per run"
    table = f"{title}\n\nMMER (seeds in brackets)\n\n{mmer_table(results)}\n\n{results_table(results)}\n"
    (out / "results.md").write_text(table)
    print(f"\n{table}\n{plot_learning_curves(out, results)}")


def _task_values(pairs: Sequence[str], option: str, kind: type) -> dict[str, Any]:
    """``TASK=VALUE`` pairs (or one bare VALUE for every MiniGrid task) as a dict."""
    values: dict[str, Any] = {}
    for pair in pairs:
        task, _, value = pair.rpartition("=")
        names = [task] if task else [name for name, t in TASKS.items() if t.minigrid]
        if task and task not in TASKS:
            raise SystemExit(f"{option}: unknown task {task!r}; tasks: {', '.join(TASKS)}")
        values.update(dict.fromkeys(names, kind(value)))
    return values


def _finished(run: tuple[str, str, int], result: dict[str, Any]) -> dict[str, Any]:
    print(f"finished {'/'.join(map(str, run))}: MMER {result['mmer']:.3f}, {result['fps']:.0f} fps", flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(POPGYM_TASKS))
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=[*METHODS, "all"],
        default=list(DEFAULT_METHODS),
        help=f"default: {' '.join(DEFAULT_METHODS)}; all: every method",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=50_000, help="environment steps per run")
    parser.add_argument(
        "--memory-checkpoint",
        nargs="+",
        default=[],
        metavar="[TASK=]PATH",
        help="pretrained DKM/KM for the memory methods, per task (a bare PATH: every MiniGrid task); default: a fresh machine",
    )
    parser.add_argument("--threshold", nargs="+", default=[], metavar="[TASK=]VALUE", help="training return counted as solved")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--eval-episodes", type=int, default=100, help="greedy and sampled episodes at the end (MiniGrid)")
    parser.add_argument("--out", default="runs/memory_suite")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel, one process and one torch thread each")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--wandb-mode", default="disabled", choices=["online", "offline", "disabled"])
    parser.add_argument(
        "--report", action="store_true", help="train nothing: report the finished runs under --out (of --tasks, --methods)"
    )
    args = parser.parse_args(argv)
    if "all" in args.methods:
        args.methods = list(METHODS)
    args.memory_checkpoint = _task_values(args.memory_checkpoint, "--memory-checkpoint", str)
    args.threshold = _task_values(args.threshold, "--threshold", float)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    grid = [(task, method, seed) for task in args.tasks for method in args.methods for seed in args.seeds]
    done = {run: finished(run_dir_of(out, *run), args.steps, _threshold(run[0], args)) for run in grid}
    if args.report:
        results = finished_runs(out, args)
        if not results:
            raise SystemExit(f"no finished runs of {args.steps:,} steps under {out}")
        report(out, results, args)
        return
    todo = sorted((run for run, result in done.items() if result is None), key=lambda run: run[1] != BASELINE)  # longest first
    print(f"{len(grid)} runs, {len(grid) - len(todo)} finished already, {len(todo)} to train, {args.jobs} at a time")
    if args.jobs == 1:
        for run in todo:
            done[run] = _finished(run, run_one(*run, args))
    else:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_one, *run, args): run for run in todo}
            for future in tqdm(as_completed(futures), total=len(futures), desc="runs"):
                done[futures[future]] = _finished(futures[future], future.result())
    everything = argparse.Namespace(**{**vars(args), "tasks": list(TASKS), "methods": list(METHODS)})
    report(out, finished_runs(out, everything), args)  # the runs just trained and every other one under out


if __name__ == "__main__":
    main()
