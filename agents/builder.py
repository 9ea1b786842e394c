"""Build a (memory-augmented) Stable-Baselines3 agent for any Gymnasium environment in one call.

    model = build_agent(AgentConfig(env_id="MiniGrid-MemoryS7-v0", memory="dkm", memory_checkpoint="runs/dkm/model.safetensors"))
    model = build_agent(AgentConfig(env_id="CartPole-v1", memory="dkm"))  # a fresh memory that fits the space
    model.learn(100_000)

The environments come from :func:`episodic_memory.envs.gym_envs.make_env`: MiniGrid ids give
egocentric RGB frames (``frame_size`` pixels), other ids their own observations. The agent sees
them as the ``observation`` key of a Dict (or the env's own Dict keys), plus the memory read-outs
when ``memory`` is not ``"none"``; with ``policy_input="readouts"`` it sees the read-outs only,
the observation's ``code`` among them. Every agent, with or without memory, uses
:class:`~episodic_memory.agents.extractors.MemoryFeaturesExtractor`, so the baselines differ from
the memory agent only by the read-outs.
"""

from __future__ import annotations

import signal
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium
import torch
from gymnasium import spaces
from sb3_contrib import QRDQN, RecurrentPPO
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecFrameStack,
    VecMonitor,
    VecNormalize,
    unwrap_vec_wrapper,
)

from episodic_memory import DynamicKanervaMachine, GenerativeMemory
from episodic_memory.agents.extractors import MemoryFeaturesExtractor
from episodic_memory.agents.frame_stack import VecFrameStackKeys
from episodic_memory.agents.replay import Float16ReadoutsReplayBuffer
from episodic_memory.envs.gym_envs import (
    PreviousAction,
    agent_observations,
    make_env,
    random_observations,
    stackable,
    time_aware,
)
from episodic_memory.models.observations import ObservationEncoding
from episodic_memory.registry import BACKENDS, backend_kind, check_backend_machine
from episodic_memory.wrappers.core import READOUTS, resolve_machine
from episodic_memory.wrappers.vec_env import VecEpisodicMemory

__all__ = [
    "ALGORITHMS",
    "OFF_POLICY",
    "AgentConfig",
    "build_agent",
    "vector_readouts",
    "load_agent",
    "make_agent_env",
    "make_machine",
]

CALIBRATION_STEPS = 256
"""Steps of the random walk whose observations calibrate a fresh machine (:func:`make_machine`)."""

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "recurrent_ppo": RecurrentPPO, "dqn": DQN, "qrdqn": QRDQN}
OFF_POLICY = tuple(name for name, algo in ALGORITHMS.items() if issubclass(algo, OffPolicyAlgorithm))  # replay buffers
MemoryChoice = Literal[("none", *BACKENDS)]  # the registry's backends, and no memory


