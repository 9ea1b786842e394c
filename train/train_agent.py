"""Train and evaluate SB3 agents with or without the episodic memory.

    episodic-memory train-agent --env-id MiniGrid-MemoryS7-v0 --memory dkm --memory-checkpoint runs/dkm/model.safetensors
    episodic-memory train-agent --memory none                    # memory-less PPO baseline
    episodic-memory train-agent --memory none --algo recurrent_ppo
    episodic-memory train-agent --algo dqn --replay-readouts float16 --buffer-size 200000
    episodic-memory evaluate-agent --agent runs/agent/agent.zip --episodes 100

Training writes ``out/agent.zip`` (the SB3 model), ``out/agent_config.json`` (what rebuilds its
environment; paths in it are absolute), ``out/machine.safetensors`` (the agent's memory machine:
the pretrained ``--memory-checkpoint`` or the fresh one it was trained with, so the run directory is
self-contained and may be moved), ``out/metrics.jsonl``, ``out/progress.csv`` and a wandb run
(offline by default) with SB3's metrics and the memory's (``memory/``), then evaluates the agent.
Every evaluation (during training, at the end, ``evaluate-agent``) reads with the agent's own machine.

Checkpoints (``out/checkpoints/step-NNNNNNNNN/``: agent.zip, agent_config.json, machine.safetensors,
trainer.json and, for dqn/qrdqn, replay_buffer.pkl) are written every ``checkpoint_every`` steps, at
the end, and when SIGINT/SIGTERM arrives; each is itself an agent directory ``evaluate-agent`` reads.
A checkpoint directory appears whole or not at all. ``train-agent --resume`` continues the run in
``--out`` from its newest checkpoint: see :func:`train_agent` for what carries over and what does not.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import CSVOutputFormat, KVWriter, Logger
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, unwrap_vec_wrapper

from episodic_memory import DynamicKanervaMachine, read_checkpoint_header
from episodic_memory.agents.builder import (
    ALGORITHMS,
    OFF_POLICY,
    AgentConfig,
    build_agent,
    load_agent,
    make_agent_env,
    vector_readouts,
)
from episodic_memory.agents.callbacks import EpisodeWindowCallback, MemoryMetricsCallback
from episodic_memory.agents.replay import replay_buffer_nbytes
from episodic_memory.registry import BACKENDS, backend_kind, check_backend_machine, model_name
from episodic_memory.train.config import field
from episodic_memory.train.pretrain import StopRequest, resolve_device
from episodic_memory.train.tracking import RunLogger
from episodic_memory.wrappers.vec_env import VecEpisodicMemory

__all__ = [
    "EvaluateAgentConfig",
    "TrainAgentConfig",
    "evaluate_agent",
    "extrinsic_rewards",
    "load_agent_config",
    "latest_agent_checkpoint",
    "make_evaluation_env",
    "replay_buffer_summary",
    "run_episodes",
    "train_agent",
]

MACHINE_FILE = "machine.safetensors"  # the agent's memory machine, beside agent.zip
READOUT_STATS_FILE = "readout_stats.pkl"  # the running statistics of --standardise-readouts (VecNormalize.save)
CHECKPOINT_FORMAT = 1
# Options that may differ between a run and its resumption; all others define the experiment.
RESUMABLE_CHANGES = {
    "out",
    "total_steps",
    "checkpoint_every",
    "eval_episodes",
    "eval_every",
    "eval_every_episodes",
    "device",
    "vec_env",
    "wandb_mode",
    "wandb_project",
}


@dataclass
class TrainAgentConfig(AgentConfig):
    """Options of ``episodic-memory train-agent``: the agent's (:class:`AgentConfig`) and the run's."""

    out: str = field("runs/agent", "run directory: agent.zip, checkpoints, metrics.jsonl, wandb files, evaluation.json")
    total_steps: int = field(200_000, "environment steps to train for, in all (raise it to extend a resumed run)")
    checkpoint_every: int = field(50_000, "environment steps between checkpoints")
    eval_episodes: int = field(50, "episodes of the evaluation at the end (0 skips it)")
    eval_every: int = field(0, "environment steps between evaluations during training, a learning curve (0: none)")
    eval_every_episodes: int = field(16, "episodes of each evaluation during training")
    wandb_mode: Literal["online", "offline", "disabled"] = field(
        "offline", "wandb logging; offline runs upload later with `wandb sync`"
    )
    wandb_project: str = field("episodic-memory", "wandb project")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, minimum in (("total_steps", 1), ("checkpoint_every", 1), ("eval_episodes", 0), ("eval_every", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, actual value: {value!r}")
        if self.eval_every > 0:
            _check_episodes("eval_every_episodes", self.eval_every_episodes)


@dataclass
class EvaluateAgentConfig:
    """Options of ``episodic-memory evaluate-agent``."""

    agent: str = dataclasses.field(metadata={"help": "agent.zip written by `episodic-memory train-agent`"})
    episodes: int = field(100, "episodes to run (at least 1)")
    seed: int = field(0, "seed of the evaluation environments (and of sampled actions)")
    stochastic: bool = field(
        False,
        "sample actions from the policy as in training instead of taking the most probable one; writes evaluation-sampled.json",
    )
    out: str | None = field(None, "directory for the report (default: the agent's directory)")

    def __post_init__(self) -> None:
        _check_episodes("--episodes", self.episodes)


def _check_episodes(option: str, episodes: Any) -> None:
    """An evaluation needs at least one episode: the mean of none is NaN, not a result."""
    if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1:
        raise ValueError(f"{option} must be an int >= 1 (episodes to evaluate), actual value: {episodes!r}")


class _RunLoggerOutput(KVWriter):
    """Sends SB3's logged values to a :class:`RunLogger` (metrics.jsonl and wandb)."""

    def __init__(self, run_logger: RunLogger) -> None:
        self.run_logger = run_logger

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        numbers = {
            k: float(v) for k, v in key_values.items() if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
        }
        self.run_logger.log(numbers, step)


