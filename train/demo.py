"""``episodic-memory demo`` (``make demo``): the whole product path on a small budget, start to finish.

    episodic-memory demo                      # --scale small: 10-15 minutes on 2 CPU cores, into runs/demo
    episodic-memory demo --scale full         # the README's budgets (about an hour), into runs/demo-full
    episodic-memory demo --pretrain-steps 1000 --agent-steps 100000 --out runs/demo-longer

Stages, each a library call (no subprocesses), each with its own directory under ``out``:

1. ``data/``     collect egocentric maze frames (:func:`episodic_memory.envs.collect.collect`);
2. ``dkm/``      pretrain a Dynamic Kanerva Machine on them (:func:`episodic_memory.train.pretrain.pretrain`), with the
   model settings of ``configs/pretrain-mazes.yaml``;
3. ``eval/``     evaluate it on held-out mazes: conditional NLL, capacity, denoising, figures
   (:func:`episodic_memory.evaluation.generative.evaluate_models`);
4. ``ppo-dkm/``  train PPO on a MiniGrid memory task with the pretrained memory wrapped around the
   environments, then evaluate it (:func:`~episodic_memory.train.train_agent.train_agent`,
   :func:`~episodic_memory.train.train_agent.evaluate_agent`);
5. ``ppo/``      the same PPO without the memory, the baseline;
6. ``second-ppo-dkm/`` PPO with a fresh DKM (no pretraining) on a second task, one where the memory suite
   shows the memory paying at this budget (POPGym's RepeatFirstEasy: say the suit of the episode's first card);
7. ``second-ppo/``     the same PPO without the memory.

Then a results table, the time of every stage, the path of every artefact and the ``wandb sync``
command of every offline wandb run; ``out/demo_summary.json`` holds the same.

Re-running is cheap: a stage whose directory records (in ``demo_stage.json``) that it finished with
the same settings and inputs is reused, not redone, and the output says so. A stage directory made
with other settings is never reused (the demo stops and says which settings differ); a stage whose
inputs changed (an earlier stage was redone) is redone; an interrupted collection or pretraining
continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from episodic_memory import load_machine
from episodic_memory.envs.collect import CollectConfig, collect
from episodic_memory.envs.dataset import FrameDataset
from episodic_memory.envs.shards import MANIFEST_NAME
from episodic_memory.evaluation.generative import EvaluationConfig, evaluate_models
from episodic_memory.train.config import field
from episodic_memory.train.curves import training_curve
from episodic_memory.train.pretrain import PretrainConfig, pretrain, resolve_device
from episodic_memory.train.train_agent import TrainAgentConfig, evaluate_agent, train_agent

__all__ = ["SCALES", "DemoConfig", "DemoPlan", "Scale", "make_plan", "run_demo"]

EXIT_INTERRUPTED = 130
STAMP = "demo_stage.json"
SUMMARY = "demo_summary.json"
TEST_FRACTION = 0.1  # held-out mazes, as pretrain and evaluate default to


@dataclass(frozen=True)
class Scale:
    """The budget of one ``--scale``: what each stage gets."""

    duration: str  # what to expect, printed at the start
    layouts_per_env: int  # collect: layouts of each of the 7 maze env ids
    steps_per_layout: int  # collect: frames per layout
    frame_size: int  # frames are frame_size x frame_size x 3 for the memory and the agents
    pretrain: dict[str, Any]  # PretrainConfig fields
    evaluation: dict[str, Any]  # EvaluationConfig fields
    agent: dict[str, Any]  # TrainAgentConfig fields
    agent_eval_episodes: int
    second_agent: dict[str, Any]  # TrainAgentConfig fields of the second task's agents


# The model and optimiser of configs/pretrain-mazes.yaml (the README's comparison runs); tests/test_demo.py checks it.
PRETRAIN_MAZES = {
    "code_size": 100,
    "num_slots": 32,
    "hidden_channels": 16,
    "likelihood": "logistic",
    "episode_length": 32,
    "batch_size": 16,
    "mode": "mixed",
    "lr": 3e-4,
}

SCALES: dict[str, Scale] = {
    "small": Scale(
        duration="about 10-15 minutes on a 2-core CPU",
        layouts_per_env=30,  # 7 x 30 x 64 = 13,440 frames, 24 held-out mazes
        steps_per_layout=64,
        frame_size=32,
        pretrain={**PRETRAIN_MAZES, "steps": 500, "checkpoint_every": 250, "log_every": 25, "image_every": 250},
        evaluation={
            "capacity_lengths": (10, 32, 100),
            "capacity_modes": ("mixed", "layouts=2", "layouts=8"),
            "capacity_episodes": 16,
            "denoising_episodes": 8,
        },
        agent={"total_steps": 40_000, "num_envs": 8, "checkpoint_every": 20_000},
        agent_eval_episodes=50,
        second_agent={"total_steps": 50_000, "num_envs": 8, "checkpoint_every": 25_000},
    ),
    "full": Scale(
        duration="about an hour on a 2-core CPU",
        layouts_per_env=150,  # 67,200 frames, as in the README
        steps_per_layout=64,
        frame_size=32,
        pretrain={**PRETRAIN_MAZES, "steps": 3000, "checkpoint_every": 500, "log_every": 50, "image_every": 1000},
        evaluation={},  # EvaluationConfig's defaults, as `episodic-memory evaluate`
        agent={"total_steps": 200_000, "num_envs": 8, "checkpoint_every": 50_000},
        agent_eval_episodes=100,
        second_agent={"total_steps": 100_000, "num_envs": 8, "checkpoint_every": 50_000},
    ),
    # Not offered by --help: a few seconds, for the tests.
    "tiny": Scale(
        duration="a few seconds",
        layouts_per_env=4,  # 28 layouts, one of them held out
        steps_per_layout=16,
        frame_size=16,
        pretrain={
            "code_size": 12,
            "num_slots": 6,
            "hidden_channels": 4,
            "likelihood": "gaussian",
            "episode_length": 8,
            "batch_size": 2,
            "mode": "mixed",
            "lr": 1e-3,
            "steps": 4,
            "checkpoint_every": 2,
            "log_every": 1,
            "image_every": 0,
        },
        evaluation={
            "episode_length": 8,
            "num_episodes": 4,
            "batch_size": 2,
            "capacity_lengths": (4, 8),
            "capacity_modes": ("mixed",),
            "capacity_episodes": 2,
            "steps": 2,
            "denoising_episodes": 2,
            "block": 4,
            "num_examples": 2,
            "num_samples": 2,
        },
        agent={"total_steps": 64, "num_envs": 2, "n_steps": 16, "batch_size": 16, "checkpoint_every": 32},
        agent_eval_episodes=2,
        second_agent={
            "total_steps": 64,
            "num_envs": 2,
            "n_steps": 32,
            "batch_size": 16,
            "checkpoint_every": 32,
            "code_size": 12,
            "num_slots": 6,
        },
    ),
}
PUBLIC_SCALES = ("small", "full")
STAGE_LABELS = {
    "collect": "1 collect frames",
    "pretrain": "2 pretrain the DKM",
    "evaluate": "3 evaluate the DKM",
    "ppo+dkm": "4 PPO+DKM: train, evaluate",
    "ppo": "5 PPO (no memory): train, evaluate",
    "second:ppo+dkm": "6 task 2, PPO+DKM: train, evaluate",
    "second:ppo": "7 task 2, PPO: train, evaluate",
}
STAGES = len(STAGE_LABELS)
# What backs the second task: `python benchmarks/memory_suite.py` (README: the memory suite), 50k steps, seeds 0-2.
SECOND_TASK_EVIDENCE = (
    "the memory suite on RepeatFirstEasy, 50k steps, seeds 0-2: MMER PPO+DKM recall 0.70 / 0.68 / 0.73, PPO -0.42 / -0.44 / "
    "-0.46, RecurrentPPO 0.28 / -0.29 / -0.30 at about 1/20 of the memory agent's fps (chance is about -0.5); one seed\n"
    "   is a single draw, see README: the memory suite"
)
# The memory agent of the second task: the suite's best on RepeatFirstEasy, ppo+recall (README: the memory suite): the
# codes of the last 4 steps and of the first, recalled by time from a memory of a fresh DKM's codes.
SECOND_MEMORY = {"memory": "dkm", "readouts": ("recall",), "recall_lags": (1, 2, 3, 4), "recall_positions": (0,)}


@dataclass
class DemoConfig:
    """Options of ``episodic-memory demo``; the budget options default to the values of ``--scale``."""

    scale: str = field("small", "budget: 'small' (10-15 minutes on 2 CPU cores) or 'full' (the README's budgets, ~1 h)")
    out: str | None = field(None, "output directory of every stage (None: runs/demo, or runs/demo-full with --scale full)")
    seed: int = field(0, "seed of every stage")
    device: Literal["auto", "cpu", "cuda"] = field("auto", "device of the memory and the agents; auto picks CUDA when available")
    wandb_mode: Literal["online", "offline", "disabled"] = field(
        "offline", "wandb logging of the pretraining and the agents; offline runs upload later with `wandb sync`"
    )
    wandb_project: str = field("episodic-memory", "wandb project")
    env_id: str = field("MiniGrid-MemoryS7-v0", "MiniGrid task of the agents")
    second_env_id: str = field(
        "popgym-RepeatFirstEasy-v0",
        "second task: PPO with a fresh DKM (no pretraining) against PPO, where the memory suite shows the memory paying "
        "at this budget",
    )
    second_imports: tuple[str, ...] = field(("popgym",), "modules to import for --second-env-id (registers its id)")
    second_agent_steps: int | None = field(None, "environment steps of each second-task agent (None: 50,000 small, 100,000 full)")
    layouts_per_env: int | None = field(None, "maze layouts collected per env id (None: 30 small, 150 full)")
    pretrain_steps: int | None = field(None, "DKM training steps of 16 episodes x 32 frames (None: 500 small, 3000 full)")
    agent_steps: int | None = field(None, "environment steps of each agent (None: 40,000 small, 200,000 full)")
    agent_eval_episodes: int | None = field(None, "evaluation episodes of each agent (None: 50 small, 100 full)")
    threads: int = field(
        1,
        "torch CPU threads of the pretraining and the memory evaluation (0: torch's default, all cores: faster on an idle "
        "machine, several times slower on a busy one)",
    )
    rl_threads: int = field(1, "torch CPU threads of the agents (1 is as fast for these small networks and never stalls)")

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {PUBLIC_SCALES}, actual value: {self.scale!r}")
        for name in ("layouts_per_env", "pretrain_steps", "agent_steps", "agent_eval_episodes", "second_agent_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int, actual value: {value!r}")
        for name in ("threads", "rl_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, actual value: {value!r}")


@dataclass
class DemoPlan:
    """The configs of every stage, derived from a :class:`DemoConfig`."""

    out: Path
    scale: Scale
    collect: CollectConfig
    pretrain: PretrainConfig
    evaluation: EvaluationConfig
    agents: dict[str, TrainAgentConfig]  # "ppo+dkm" (pretrained memory), "ppo"; "second:ppo+dkm" (fresh), "second:ppo"
    agent_eval_episodes: int

    @property
    def model(self) -> Path:
        return Path(self.pretrain.out) / "model.safetensors"


def make_plan(config: DemoConfig) -> DemoPlan:
    """The stage configs of ``config``: the scale's budget, with the options given in ``config`` on top."""
    scale = SCALES[config.scale]
    default_out = "runs/demo" if config.scale == "small" else f"runs/demo-{config.scale}"
    out = Path(config.out if config.out is not None else default_out)
    common = {
        "seed": config.seed,
        "device": config.device,
        "wandb_mode": config.wandb_mode,
        "wandb_project": config.wandb_project,
    }
    collect_config = CollectConfig(
        out=str(out / "data"),
        layouts_per_env=config.layouts_per_env or scale.layouts_per_env,
        steps_per_layout=scale.steps_per_layout,
        frame_size=scale.frame_size,
        seed=config.seed,
    )
    pretrain_config = PretrainConfig(
        **{
            **scale.pretrain,
            **common,
            "data": collect_config.out,
            "out": str(out / "dkm"),
            "model": "dkm",
            "test_fraction": TEST_FRACTION,
            "evaluate": False,  # stage 3 evaluates, with the scale's settings
            "steps": config.pretrain_steps or scale.pretrain["steps"],
        }
    )
    evaluation = EvaluationConfig(**{**scale.evaluation, "seed": config.seed})
    agent = {
        **scale.agent,
        **common,
        "env_id": config.env_id,
        "algo": "ppo",
        "frame_size": scale.frame_size,
        "total_steps": config.agent_steps or scale.agent["total_steps"],
        "eval_episodes": 0,  # evaluated by the demo, with the scale's number of episodes
    }
    memory_checkpoint = str((out / "dkm" / "model.safetensors").absolute())  # agent_config.json works from any directory
    second = {
        **scale.second_agent,
        **common,
        "env_id": config.second_env_id,
        "imports": config.second_imports,
        "algo": "ppo",
        "total_steps": config.second_agent_steps or scale.second_agent["total_steps"],
        "eval_episodes": 0,
    }
    agents = {
        "ppo+dkm": TrainAgentConfig(**agent, out=str(out / "ppo-dkm"), memory="dkm", memory_checkpoint=memory_checkpoint),
        "ppo": TrainAgentConfig(**agent, out=str(out / "ppo"), memory="none"),
        "second:ppo+dkm": TrainAgentConfig(**second, out=str(out / "second-ppo-dkm"), **SECOND_MEMORY),
        "second:ppo": TrainAgentConfig(**second, out=str(out / "second-ppo"), memory="none"),
    }
    return DemoPlan(
        out=out,
        scale=scale,
        collect=collect_config,
        pretrain=pretrain_config,
        evaluation=evaluation,
        agents=agents,
        agent_eval_episodes=config.agent_eval_episodes or scale.agent_eval_episodes,
    )