@dataclass
class AgentConfig:
    """What :func:`build_agent` builds (also the options of ``episodic-memory train-agent``)."""

    env_id: str = field(
        default="MiniGrid-MemoryS7-v0",
        metadata={
            "help": "any registered Gymnasium id, or module:Id (MiniGrid ids give egocentric frames, others their own "
            "observations)"
        },
    )
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "keyword arguments of gymnasium.make"})
    imports: tuple[str, ...] = field(
        default=(),
        metadata={"help": "modules to import first, for ids of third-party packages (e.g. popgym)", "aliases": ("--import",)},
    )
    obs_key: tuple[str, ...] | None = field(
        default=None, metadata={"help": "for Dict observations, the key(s) the memory reads (default: every non-text key)"}
    )
    algo: Literal["ppo", "a2c", "recurrent_ppo", "dqn", "qrdqn"] = field(
        default="ppo",
        metadata={"help": "SB3 algorithm (recurrent_ppo: the LSTM baseline; dqn, qrdqn: off-policy, with a replay buffer)"},
    )
    memory: MemoryChoice = field(
        default="dkm",
        metadata={
            "help": "episodic memory: none; dkm or km, the machine's own Kanerva memory; or a classical memory of the "
            "machine's codes: " + ", ".join(name for name, kind in BACKENDS.items() if kind.machine is None)
        },
    )
    memory_checkpoint: str | None = field(
        default=None, metadata={"help": "pretrained machine (episodic-memory pretrain); default: a fresh one"}
    )
    frame_size: int = field(
        default=32,
        metadata={"help": "side of the egocentric RGB frames of MiniGrid ids (a memory checkpoint of another size resizes them)"},
    )
    readouts: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": f"memory read-outs added to the observation, of {list(READOUTS)} (each memory declares which it has; "
            "code: the observation's own code); default: every read-out of the memory"
        },
    )
    policy_input: Literal["pixels", "readouts", "both"] = field(
        default="both",
        metadata={
            "help": "what the policy sees: the observation and the read-outs (both), the read-outs only, with the "
            "observation's code (readouts: no CNN, the encoder runs once per frame for both), or the observation only "
            "(pixels: the memory still runs, e.g. for --novelty-reward)"
        },
    )
    memory_head: Literal["attention", "linear"] = field(
        default="attention",
        metadata={
            "help": "how the policy reads the memory read-out: attention over its rows queried by the observation, or "
            "one linear layer of the whole matrix (README: the memory suite)"
        },
    )
    standardise_readouts: bool = field(
        default=False,
        metadata={
            "help": "standardise each entry of the vector read-outs (retrieval, code, memory) by its running mean and std "
            "(SB3's VecNormalize on those keys, saved beside the agent as readout_stats.pkl): what differs between "
            "episodes is a few percent of the memory's prior, which the policy then sees at order one (README: the "
            "memory suite); needs a memory"
        },
    )
    recall_lags: tuple[int, ...] = field(
        default=(),
        metadata={
            "help": "steps back (1: the previous observation) whose codes the recall read-out returns, from a second "
            "memory that writes each code at its step's address and so keeps the order the first one loses (README: "
            "recall by time); needs a memory"
        },
    )
    recall_positions: tuple[int, ...] = field(
        default=(),
        metadata={"help": "steps from the episode's start (0: its first observation) whose codes recall returns, after the lags"},
    )
    recall_slots: int = field(
        default=64,
        metadata={"help": "rows of the time-addressed memory: it recalls exactly while an episode has at most this many steps"},
    )
    recall_source: Literal["code", "observation"] = field(
        default="code",
        metadata={
            "help": "what the time-addressed memory keeps: the machine's codes, or the observations as the machine reads "
            "them (flattened, one-hot for discrete spaces): then recall returns the observations themselves and "
            "recall_sum counts how often each value came up"
        },
    )
    attractor_steps: int = field(default=5, metadata={"help": "code-space attractor iterations of the retrieval read-out"})
    novelty_reward: float = field(
        default=0.0,
        metadata={
            "help": "weight c of the episodic exploration bonus: reward += c * novelty / novelty under the empty memory, "
            "c for an episode's first view, a fraction of c for a view new to the episode and near 0 for one seen already "
            "(README: novelty reward); evaluation reports extrinsic returns; 0 turns it off; needs a memory"
        },
    )
    frame_stack: int = field(
        default=1,
        metadata={
            "help": "stack the last N observations (SB3's VecFrameStack, the baseline SB3 suggests before an LSTM); "
            "observations that are not a Box are flattened one-hot first; with a memory only the observation (or its code, "
            "with --policy-input readouts) is stacked, not the read-outs"
        },
    )
    time_feature: bool = field(
        default=False,
        metadata={
            "help": "append t/T, the elapsed fraction of the env's step limit, to its (flat) observation (Gymnasium's "
            "TimeAwareObservation), before any memory or frame stack: fixed-length episodes such as POPGym's then tell "
            "the value function how much return is left (README: the memory suite)"
        },
    )
    previous_action: bool = field(
        default=False,
        metadata={
            "help": "append the previous action, one-hot, to the (flat) observation, before any memory, time or frame "
            "stack (POPGym's PreviousAction: its envs marked obs_requires_prev_action, such as MineSweeper and "
            "Concentration, do not say in the observation what the agent did)"
        },
    )
    code_size: int = field(default=100, metadata={"help": "code size of a fresh machine (ignored with --memory-checkpoint)"})
    num_slots: int = field(default=32, metadata={"help": "memory rows of a fresh machine (ignored with --memory-checkpoint)"})
    num_envs: int = field(default=8, metadata={"help": "parallel environments"})
    vec_env: Literal["dummy", "subproc"] = field(default="dummy", metadata={"help": "DummyVecEnv (one process) or SubprocVecEnv"})
    n_steps: int = field(default=128, metadata={"help": "rollout length per environment (ppo, a2c, recurrent_ppo)"})
    batch_size: int = field(default=64, metadata={"help": "minibatch size (ppo, recurrent_ppo, dqn, qrdqn)"})
    learning_rate: float = field(default=3e-4, metadata={"help": "optimizer learning rate"})
    ent_coef: float = field(default=0.01, metadata={"help": "entropy bonus (ppo, a2c, recurrent_ppo)"})
    seed: int = field(default=0, metadata={"help": "random seed: same seed, same run on CPU"})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": "device of the policy and the memory"})
    # Off-policy algorithms (dqn, qrdqn); the defaults are SB3's but for the buffer (SB3: 1M; see replay_readouts).
    buffer_size: int = field(default=100_000, metadata={"help": "replay buffer transitions (dqn, qrdqn)"})
    learning_starts: int = field(default=100, metadata={"help": "transitions collected before the first update (dqn, qrdqn)"})
    train_freq: int = field(default=4, metadata={"help": "steps of the vectorised environment between updates (dqn, qrdqn)"})
    target_update_interval: int = field(
        default=10_000, metadata={"help": "environment steps between target network updates (dqn, qrdqn)"}
    )
    replay_readouts: Literal["full", "float16", "no-memory"] = field(
        default="full",
        metadata={
            "help": "how the replay buffer (dqn, qrdqn) holds the memory read-outs, stored twice per transition: full "
            "(float32; the K x C `memory` read-out alone is 25.6 kB a transition at K=32, C=100), float16 (half; sampled "
            "back as float32), or no-memory: the agent's observation leaves out the `memory` read-out, so the policy sees "
            "only `retrieval` and `novelty` (a different agent, not a compressed buffer)"
        },
    )

    def __post_init__(self) -> None:
        recall = ("recall",) if self.recall_lags or self.recall_positions else ()
        if self.memory != "none":
            declared = (*backend_kind(self.memory).readouts, *recall)
            self.readouts = declared if self.readouts is None else tuple(self.readouts)
            unknown = sorted(set(self.readouts) - {*declared, "code", "recall_sum"})
            if unknown:
                hint = " (recall needs --recall-lags or --recall-positions)" if "recall" in unknown else ""
                raise ValueError(
                    f"--memory {self.memory} has no read-outs {unknown}; choose from {[*declared, 'code', 'recall_sum']}{hint}"
                )
        elif recall:
            raise ValueError("--recall-lags and --recall-positions read a memory of the codes; they need --memory, not none")
        else:
            self.readouts = () if self.readouts is None else tuple(self.readouts)
        if self.recall_source != "code" and not (recall or "recall_sum" in self.readouts):
            raise ValueError(
                f"--recall-source {self.recall_source} chooses what the time-addressed memory keeps; it runs with "
                "--recall-lags, --recall-positions or --readouts recall_sum"
            )
        if self.replay_readouts == "no-memory":  # the read-out is left out of the observation itself
            kept = tuple(r for r in self.readouts if r != "memory")
            if not kept and self.memory != "none":
                raise ValueError(
                    f"replay_readouts='no-memory' leaves none of readouts={self.readouts!r}; add retrieval or novelty to "
                    "--readouts, or use --memory none"
                )
            self.readouts = kept


