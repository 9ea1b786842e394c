"""Build a (memory-augmented) Stable-Baselines3 agent for a MiniGrid task in one call.

    model = build_agent(AgentConfig(env_id="MiniGrid-MemoryS7-v0", memory="dkm", memory_checkpoint="runs/dkm/model.safetensors"))
    model.learn(100_000)

The agent sees egocentric RGB frames (``frame_size`` pixels, :func:`episodic_memory.envs.make_frame_env`) as the
``observation`` key of a Dict, plus the memory read-outs when ``memory`` is not ``"none"``; every
agent, with or without memory, uses :class:`~episodic_memory.agents.extractors.MemoryFeaturesExtractor`, so the
baselines differ from the memory agent only by the read-outs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium
import torch
from episodic_memory.agents.extractors import MemoryFeaturesExtractor
from episodic_memory.envs.mazes import make_frame_env
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

from episodic_memory import DynamicKanervaMachine, GenerativeMemory, KanervaMachine
from episodic_memory.readouts import READOUTS, resolve_machine
from episodic_memory.vec_env import VecEpisodicMemory

__all__ = ["ALGORITHMS", "AgentConfig", "build_agent", "load_agent", "make_agent_env", "make_machine"]

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "recurrent_ppo": RecurrentPPO}


@dataclass
class AgentConfig:
    """What :func:`build_agent` builds (also the options of ``episodic-memory train-agent``)."""

    env_id: str = field(default="MiniGrid-MemoryS7-v0", metadata={"help": "MiniGrid task"})
    algo: Literal["ppo", "a2c", "recurrent_ppo"] = field(
        default="ppo", metadata={"help": "SB3 algorithm (recurrent_ppo: the LSTM baseline)"}
    )
    memory: Literal["none", "dkm", "km"] = field(
        default="dkm", metadata={"help": "episodic memory wrapper: none, or a DKM / KM memory"}
    )
    memory_checkpoint: str | None = field(
        default=None, metadata={"help": "pretrained machine (episodic-memory pretrain); default: a fresh one"}
    )
    frame_size: int = field(
        default=32,
        metadata={"help": "side of the egocentric RGB frames the agent sees (a memory checkpoint of another size resizes them)"},
    )
    readouts: tuple[str, ...] = field(default=READOUTS, metadata={"help": "memory read-outs added to the observation"})
    attractor_steps: int = field(default=5, metadata={"help": "code-space attractor iterations of the retrieval read-out"})
    novelty_reward: float = field(
        default=0.0,
        metadata={
            "help": "weight c of the episodic exploration bonus: reward += c * novelty / novelty under the empty memory, "
            "about c for a view new to the episode and near 0 for one seen already; evaluation reports extrinsic "
            "returns; 0 turns it off; needs a memory"
        },
    )
    code_size: int = field(default=100, metadata={"help": "code size of a fresh machine (ignored with --memory-checkpoint)"})
    num_slots: int = field(default=32, metadata={"help": "memory rows of a fresh machine (ignored with --memory-checkpoint)"})
    num_envs: int = field(default=8, metadata={"help": "parallel environments"})
    vec_env: Literal["dummy", "subproc"] = field(default="dummy", metadata={"help": "DummyVecEnv (one process) or SubprocVecEnv"})
    n_steps: int = field(default=128, metadata={"help": "rollout length per environment"})
    batch_size: int = field(default=64, metadata={"help": "minibatch size (ppo, recurrent_ppo)"})
    learning_rate: float = field(default=3e-4, metadata={"help": "optimizer learning rate"})
    ent_coef: float = field(default=0.01, metadata={"help": "entropy bonus"})
    seed: int = field(default=0, metadata={"help": "random seed: same seed, same run on CPU"})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": "device of the policy and the memory"})


def make_machine(config: AgentConfig, device: str | torch.device) -> GenerativeMemory:
    """The memory's machine: the checkpoint if given, else a fresh DKM/KM for the agent's frames.

    A checkpoint trained on frames of another size resizes the agent's frames itself (its saved
    preprocessing); one that cannot read RGB frames at all is refused.
    """
    if config.memory_checkpoint:
        machine = resolve_machine(config.memory_checkpoint, device)
        frames = (config.frame_size, config.frame_size, 3)
        problem = machine.input_spec.mismatch(frames)
        if problem is not None:
            raise ValueError(
                f"memory checkpoint {config.memory_checkpoint!r} reads frames of shape {tuple(machine.input_shape)}, "
                f"it cannot read the agent's frames of shape {frames}: {problem}"
            )
        return machine
    torch.manual_seed(config.seed)
    cls = {"dkm": DynamicKanervaMachine, "km": KanervaMachine}[config.memory]
    machine = cls((config.frame_size, config.frame_size, 3), config.code_size, config.num_slots, "gaussian", hidden_channels=16)
    return machine.to(device).eval()


def _dict_frames(env: gymnasium.Env) -> gymnasium.Env:
    """``frame`` -> ``{"observation": frame}``, the layout of the memory agents' observations."""
    return gymnasium.wrappers.TransformObservation(
        env, lambda obs: {"observation": obs}, spaces.Dict({"observation": env.observation_space})
    )