# ------------------------------------------------------------------------------------------------
# Stage records: reuse what finished with the same settings and inputs, never anything else
# ------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparisons with a saved record."""
    return json.loads(json.dumps(value))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _settings(config: Any, ignore: set[str]) -> dict[str, Any]:
    """The fields of a stage config that define its result (paths, devices and logging left out)."""
    return _plain({k: v for k, v in dataclasses.asdict(config).items() if k not in ignore})


class _Stage:
    """One stage: its directory and its record ``demo_stage.json`` (settings, inputs, status, result, seconds).

    :param key: short name (``collect``, ``pretrain``, ``evaluate``, ``ppo+dkm``, ``ppo``).
    :param settings: what defines the stage's result; a record with other settings is never reused.
    :param inputs: fingerprints of the files it reads; a record with other inputs is redone.
    :param resumable: an unfinished run continues (collect, pretrain) instead of starting again.
    :param clear: remove the directory before starting afresh (everything but the collected frames).
    """

    def __init__(self, key: str, title: str, directory: Path, settings: dict, inputs: dict, resumable: bool, clear: bool) -> None:
        self.key, self.title, self.dir = key, title, directory
        self.settings, self.inputs = _plain(settings), _plain(inputs)
        self.resumable, self.clear = resumable, clear
        self.record_path = directory / STAMP

    def previous(self) -> dict[str, Any] | None:
        """The record of an earlier run of this stage, or None when there was none.

        :raises ValueError: the directory exists but was made with other settings, or not by the demo.
        """
        if not self.record_path.is_file():
            if self.dir.exists() and any(self.dir.iterdir()):
                raise ValueError(
                    f"{str(self.dir)!r} exists but was not made by `episodic-memory demo` (no {STAMP} in it); "
                    "move it away or choose another --out"
                )
            return None
        record = json.loads(self.record_path.read_text())
        if record.get("settings") != self.settings:
            old = record.get("settings") or {}
            changed = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
            listing = ", ".join(f"{k}: {old.get(k)!r} -> {self.settings.get(k)!r}" for k in changed)
            raise ValueError(
                f"{str(self.dir)!r} was made by a demo with other settings ({listing}) and is never reused for these: "
                f"delete it (rm -r {self.dir}) or choose another --out"
            )
        return record

    def reusable(self, record: dict[str, Any] | None) -> bool:
        """Whether ``record`` is a finished run with the same inputs whose files are all still there."""
        if record is None or record.get("status") != "finished":
            return False
        if record.get("inputs") != self.inputs:
            print("  an earlier stage was redone since this one finished: redoing it")
            return False
        missing = [p for p in record["result"]["artefacts"].values() if not (self.dir / p).exists()]
        if missing:
            print(f"  {len(missing)} of its files are missing ({self.dir / missing[0]}): redoing it")
            return False
        return True

    def write(self, status: str, result: dict[str, Any] | None = None, seconds: float | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        record = {"status": status, "settings": self.settings, "inputs": self.inputs, "result": result, "seconds": seconds}
        tmp = self.record_path.with_name(STAMP + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(self.record_path)


@contextmanager
def _threads(count: int) -> Iterator[None]:
    """torch's CPU threads set to ``count`` (0: unchanged) inside the block."""
    before = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_stage(stage: _Stage, number: int, work: Callable[[bool], dict[str, Any]], timings: dict[str, dict]) -> dict:
    """Reuse the stage's finished result, or run ``work(resume)`` and record its result and time."""
    print(f"\n=== [{number}/{STAGES}] {stage.title} -> {stage.dir}", flush=True)
    record = stage.previous()
    if stage.reusable(record):
        assert record is not None
        print(f"  reusing the finished stage in {stage.dir} (same settings and inputs; it took {record['seconds']:.0f} s)")
        timing = {"stage": STAGE_LABELS[stage.key], "seconds": 0.0, "reused": True, "original_seconds": record["seconds"]}
        timings[stage.key] = timing
        return record["result"]
    unfinished = record is not None and record.get("status") == "started"
    resume = stage.resumable and unfinished and record.get("inputs") == stage.inputs
    if resume:
        print(f"  continuing the unfinished stage in {stage.dir}")
    elif stage.clear and stage.dir.exists():
        print(f"  removing the {'unfinished' if unfinished else 'outdated'} stage in {stage.dir}, starting afresh")
        shutil.rmtree(stage.dir)
    start = time.perf_counter()
    stage.write("started")
    result = work(resume)
    seconds = time.perf_counter() - start
    stage.write("finished", result, seconds)
    timings[stage.key] = {"stage": STAGE_LABELS[stage.key], "seconds": seconds, "reused": False}
    print(f"  done in {seconds:.1f} s")
    return result


def _relative(path: Path | str, root: Path) -> str:
    return str(Path(path).relative_to(root))


# ------------------------------------------------------------------------------------------------
# The stages
# ------------------------------------------------------------------------------------------------
def _collect(plan: DemoPlan, progress: bool) -> dict[str, Any]:
    config = plan.collect
    with _threads(1):  # a frame is area-resized by torch: more threads only stall these tiny ops (8x slower on a busy CPU)
        manifest_path = collect(config, progress=progress)
    manifest = json.loads(manifest_path.read_text())
    test = FrameDataset(config.out, split="test", test_fraction=TEST_FRACTION)
    print(
        f"  {manifest['num_frames']:,} frames of {manifest['num_layouts']} mazes ({len(manifest['envs'])} env ids), "
        f"{test.num_layouts} mazes held out for evaluation"
    )
    return {
        "num_frames": manifest["num_frames"],
        "num_layouts": manifest["num_layouts"],
        "test_layouts": test.num_layouts,
        "artefacts": {"manifest": MANIFEST_NAME},
    }


def _pretrain(plan: DemoPlan, resume: bool, threads: int, progress: bool) -> dict[str, Any]:
    config, out = plan.pretrain, Path(plan.pretrain.out)
    resume = resume and (out / "checkpoints").is_dir()
    with _threads(threads):
        summary = pretrain(config, resume=resume, progress=progress)
    if summary["interrupted"]:
        raise KeyboardInterrupt
    losses = summary["losses"]
    if losses:
        print(f"  {summary['step']} steps; conditional ELBO on the last training batch {losses['cond_elbo']:.1f} nats/frame")
    return {
        "steps": summary["step"],
        "losses": losses,
        "artefacts": {
            "model": _relative(summary["model"], out),
            "checkpoint": _relative(summary["checkpoint"], out),
            "metrics": "metrics.jsonl",
        },
    }


def _evaluate_memory(plan: DemoPlan, device: str, threads: int) -> dict[str, Any]:
    out = plan.out / "eval"
    machine = load_machine(plan.model, map_location=resolve_device(device))
    test = FrameDataset(plan.collect.out, split="test", test_fraction=TEST_FRACTION)
    with _threads(threads):
        report = evaluate_models({"dkm": machine}, test.sample, out, plan.evaluation)
    entry = report["models"]["dkm"]
    nll = entry["conditional_nll"]
    gaussian = entry.get("denoising", {}).get("gaussian")
    mse = gaussian["mse"] if gaussian is not None else None
    result: dict[str, Any] = {
        "conditional_nll_bits_per_dim": nll["bits_per_dim"],
        "conditional_nll_nats": nll["nats"],
        "artefacts": {"report": "report.json", **{f"figure {name}": name for name in report["figures"]}},
    }
    if mse is not None:  # [N+1]: the noisy frames, then N attractor iterations
        best = min(range(len(mse)), key=mse.__getitem__)
        result.update(
            denoising_mse_first=mse[0],
            denoising_mse_best=mse[best],
            denoising_best_iteration=best,
            denoising_mse_last=mse[-1],
            denoising_iterations=len(mse) - 1,
            denoising_mse_converged=gaussian["converged"]["mse"][-1],
            denoising_converged_iterations=gaussian["converged"]["iterations"],
        )
    return result


def _agent(plan: DemoPlan, name: str, threads: int, progress: bool) -> dict[str, Any]:
    config, out = plan.agents[name], Path(plan.agents[name].out)
    with _threads(threads):
        summary = train_agent(config, progress=progress)
        if summary["interrupted"]:  # SIGINT/SIGTERM: train_agent wrote a checkpoint and returned
            raise KeyboardInterrupt
        episodes = plan.agent_eval_episodes
        print(f"  trained {summary['steps']:,} steps at {summary['fps']:.0f} steps/s; evaluating {episodes} episodes")
        start = time.perf_counter()
        evaluation = evaluate_agent(out / "agent.zip", episodes, seed=config.seed + 10_000)
        eval_seconds = time.perf_counter() - start
    print(f"  success rate {evaluation['success_rate']:.2f}, mean return {evaluation['mean_return']:.3f} ({eval_seconds:.1f} s)")
    artefacts = {"agent": "agent.zip", "evaluation": "evaluation.json", "metrics": "metrics.jsonl", "progress": "progress.csv"}
    if (out / "checkpoints").is_dir():
        artefacts["checkpoints"] = "checkpoints"
    curve = training_curve(out)
    return {
        "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "fps": summary["fps"],
        "mmer": max(r for _, r in curve) if curve else None,
        "eval_seconds": eval_seconds,
        "success_rate": evaluation["success_rate"],
        "mean_return": evaluation["mean_return"],
        "episodes": evaluation["episodes"],
        "artefacts": artefacts,
    }


# ------------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------------
def run_demo(config: DemoConfig, progress: bool = True) -> int:
    """Run the demo as ``config`` says; prints the results and writes ``out/demo_summary.json``.

    :return: the exit status: 0, or 130 when interrupted (run it again to continue).
    """
    plan = make_plan(config)
    out = plan.out
    print(f"episodic-memory demo, scale {config.scale} ({plan.scale.duration}), seed {config.seed}, into {out}")
    print(
        f"  collect {plan.collect.layouts_per_env * len(plan.collect.envs) * plan.collect.steps_per_layout:,} frames -> "
        f"pretrain the DKM {plan.pretrain.steps} steps -> evaluate it -> "
        f"PPO+DKM and PPO, {plan.agents['ppo'].total_steps:,} steps each on {config.env_id} -> evaluate both -> "
        f"the same, {plan.agents['second:ppo'].total_steps:,} steps each on {config.second_env_id} with a fresh DKM"
    )
    out.mkdir(parents=True, exist_ok=True)
    manifest = Path(plan.collect.out) / MANIFEST_NAME
    timings: dict[str, dict] = {}
    results: dict[str, Any] = {}
    stage = None
    run_fields = {"out", "data", "device", "wandb_mode", "wandb_project"}  # where and how a stage runs, not what it makes
    try:
        stage = _Stage(
            "collect", "collect maze frames", Path(plan.collect.out), _settings(plan.collect, {"out"}), {}, True, False
        )
        results["collect"] = _run_stage(stage, 1, lambda resume: _collect(plan, progress), timings)

        pretrain_fields = run_fields | {"checkpoint_every", "keep_checkpoints", "log_every", "image_every", "evaluate"}
        stage = _Stage(
            "pretrain",
            "pretrain the DKM",
            Path(plan.pretrain.out),
            _settings(plan.pretrain, pretrain_fields),
            {"data": _sha256(manifest)},
            True,
            True,
        )
        results["pretrain"] = _run_stage(stage, 2, lambda resume: _pretrain(plan, resume, config.threads, progress), timings)

        stage = _Stage(
            "evaluate",
            "evaluate the DKM on held-out mazes (figures)",
            plan.out / "eval",
            {**_settings(plan.evaluation, set()), "test_fraction": TEST_FRACTION},
            {"data": _sha256(manifest), "model": _sha256(plan.model)},
            False,
            True,
        )
        results["evaluate"] = _run_stage(stage, 3, lambda resume: _evaluate_memory(plan, config.device, config.threads), timings)

        agent_fields = run_fields | {"memory_checkpoint", "checkpoint_every"}
        agent_stages = (
            (4, "ppo+dkm", "PPO with the DKM memory"),
            (5, "ppo", "PPO without memory (baseline)"),
            (6, "second:ppo+dkm", "PPO with a fresh DKM memory"),
            (7, "second:ppo", "PPO without memory (baseline)"),
        )
        for number, name, title in agent_stages:
            agent = plan.agents[name]
            stage = _Stage(
                name,
                f"{title} on {agent.env_id}: train, evaluate",
                Path(agent.out),
                {**_settings(agent, agent_fields), "eval_episodes": plan.agent_eval_episodes},
                {"model": _sha256(plan.model)} if agent.memory_checkpoint else {},
                False,
                True,
            )
            results[name] = _run_stage(
                stage, number, lambda resume, name=name: _agent(plan, name, config.rl_threads, progress), timings
            )
    except KeyboardInterrupt:
        where = f" during '{stage.title}'" if stage is not None else ""
        print(f"\ndemo interrupted{where}; run the same command again to continue (finished stages are reused)")
        return EXIT_INTERRUPTED

    summary = _summary(config, plan, results, timings)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary, plan)
    return 0


def _wandb_runs(plan: DemoPlan) -> list[str]:
    """The offline wandb run directories of the pretraining and of the agents (``wandb sync`` uploads each)."""
    runs = []
    for directory in (Path(plan.pretrain.out), *(Path(c.out) for c in plan.agents.values())):
        runs.extend(str(p) for p in sorted((directory / "wandb").glob("offline-run-*")) if p.is_dir())
    return runs


def _summary(config: DemoConfig, plan: DemoPlan, results: dict[str, Any], timings: dict[str, dict]) -> dict[str, Any]:
    directories = {
        "collect": Path(plan.collect.out),
        "pretrain": Path(plan.pretrain.out),
        "evaluate": plan.out / "eval",
        **{name: Path(agent.out) for name, agent in plan.agents.items()},
    }
    artefacts = {
        f"{name}: {label}": str(directories[name] / path)
        for name, result in results.items()
        for label, path in result["artefacts"].items()
    }
    artefacts["summary"] = str(plan.out / SUMMARY)
    runs = _wandb_runs(plan)
    memory = {k: v for k, v in results["evaluate"].items() if k != "artefacts"}
    return {
        "config": dataclasses.asdict(config),
        "out": str(plan.out),
        "env_id": config.env_id,
        "second_env_id": config.second_env_id,
        "frames": results["collect"]["num_frames"],
        "pretrain_steps": results["pretrain"]["steps"],
        "memory": memory,
        "agents": {name: {k: v for k, v in results[name].items() if k != "artefacts"} for name in plan.agents},
        "timings": timings,
        "total_seconds": sum(t["seconds"] for t in timings.values()),
        "artefacts": artefacts,
        "wandb_runs": runs,
        "wandb_sync": [f"wandb sync {run}" for run in runs],
    }


def _print_summary(summary: dict[str, Any], plan: DemoPlan) -> None:
    memory = summary["memory"]
    print(f"\n=== results (seed {summary['config']['seed']})")
    print(f"memory: DKM pretrained {summary['pretrain_steps']} steps on {summary['frames']:,} frames, held-out mazes")
    nll = f"{memory['conditional_nll_bits_per_dim']:.3f} bits/dim ({memory['conditional_nll_nats']:.1f} nats/frame)"
    print(f"  conditional NLL (lower: better)  {nll}")
    if "denoising_mse_first" in memory:
        print(
            f"  denoising MSE (Gaussian noise)   {memory['denoising_mse_first']:.4f} noisy -> "
            f"{memory['denoising_mse_best']:.4f} after {memory['denoising_best_iteration']} attractor iteration(s) (best) -> "
            f"{memory['denoising_mse_last']:.4f} after {memory['denoising_iterations']}; stopping once the energy stops "
            f"falling: {memory['denoising_mse_converged']:.4f} after {memory['denoising_converged_iterations']:.1f} on average"
        )
    agents = summary["agents"]
    print(f"agents on {summary['env_id']} ({plan.agent_eval_episodes} evaluation episodes each)")
    print(f"  {'agent':<9} {'success':>8} {'mean return':>12} {'steps':>9} {'train fps':>10}")
    for name, label in (("ppo+dkm", "PPO+DKM"), ("ppo", "PPO")):
        agent = agents[name]
        print(
            f"  {label:<9} {agent['success_rate']:>8.2f} {agent['mean_return']:>12.3f} {agent['steps']:>9,} {agent['fps']:>10.0f}"
        )
    print(
        "  (a memory-less policy that picks either object scores about 0.5; on MemoryS7 PPO stays near that for\n"
        "   0.5-1.8M steps, so budgets this short show that the path works, not which agent is better)"
    )
    print(
        f"agents on {summary['second_env_id']}: a fresh DKM's codes (no pretraining), recalled by time (steps t-1..t-4, 0); "
        f"MMER: the best mean training return over 100 episodes ({plan.agent_eval_episodes} greedy evaluation episodes)"
    )
    print(f"  {'agent':<9} {'MMER':>8} {'mean return':>12} {'steps':>9} {'train fps':>10}")
    for name, label in (("second:ppo+dkm", "PPO+DKM"), ("second:ppo", "PPO")):
        agent = agents[name]
        mmer = f"{agent['mmer']:>8.3f}" if agent["mmer"] is not None else f"{'—':>8}"
        print(f"  {label:<9} {mmer} {agent['mean_return']:>12.3f} {agent['steps']:>9,} {agent['fps']:>10.0f}")
    print(f"  ({SECOND_TASK_EVIDENCE})")

    print("\n=== stage timings")
    for timing in summary["timings"].values():
        note = f"reused (took {timing['original_seconds']:.0f} s when made)" if timing["reused"] else ""
        print(f"  {timing['stage']:<36} {timing['seconds']:>7.1f} s  {note}".rstrip())
    print(f"  {'total':<36} {summary['total_seconds']:>7.1f} s")

    print("\n=== artefacts")
    width = max(len(label) for label in summary["artefacts"])
    for label, path in summary["artefacts"].items():
        print(f"  {label:<{width}}  {path}")
    mode = summary["config"]["wandb_mode"]
    if summary["wandb_sync"]:
        print("\n=== wandb offline runs: upload them with")
        for line in summary["wandb_sync"]:
            print(f"  {line}")
    elif mode == "online":
        print("\nwandb: the runs were uploaded live (--wandb-mode online)")
    else:
        print(f"\nwandb: no offline runs (--wandb-mode {mode})")