def make_machine(
    config: AgentConfig, device: str | torch.device, observation_space: gymnasium.Space | None = None
) -> GenerativeMemory:
    """The memory's machine: the checkpoint if given, else a fresh one that fits the observations (the backend's
    own kind of machine: a KM for ``memory="km"``, a PKM for ``"pkm"``; a DKM for the classical memories, which
    store its codes).

    A fresh machine is ``for_space(observation_space)`` seeded by ``config.seed`` (see
    :meth:`~episodic_memory.models.machine.GenerativeMemory.for_space`), then calibrated
    (:meth:`~episodic_memory.models.machine.GenerativeMemory.calibrate`) on the observations of a
    seeded random walk of :data:`CALIBRATION_STEPS` steps in one environment. A checkpoint must
    read the observations: images of another size are resized by its saved preprocessing;
    anything else it cannot read is refused with the reason.

    :param observation_space: the environment's observations; None builds one environment to ask.
    """
    obs_key = _obs_key(config)
    if config.memory_checkpoint:
        if observation_space is None:
            env = config_env(config)
            observation_space = env.observation_space
            env.close()
        machine = resolve_machine(config.memory_checkpoint, device)
        check_backend_machine(config.memory, machine.kind, f"--memory-checkpoint {config.memory_checkpoint!r}")
        encoding = ObservationEncoding.for_space(observation_space, obs_key)
        problem = machine.cannot_read(encoding)
        if problem is not None:
            raise ValueError(
                f"memory checkpoint {config.memory_checkpoint!r} reads frames of shape {tuple(machine.input_shape)}, it cannot "
                f"read the agent's frames of shape {encoding.frame_shape}: {problem} ({config.env_id} gives {observation_space})"
            )
        return machine
    env = config_env(config)
    try:
        torch.manual_seed(config.seed)
        cls = backend_kind(config.memory).machine or DynamicKanervaMachine
        machine = cls.for_space(env.observation_space, obs_key=obs_key, code_size=config.code_size, num_slots=config.num_slots)
        machine.calibrate(random_observations(env, CALIBRATION_STEPS, seed=config.seed))
    finally:
        env.close()
    return machine.to(device).eval()