def make_agent_env(config: AgentConfig, device: str | torch.device = "cpu") -> VecEnv:
    """``num_envs`` frame environments, vectorised, monitored (episode returns and lengths for SB3's
    ``rollout/`` metrics), wrapped in :class:`VecEpisodicMemory` unless ``memory="none"``."""
    if config.memory == "none" and config.novelty_reward != 0:
        raise ValueError(
            f"novelty_reward={config.novelty_reward!r} needs an episodic memory, but memory='none'; "
            "set --memory dkm or km, or --novelty-reward 0"
        )
    env_fns = [lambda: make_frame_env(config.env_id, frame_size=config.frame_size) for _ in range(config.num_envs)]
    if config.memory == "none":
        env_fns = [lambda fn=fn: _dict_frames(fn()) for fn in env_fns]
    venv = SubprocVecEnv(env_fns) if config.vec_env == "subproc" else DummyVecEnv(env_fns)
    venv.seed(config.seed)
    venv = VecMonitor(venv)  # inside the memory wrapper: rollout/ep_rew_mean counts extrinsic rewards only
    if config.memory == "none":
        return venv
    return VecEpisodicMemory(
        venv,
        make_machine(config, device),
        readouts=config.readouts,
        attractor_steps=config.attractor_steps,
        device=device,
        novelty_reward=config.novelty_reward,
    )


def build_agent(config: AgentConfig, venv: VecEnv | None = None) -> BaseAlgorithm:
    """An SB3 model for ``config`` on ``venv`` (built by :func:`make_agent_env` when None)."""
    device = get_device(config.device)
    venv = make_agent_env(config, device) if venv is None else venv
    algo = ALGORITHMS[config.algo]
    policy = "MultiInputLstmPolicy" if config.algo == "recurrent_ppo" else "MultiInputPolicy"
    kwargs: dict[str, Any] = {"n_steps": config.n_steps, "learning_rate": config.learning_rate, "ent_coef": config.ent_coef}
    if config.algo != "a2c":
        kwargs["batch_size"] = config.batch_size
    return algo(
        policy,
        venv,
        policy_kwargs={
            "features_extractor_class": MemoryFeaturesExtractor,
            "features_extractor_kwargs": {"normalise_readouts": True},  # saved in agent.zip: see load_agent
        },
        seed=config.seed,
        device=device,
        **kwargs,
    )


def load_agent(path: str | Path, algo: str, venv: VecEnv, device: str | torch.device = "cpu") -> BaseAlgorithm:
    """An agent saved by :func:`build_agent` (``model.save(path)``), on ``venv``.

    Agents saved before :class:`MemoryFeaturesExtractor` normalised the memory read-outs have no
    ``normalise_readouts`` in their saved ``features_extractor_kwargs``; they keep reading them raw,
    as they were trained.
    """
    model = ALGORITHMS[algo].load(path, env=venv, device=device)
    saved = (model.policy_kwargs or {}).get("features_extractor_kwargs") or {}
    if "normalise_readouts" not in saved:
        for module in model.policy.modules():
            if isinstance(module, MemoryFeaturesExtractor):
                module.normalise_readouts = False
    return model