class _ContinuedCSVOutput(CSVOutputFormat):
    """SB3's ``progress.csv`` writer that continues an existing file (a resumed run) instead of truncating it.

    It keeps the file's columns; a key new to the file widens it, as in SB3's own writer.
    """

    def __init__(self, filename: str) -> None:
        path = Path(filename)
        if not path.is_file() or path.stat().st_size == 0:
            super().__init__(filename)
            return
        self.file = path.open("r+")  # the attributes of CSVOutputFormat.__init__, on the open file
        self.keys = self.file.readline().rstrip("\n").split(",")
        self.separator, self.quotechar = ",", '"'
        self.file.seek(0, os.SEEK_END)


def train_agent(
    config: TrainAgentConfig, progress: bool = True, callbacks: Sequence[BaseCallback] = (), resume: bool = False
) -> dict[str, Any]:
    """Train as ``config`` says, save the agent and its machine, evaluate it; returns a summary.

    ``config.device`` is resolved first (``auto`` -> ``cuda`` or ``cpu``; ``cuda`` without a GPU is a
    ValueError) and recorded resolved, with absolute paths, in ``agent_config.json``.

    SIGINT/SIGTERM stops training at the next environment step: a checkpoint is written and the
    summary says ``interrupted`` (no agent.zip, no final evaluation). The step count of that
    checkpoint is the steps the agent learnt from: an on-policy rollout cut short is discarded and
    not counted, and an off-policy agent keeps every transition in its buffer but the last step's.

    :param callbacks: more SB3 callbacks, called after this function's own at every step.
    :param resume: False starts afresh (refused when ``config.out`` holds checkpoints); True continues
        from the newest checkpoint in ``config.out``: the model's weights, optimiser state and step
        count, the replay buffer (dqn, qrdqn), the learning-rate and exploration schedules (SB3's
        progress runs from the checkpoint's step to ``total_steps``), ``metrics.jsonl`` and
        ``progress.csv`` (appended) and the wandb run (resumed by its id). Only the options in
        :data:`RESUMABLE_CHANGES` may differ from the checkpoint's. What does not carry over: the
        environments and their memories start new episodes (seeded from ``(seed, step)``), the
        random streams are reseeded from ``(seed, step)``, and an on-policy rollout in progress is
        lost; so a resumed run is not step for step the uninterrupted one. Log rows written after
        the checkpoint by a run killed without a checkpoint (SIGKILL) stay in the logs.
    """
    config = _resolved(config)
    out = Path(config.out)
    checkpoint, trainer = _resume_from(out, config) if resume else (None, {})
    if checkpoint is None:
        if _holds_checkpoints(out):
            raise ValueError(
                f"{str(out)!r} already holds checkpoints: pass --resume to continue that run, or choose another --out"
            )
        _check_memory_checkpoint(
            config,
            "--memory-checkpoint",
            f"`episodic-memory pretrain --model {config.memory} --out DIR` writes one to DIR/model.safetensors; "
            "or leave out --memory-checkpoint for a fresh, untrained memory",
        )
    model = _model(config, checkpoint)  # before out is created: bad options leave no empty run directory behind
    out.mkdir(parents=True, exist_ok=True)
    memory = unwrap_vec_wrapper(model.get_env(), VecEpisodicMemory)
    if memory is not None:  # the machine the agent learns to read (a resumed run's: its checkpoint's); evaluations read with it
        memory.core.machine.save(out / MACHINE_FILE)
    readout_stats = unwrap_vec_wrapper(model.get_env(), VecNormalize)
    if readout_stats is not None:  # saved again with every checkpoint and at the end; evaluations read with the latest
        readout_stats.save(out / READOUT_STATS_FILE)
    run_logger = RunLogger(
        out, config.wandb_mode, config.wandb_project, dataclasses.asdict(config), out.name, trainer.get("wandb_id")
    )
    model.set_logger(Logger(str(out), [_ContinuedCSVOutput(str(out / "progress.csv")), _RunLoggerOutput(run_logger)]))
    stop = StopRequest()
    steps = _Checkpoints(out, config, run_logger, stop)
    own: list[BaseCallback] = [EpisodeWindowCallback(), *([MemoryMetricsCallback()] if config.memory != "none" else [])]
    evaluation = None
    if config.eval_every > 0:
        evaluation_env = make_evaluation_env(out, config, config.seed + 20_000, model.device)
        evaluation = _PeriodicEvaluation(evaluation_env, config.eval_every, config.eval_every_episodes)
        own.append(evaluation)
    start_step, start = model.num_timesteps, time.perf_counter()
    try:
        model.learn(
            max(config.total_steps - start_step, 0),
            callback=[*own, steps, *callbacks],  # the stop request after ours: they see every step it lets through
            log_interval=1,
            reset_num_timesteps=checkpoint is None,
            progress_bar=progress,
        )
        train_seconds = time.perf_counter() - start - (evaluation.seconds if evaluation else 0.0)
        final = steps.save()  # still under the stop request: a second signal cannot cut the checkpoint short
    finally:
        stop.restore()
    if evaluation is not None:
        evaluation.venv.close()
    interrupted = stop.signal is not None and model.num_timesteps < config.total_steps
    summary: dict[str, Any] = {
        "agent": None if interrupted else str(out / "agent.zip"),
        "steps": model.num_timesteps,
        "resumed_from": start_step if checkpoint is not None else None,
        "interrupted": interrupted,
        "checkpoint": str(final),
        "train_seconds": train_seconds,
        "fps": (model.num_timesteps - start_step) / train_seconds,
        "device": config.device,
        "wandb_run_dir": str(run_logger.run_dir) if run_logger.run_dir else None,
    }
    if not interrupted:
        model.save(out / "agent.zip")
        if readout_stats is not None:
            readout_stats.save(out / READOUT_STATS_FILE)
        (out / "agent_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
        if config.eval_episodes > 0:
            summary["evaluation"] = evaluate_agent(out / "agent.zip", config.eval_episodes, seed=config.seed + 10_000)
            evaluated = {f"eval/{k}": v for k, v in summary["evaluation"].items() if isinstance(v, float)}
            run_logger.log(evaluated, model.num_timesteps)
    run_logger.finish()
    model.get_env().close()
    return summary


def _model(config: TrainAgentConfig, checkpoint: Path | None) -> BaseAlgorithm:
    """A new model for ``config``, or the one of ``checkpoint`` (with its machine and replay buffer), on new environments."""
    if checkpoint is None:
        venv = make_agent_env(config, config.device)
    else:  # the checkpoint's machine, new episodes seeded from (seed, step): see train_agent
        seed = _resume_seed(config.seed, _read_trainer(checkpoint)["step"])
        machine = {"memory_checkpoint": str(checkpoint / MACHINE_FILE)} if config.memory != "none" else {}
        stats = checkpoint / READOUT_STATS_FILE if config.standardise_readouts else None
        venv = make_agent_env(dataclasses.replace(config, seed=seed, **machine), config.device, readout_stats=stats)
    try:
        if config.algo in OFF_POLICY:
            print(replay_buffer_summary(config, venv))
        if checkpoint is None:
            return build_agent(config, venv)
        try:
            model = load_agent(checkpoint / "agent.zip", config.algo, venv, config.device)
            if config.algo in OFF_POLICY:
                model.load_replay_buffer(checkpoint / "replay_buffer.pkl")
        except Exception as error:  # noqa: BLE001 - SB3 and pickle raise many kinds for a damaged file; all mean the same
            raise ValueError(
                f"checkpoint {str(checkpoint)!r} is corrupted ({type(error).__name__}: {error}); delete it to resume from "
                "the checkpoint before it, or start afresh in another --out"
            ) from error
        model.set_random_seed(seed)
        return model
    except BaseException:
        venv.close()
        raise


def _resume_seed(seed: int, step: int) -> int:
    """The seed of a run resumed at ``step``: other episodes and random draws than those from ``seed`` at step 0."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0] % 2**31)


def _holds_checkpoints(out: Path) -> bool:
    """Whether ``out/checkpoints`` holds any checkpoint, complete or not (also SB3 ``agent_*_steps.zip`` of older runs)."""
    root = out / "checkpoints"
    return root.is_dir() and any(p.name.startswith(("step-", "agent_")) for p in root.iterdir())


def latest_agent_checkpoint(out: str | Path) -> Path | None:
    """The newest complete checkpoint directory under ``out/checkpoints`` (one with trainer.json), or None."""
    root = Path(out) / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and (p / "trainer.json").is_file()) if root.is_dir() else []
    return done[-1] if done else None


def _read_trainer(checkpoint: Path) -> dict[str, Any]:
    hint = f"delete {str(checkpoint)!r} to resume from the checkpoint before it, or start afresh in another --out"
    try:
        trainer = json.loads((checkpoint / "trainer.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"checkpoint {str(checkpoint)!r} is corrupted or incomplete ({error}); {hint}") from error
    if not isinstance(trainer, dict) or trainer.get("format_version") != CHECKPOINT_FORMAT or "step" not in trainer:
        raise ValueError(f"checkpoint {str(checkpoint)!r} is not a train-agent checkpoint of this version; {hint}")
    return trainer


def _resume_from(out: Path, config: TrainAgentConfig) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint in ``out`` and its trainer state; ValueError if there is none, it is damaged, or
    ``config`` changes options that define the experiment."""
    checkpoint = latest_agent_checkpoint(out)
    if checkpoint is None:
        root = out / "checkpoints"
        if _holds_checkpoints(out):
            raise ValueError(
                f"--resume: no complete checkpoint in {str(root)!r} (none has trainer.json; SB3 agent_*_steps.zip files of "
                "older runs cannot be resumed); start afresh in another --out"
            )
        raise ValueError(f"--resume: no checkpoint in {str(root)!r}; run without --resume to start")
    trainer = _read_trainer(checkpoint)
    hint = f"delete {str(checkpoint)!r} to resume from the checkpoint before it, or start afresh in another --out"
    needed = ["agent.zip", "agent_config.json"] + ([MACHINE_FILE] if config.memory != "none" else [])
    needed += ["replay_buffer.pkl"] if config.algo in OFF_POLICY else []
    missing = [name for name in needed if not (checkpoint / name).is_file()]
    if missing:
        raise ValueError(f"checkpoint {str(checkpoint)!r} lacks {', '.join(missing)}; {hint}")
    try:
        saved = json.loads((checkpoint / "agent_config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"checkpoint {str(checkpoint)!r}: agent_config.json is not valid JSON ({error}); {hint}") from error
    wanted = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples as lists, as saved
    changed = {k: (saved.get(k), v) for k, v in wanted.items() if k not in RESUMABLE_CHANGES and saved.get(k) != v}
    if changed:
        listing = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ValueError(
            f"cannot resume {str(checkpoint)!r} with a different experiment ({listing}); only {sorted(RESUMABLE_CHANGES)} "
            "may change: pass the options of that run again, or start a new run in another --out"
        )
    return checkpoint, trainer


class _Checkpoints(BaseCallback):
    """Writes a checkpoint every ``config.checkpoint_every`` steps, and stops training when ``stop`` has a signal.

    Checkpoints are taken when a rollout starts, after the update of the previous one, so weights,
    optimiser, step count and replay buffer agree. On a signal, training stops at the next step and
    the step count goes back to what the agent learnt from (see :func:`train_agent`); :meth:`save`
    then writes the checkpoint.
    """

    def __init__(self, out: Path, config: TrainAgentConfig, run_logger: RunLogger, stop: StopRequest) -> None:
        super().__init__()
        self.out, self.config, self.run_logger, self.stop = out, config, run_logger, stop
        self._next = 0
        self._rollout_start = 0  # the step count when the current rollout started

    def _on_training_start(self) -> None:
        every = self.config.checkpoint_every
        self._next = (self.num_timesteps // every + 1) * every

    def _on_rollout_start(self) -> None:
        self._rollout_start = self.model.num_timesteps
        if self.model.num_timesteps >= self._next:
            self.save()
            self._next = (self.model.num_timesteps // self.config.checkpoint_every + 1) * self.config.checkpoint_every

    def _on_step(self) -> bool:
        if self.stop.signal is None:
            return True
        if self.config.algo in OFF_POLICY:  # SB3 stores this step's transition after the callbacks: it is dropped
            self.model.num_timesteps -= self.training_env.num_envs
        else:  # the rollout in progress is never learnt from
            self.model.num_timesteps = self._rollout_start
        return False

    def save(self) -> Path:
        """Write ``out/checkpoints/step-NNNNNNNNN`` for the model's current step atomically; returns its path.

        Older checkpoints keep their agent; only the newest keeps a replay buffer (it can be GBs).
        """
        root = self.out / "checkpoints"
        root.mkdir(parents=True, exist_ok=True)
        final = root / f"step-{self.model.num_timesteps:09d}"
        tmp = root / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self.model.save(tmp / "agent.zip")
        (tmp / "agent_config.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=2))
        if (self.out / MACHINE_FILE).is_file():
            shutil.copyfile(self.out / MACHINE_FILE, tmp / MACHINE_FILE)
        readout_stats = unwrap_vec_wrapper(self.model.get_env(), VecNormalize)
        if readout_stats is not None:
            readout_stats.save(tmp / READOUT_STATS_FILE)
        if self.config.algo in OFF_POLICY:
            self.model.save_replay_buffer(tmp / "replay_buffer.pkl")
        trainer = {"format_version": CHECKPOINT_FORMAT, "step": self.model.num_timesteps, "wandb_id": self.run_logger.run_id}
        (tmp / "trainer.json").write_text(json.dumps(trainer, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in root.glob("step-*/replay_buffer.pkl"):
            if old.parent != final:
                old.unlink()
        return final


def replay_buffer_summary(config: AgentConfig, venv: VecEnv) -> str:
    """One line on the replay buffer an off-policy agent on ``venv`` allocates: bytes per transition and in all."""
    float16_keys = vector_readouts(venv.observation_space) if config.replay_readouts == "float16" else ()
    per_transition, total = replay_buffer_nbytes(
        venv.observation_space, venv.action_space, config.buffer_size, venv.num_envs, float16_keys
    )
    return (
        f"replay buffer ({config.replay_readouts} read-outs): {per_transition:,} bytes per transition, "
        f"{total:,} bytes ({total / 2**30:.2f} GiB) for {config.buffer_size:,} transitions"
    )


def _resolved(config: TrainAgentConfig) -> TrainAgentConfig:
    """``config`` with its device resolved (ValueError for ``cuda`` without a GPU) and its paths absolute,
    so that ``agent_config.json`` records what ran and is read the same from any working directory."""
    return dataclasses.replace(
        config,
        device=resolve_device(config.device).type,
        out=str(Path(config.out).absolute()),
        memory_checkpoint=str(Path(config.memory_checkpoint).absolute()) if config.memory_checkpoint else None,
    )


def make_evaluation_env(run_dir: str | Path, config: AgentConfig, seed: int, device: str | torch.device = "cpu") -> VecEnv:
    """The agent's environments seeded by ``seed``, reading with the agent's own machine ``run_dir/machine.safetensors``.

    Only the environments' seed differs from training: the machine is the one the agent was
    trained with, never a fresh one drawn from ``seed``. Run directories written before the
    machine was saved beside the agent fall back to ``config.memory_checkpoint``. With
    ``standardise_readouts`` the read-outs are standardised by the agent's ``readout_stats.pkl``,
    frozen (not updated by the evaluation).
    """
    machine = Path(run_dir) / MACHINE_FILE
    stats = Path(run_dir) / READOUT_STATS_FILE
    if config.standardise_readouts and not stats.is_file():
        raise FileNotFoundError(
            f"{str(stats)!r} is missing: it holds the read-out statistics the agent was trained with (written by "
            "`episodic-memory train-agent` next to agent.zip); train the agent again"
        )
    env_config = dataclasses.replace(config, seed=seed)
    if config.memory != "none" and machine.is_file():
        env_config = dataclasses.replace(env_config, memory_checkpoint=str(machine))
    elif config.memory != "none" and not config.memory_checkpoint:
        raise FileNotFoundError(
            f"{str(machine)!r} is missing: it holds the memory the agent was trained with (written by "
            "`episodic-memory train-agent` next to agent.zip); train the agent again"
        )
    venv = make_agent_env(env_config, device, readout_stats=stats if config.standardise_readouts else None)
    if isinstance(venv, VecNormalize):
        venv.training = False
    return venv


def _check_memory_checkpoint(config: AgentConfig, source: str, if_missing: str) -> None:
    """Fail with a message that says what to do when ``config.memory_checkpoint`` is missing, damaged or of another kind.

    :param source: names the checkpoint in the message, e.g. ``"--memory-checkpoint"``.
    :param if_missing: what to do when the file does not exist.
    """
    path = config.memory_checkpoint
    if config.memory == "none" or not path:
        return
    model = model_name(backend_kind(config.memory).machine or DynamicKanervaMachine)
    make_one = f"`episodic-memory pretrain --model {model} --out DIR` writes one to DIR/model.safetensors"
    if not Path(path).is_file():
        raise FileNotFoundError(f"{source} {path!r}: no such file; {if_missing}")
    try:
        kind = read_checkpoint_header(path)["kind"]
    except ValueError as error:
        raise ValueError(f"{source} {path!r}: {error}; {make_one}") from error
    with_memory = sorted({backend.machine.kind for backend in BACKENDS.values() if backend.machine is not None})
    if kind not in with_memory:
        raise ValueError(
            f"{source} {path!r} holds a {kind}, which has no memory; --memory needs a {' or '.join(with_memory)}; {make_one}"
        )
    try:
        check_backend_machine(config.memory, kind, f"{source} {path!r}")
    except ValueError as error:
        raise ValueError(f"{error}; {make_one}") from error


def extrinsic_rewards(rewards: np.ndarray, infos: list[dict[str, Any]]) -> np.ndarray:
    """The environment's own rewards ``[num_envs]``: ``rewards`` without the memory's exploration bonus.

    :class:`~episodic_memory.wrappers.vec_env.VecEpisodicMemory` reports them in ``infos[i]["episodic_memory"]``;
    other environments' rewards are extrinsic already.
    """
    return np.array(
        [info.get("episodic_memory", {}).get("extrinsic_reward", reward) for reward, info in zip(rewards, infos, strict=True)],
        dtype=np.float64,
    )


def run_episodes(
    model: BaseAlgorithm, venv: VecEnv, episodes: int, deterministic: bool = True
) -> tuple[list[float], list[float]]:
    """Extrinsic returns and successes (1.0 when an episode ends with a positive reward) of ``episodes`` episodes on ``venv``.

    Returns and successes count the environment's rewards only, never the memory's exploration
    bonus (:func:`extrinsic_rewards`), so agents trained with and without it compare.
    """
    returns: list[float] = []
    successes: list[float] = []
    obs = venv.reset()
    state, starts = None, np.ones(venv.num_envs, dtype=bool)
    episode_return = np.zeros(venv.num_envs)
    while len(returns) < episodes:
        actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
        obs, rewards, dones, infos = venv.step(actions)
        rewards = extrinsic_rewards(rewards, infos)
        episode_return += rewards
        starts = dones
        for i in np.flatnonzero(dones):
            if len(returns) < episodes:
                returns.append(float(episode_return[i]))
                successes.append(float(rewards[i] > 0))
            episode_return[i] = 0.0
    return returns, successes


class _PeriodicEvaluation(BaseCallback):
    """Every ``every`` environment steps: success rate and mean return over ``episodes`` episodes, logged under ``eval/``."""

    def __init__(self, venv: VecEnv, every: int, episodes: int) -> None:
        super().__init__()
        self.venv, self.every, self.episodes = venv, every, episodes
        self._next = every
        self.seconds = 0.0  # time spent evaluating, left out of the training fps

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every  # a resumed run keeps the schedule

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.every
            start = time.perf_counter()
            training_stats = unwrap_vec_wrapper(self.training_env, VecNormalize)
            if training_stats is not None:  # the statistics the policy reads with now
                unwrap_vec_wrapper(self.venv, VecNormalize).obs_rms = copy.deepcopy(training_stats.obs_rms)
            returns, successes = run_episodes(self.model, self.venv, self.episodes)
            self.seconds += time.perf_counter() - start
            self.logger.record("eval/success_rate", float(np.mean(successes)))
            self.logger.record("eval/mean_return", float(np.mean(returns)))
            self.logger.dump(self.num_timesteps)
        return True


def load_agent_config(agent: str | Path, seed: int = 0) -> AgentConfig:
    """The :class:`AgentConfig` in ``agent_config.json`` beside the saved agent ``agent``, with ``seed``.

    :raises FileNotFoundError: ``agent`` or its ``agent_config.json`` is missing.
    :raises ValueError: the file is damaged, or names a memory checkpoint that is gone or not a memory.
    """
    agent = Path(agent)
    config_path = agent.parent / "agent_config.json"
    if agent.is_dir():
        raise FileNotFoundError(f"{str(agent)!r} is a directory; pass the agent.zip in it (--agent {agent / 'agent.zip'})")
    if not agent.is_file():
        raise FileNotFoundError(f"no agent at {str(agent)!r}; train one with `episodic-memory train-agent --out DIR`")
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{str(config_path)!r} is missing: it is written by `episodic-memory train-agent` next to agent.zip"
        )
    retrain = "train the agent again with `episodic-memory train-agent`"
    try:
        saved = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(config_path)!r} is not valid JSON ({error}); {retrain}") from error
    if not isinstance(saved, dict):
        raise ValueError(f"{str(config_path)!r} must hold a JSON object of the agent's options; {retrain}")
    try:
        config = AgentConfig(**{f.name: saved[f.name] for f in dataclasses.fields(AgentConfig) if f.name in saved})
        config = dataclasses.replace(
            config,
            seed=seed,
            readouts=tuple(config.readouts),
            imports=tuple(config.imports),
            obs_key=None if config.obs_key is None else tuple(config.obs_key),
        )
        if config.algo not in ALGORITHMS:
            raise KeyError(config.algo)
    except (TypeError, KeyError) as error:
        raise ValueError(f"{str(config_path)!r} holds invalid agent options ({error!r}); {retrain}") from error
    if not (agent.parent / MACHINE_FILE).is_file():  # a run from before the machine was saved beside the agent
        _check_memory_checkpoint(
            config,
            f"the memory checkpoint of {str(config_path)!r}",
            "the agent was trained with that memory: put the file back, or train the agent again",
        )
    return config


def evaluate_agent(
    agent: str | Path, episodes: int = 100, seed: int = 0, deterministic: bool = True, out: str | Path | None = None
) -> dict[str, Any]:
    """Success rate and mean return of a saved agent over ``episodes`` (>= 1) episodes; writes the report to ``out``.

    The environment is rebuilt from ``agent_config.json`` next to ``agent`` and reads with the
    agent's machine (:func:`make_evaluation_env`); only the environments' seed is ``seed``. An
    episode succeeds when it ends with a positive reward (MiniGrid pays ``1 - 0.9 t / max_steps``
    on success, 0 otherwise). Returns are extrinsic: an agent trained with ``novelty_reward`` is
    scored without its bonus.

    :param deterministic: True takes the policy's most probable action (``policy: "greedy"``, written
        to ``evaluation.json``); False samples actions as in training (``policy: "sampled"``, written to
        ``evaluation-sampled.json``), seeded by ``seed``. A policy still close to uniform can be stuck
        when greedy (one action forever in a state it keeps seeing) and fine when sampled.
    :param out: directory of the report; default: the agent's directory.
    """
    _check_episodes("episodes", episodes)
    agent = Path(agent)
    config = load_agent_config(agent, seed)
    venv = make_evaluation_env(agent.parent, config, seed)
    try:
        model = load_agent(agent, config.algo, venv)
    except Exception as error:  # noqa: BLE001 - SB3 raises many kinds for a damaged zip; all mean the same to the user
        venv.close()
        raise ValueError(
            f"cannot load the agent {str(agent)!r} ({type(error).__name__}: {error}); train the agent again with "
            "`episodic-memory train-agent`"
        ) from error
    set_random_seed(seed)  # the actions sampled when not deterministic
    returns, successes = run_episodes(model, venv, episodes, deterministic)
    venv.close()
    report = {
        "env_id": config.env_id,
        "algo": config.algo,
        "memory": config.memory,
        "policy": "greedy" if deterministic else "sampled",
        "episodes": episodes,
        "success_rate": float(np.mean(successes)),
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
    }
    out = agent.parent if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ("evaluation.json" if deterministic else "evaluation-sampled.json")).write_text(json.dumps(report, indent=2))
    return report