def config_env(config: AgentConfig) -> gymnasium.Env:
    """One environment as ``config`` makes it (:func:`~episodic_memory.envs.gym_envs.make_env`; ``previous_action``:
    :class:`~episodic_memory.envs.gym_envs.PreviousAction`; ``time_feature``:
    :func:`~episodic_memory.envs.gym_envs.time_aware`), before any memory or frame stack."""
    env = make_env(config.env_id, config.frame_size, config.env_kwargs, config.imports)
    if config.previous_action:
        env = PreviousAction(env)
    elif getattr(env.unwrapped, "obs_requires_prev_action", False):
        warnings.warn(
            f"{config.env_id} marks its observations as needing the previous action (obs_requires_prev_action): "
            "without --previous-action true no memory can tell what it did",
            stacklevel=2,
        )
    return time_aware(env) if config.time_feature else env


def _obs_key(config: AgentConfig) -> str | tuple[str, ...] | None:
    """``config.obs_key`` as the wrappers take it: one key as a string (an image key is read as an image)."""
    if config.obs_key is None:
        return None
    return config.obs_key[0] if len(config.obs_key) == 1 else tuple(config.obs_key)


def make_agent_env(
    config: AgentConfig,
    device: str | torch.device = "cpu",
    machine: GenerativeMemory | None = None,
    readout_stats: str | Path | None = None,
) -> VecEnv:
    """``num_envs`` environments (:func:`~episodic_memory.envs.gym_envs.make_env`), vectorised, monitored (episode
    returns and lengths for SB3's ``rollout/`` metrics), wrapped in :class:`VecEpisodicMemory` unless ``memory="none"``,
    then (``standardise_readouts``) in SB3's ``VecNormalize`` of the vector read-outs.

    :param machine: the memory's machine; None makes one (:func:`make_machine`).
    :param readout_stats: with ``standardise_readouts``, a ``VecNormalize`` file (``VecNormalize.save``) whose
        running statistics to start from, e.g. a trained agent's; None starts them afresh. They keep updating
        while the wrapper's ``training`` is True (set it False to evaluate).
    """
    if config.standardise_readouts and (config.memory == "none" or config.policy_input == "pixels"):
        raise ValueError("--standardise-readouts standardises the memory's read-outs: it needs a memory and read-outs")
    if config.memory == "none" and config.novelty_reward != 0:
        raise ValueError(
            f"novelty_reward={config.novelty_reward!r} needs an episodic memory, but memory='none'; "
            "set --memory dkm or km, or --novelty-reward 0"
        )
    if config.memory == "none" and config.policy_input != "both":
        raise ValueError(
            f"--policy-input {config.policy_input} needs an episodic memory, but memory='none'; set --memory dkm or km"
        )
    if not isinstance(config.frame_stack, int) or isinstance(config.frame_stack, bool) or config.frame_stack < 1:
        raise ValueError(f"frame_stack must be an int >= 1, actual value: {config.frame_stack!r}")
    make = [lambda: config_env(config) for _ in range(config.num_envs)]
    if config.frame_stack > 1 and config.memory == "none":
        make = [lambda fn=fn: stackable(fn()) for fn in make]
    if config.memory == "none":
        make = [lambda fn=fn: agent_observations(fn()) for fn in make]
    if config.vec_env == "subproc":
        # Ctrl-C in a terminal signals the whole process group: the workers must leave it to the main
        # process, which stops training and checkpoints, instead of dying under it.
        make = [lambda fn=fn: _ignoring_sigint(fn) for fn in make]
    venv = SubprocVecEnv(make) if config.vec_env == "subproc" else DummyVecEnv(make)
    venv.seed(config.seed)
    venv = VecMonitor(venv)  # inside the memory wrapper: rollout/ep_rew_mean counts extrinsic rewards only
    if config.memory == "none":
        return VecFrameStack(venv, config.frame_stack) if config.frame_stack > 1 else venv
    readouts = tuple(config.readouts)
    if config.policy_input == "readouts" and "code" not in readouts:
        readouts = ("code", *readouts)  # the observation's own code stands in for the pixels
    venv = VecEpisodicMemory(
        venv,
        make_machine(config, device, venv.observation_space) if machine is None else machine,
        readouts=() if config.policy_input == "pixels" else readouts,
        attractor_steps=config.attractor_steps,
        obs_key=_obs_key(config),
        device=device,
        novelty_reward=config.novelty_reward,
        observation=config.policy_input != "readouts",
        backend=config.memory,
        recall_lags=config.recall_lags,
        recall_positions=config.recall_positions,
        recall_slots=config.recall_slots,
        recall_source=config.recall_source,
    )
    if config.frame_stack > 1:
        # The observation's keys (or its code, standing in for them) in order; the read-outs summarise the episode already.
        own = [key for key in venv.observation_space.spaces if key not in READOUTS]
        venv = VecFrameStackKeys(venv, config.frame_stack, own if config.policy_input != "readouts" else ["code"])
    if not config.standardise_readouts:
        return venv
    if readout_stats is not None:
        return VecNormalize.load(str(readout_stats), venv)
    return VecNormalize(venv, norm_obs=True, norm_reward=False, norm_obs_keys=list(vector_readouts(venv.observation_space)))


def _ignoring_sigint(make: Callable[[], gymnasium.Env]) -> gymnasium.Env:
    """``make()`` in a SubprocVecEnv worker, which from then on ignores SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return make()


def build_agent(config: AgentConfig, venv: VecEnv | None = None) -> BaseAlgorithm:
    """An SB3 model for ``config`` on ``venv`` (built by :func:`make_agent_env` when None).

    Off-policy algorithms (:data:`OFF_POLICY`) get a replay buffer of ``buffer_size`` transitions;
    with ``replay_readouts="float16"`` a :class:`~episodic_memory.agents.replay.Float16ReadoutsReplayBuffer`
    that stores the vector read-outs (``retrieval``, ``memory``) as float16. ``replay_readouts`` other
    than ``"full"`` is refused for on-policy algorithms, which keep no buffer.
    """
    if config.replay_readouts != "full" and config.algo not in OFF_POLICY:
        raise ValueError(
            f"replay_readouts={config.replay_readouts!r} shapes a replay buffer, but --algo {config.algo} keeps none "
            f"(only {', '.join(OFF_POLICY)} do); leave --replay-readouts at full, or pass --readouts without memory"
        )
    if config.replay_readouts == "float16" and config.memory == "none":
        raise ValueError("replay_readouts='float16' compresses memory read-outs, but memory='none' has none; use full")
    device = get_device(config.device)
    venv = make_agent_env(config, device) if venv is None else venv
    algo = ALGORITHMS[config.algo]
    policy = "MultiInputLstmPolicy" if config.algo == "recurrent_ppo" else "MultiInputPolicy"
    kwargs: dict[str, Any] = {"learning_rate": config.learning_rate}
    if config.algo in OFF_POLICY:
        kwargs.update(
            buffer_size=config.buffer_size,
            learning_starts=config.learning_starts,
            train_freq=config.train_freq,
            target_update_interval=config.target_update_interval,
            batch_size=config.batch_size,
        )
        if config.replay_readouts == "float16":
            kwargs["replay_buffer_class"] = Float16ReadoutsReplayBuffer
            kwargs["replay_buffer_kwargs"] = {"float16_keys": vector_readouts(venv.observation_space)}
    else:
        kwargs.update(n_steps=config.n_steps, ent_coef=config.ent_coef)
        if config.algo != "a2c":
            kwargs["batch_size"] = config.batch_size
    memory = unwrap_vec_wrapper(venv, VecEpisodicMemory)
    readout_kinds = {} if memory is None else {name: spec.kind for name, spec in memory.core.readout_specs().items()}
    extractor_kwargs = {"normalise_readouts": True, "memory_head": config.memory_head, "readout_kinds": readout_kinds}
    return algo(
        policy,
        venv,
        policy_kwargs={
            "features_extractor_class": MemoryFeaturesExtractor,
            "features_extractor_kwargs": extractor_kwargs,  # saved in agent.zip
        },
        seed=config.seed,
        device=device,
        **kwargs,
    )


def vector_readouts(observation_space: spaces.Space) -> tuple[str, ...]:
    """The vector read-outs of an agent's observations (``retrieval``, ``memory``, ``code``, ``recall``, ``recall_sum``):
    what a float16 replay buffer compresses and ``standardise_readouts`` standardises. The scalar ``novelty``
    is neither (2 bytes saved would not pay for its range, thousands of nats; the extractor symlogs it)."""
    names = observation_space.spaces if isinstance(observation_space, spaces.Dict) else {}
    return tuple(name for name in names if name in READOUTS and name != "novelty")


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
