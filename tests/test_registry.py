"""The registry of models and backends: the CLI's choices, checkpoint kinds, and every backend in the wrappers and agents."""

from __future__ import annotations

import json
import typing

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from episodic_memory import DynamicKanervaMachine, EpisodicMemoryWrapper, KanervaMachine, load_machine
from episodic_memory.agents.builder import AgentConfig, build_agent
from episodic_memory.registry import BACKENDS, MODELS, model_name, own_backend
from episodic_memory.train.cli import main
from episodic_memory.train.pretrain import PretrainConfig

CLASSICAL = [name for name, kind in BACKENDS.items() if kind.machine is None]
QUIET = ["--wandb-mode", "disabled", "--device", "cpu"]
AGENT = ["--num-envs", "2", "--n-steps", "32", "--batch-size", "32", "--code-size", "12", "--num-slots", "6", *QUIET]


def test_the_command_line_offers_what_the_registry_holds():
    memory = typing.get_args(typing.get_type_hints(AgentConfig)["memory"])
    assert memory == ("none", *BACKENDS)
    assert typing.get_args(typing.get_type_hints(PretrainConfig)["model"]) == tuple(MODELS)
    assert set(CLASSICAL) == {"hopfield-hebb", "hopfield-storkey", "hopfield-pinv", "sdm", "store-everything"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_kind_saves_and_loads_by_its_name(tmp_path, name):
    cls = MODELS[name]
    model = cls((6,), code_size=4, likelihood="gaussian", hidden_size=8)
    loaded = load_machine(model.save(tmp_path / "model.safetensors"))
    assert type(loaded) is cls and model_name(loaded) == name == model_name(cls.kind)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_each_kanerva_machine_runs_its_own_memory():
    assert own_backend(DynamicKanervaMachine((6,), code_size=4, num_slots=3, hidden_size=8)) == "dkm"
    assert own_backend(KanervaMachine((6,), code_size=4, num_slots=3, hidden_size=8)) == "km"


def test_build_agent_refuses_a_checkpoint_of_the_other_kind(tmp_path):
    dkm = DynamicKanervaMachine.for_space(gymnasium.make("CartPole-v1").observation_space, code_size=8, num_slots=4)
    path = dkm.save(tmp_path / "dkm.safetensors")
    config = AgentConfig(env_id="CartPole-v1", memory="km", memory_checkpoint=str(path), num_envs=1, device="cpu")
    with pytest.raises(ValueError, match="--memory km is the memory of a KanervaMachine, but --memory-checkpoint .* holds a Dyn"):
        build_agent(config)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_every_backend_in_the_wrapper_passes_check_env(backend):
    env = gymnasium.make("CartPole-v1")
    machine = (BACKENDS[backend].machine or DynamicKanervaMachine).for_space(env.observation_space, code_size=16, num_slots=4)
    wrapped = EpisodicMemoryWrapper(env, machine, backend=backend)
    assert set(wrapped.observation_space.spaces) == {"observation", *BACKENDS[backend].readouts}
    check_env(wrapped, skip_render_check=True)
    obs, _ = wrapped.reset(seed=0)
    for _ in range(5):
        obs, *_ = wrapped.step(wrapped.action_space.sample())
        assert wrapped.observation_space.contains(obs)
    if backend.startswith(("hopfield", "sdm")):
        assert set(np.unique(obs["retrieval"])) <= {-1.0, 1.0}  # the retrieved pattern of the code's signs


def test_the_novelty_bonus_needs_a_surprise_that_is_never_negative():
    env = gymnasium.make("CartPole-v1")
    machine = DynamicKanervaMachine.for_space(env.observation_space, code_size=16, num_slots=4)
    with pytest.raises(ValueError, match="hopfield-hebb backend's is an energy of either sign"):
        EpisodicMemoryWrapper(env, machine, novelty_reward=0.5, backend="hopfield-hebb")
    with pytest.raises(ValueError, match="has no read-outs \\['memory'\\]"):
        AgentConfig(env_id="CartPole-v1", memory="sdm", readouts=("retrieval", "memory"))


def test_train_agent_with_a_classical_memory_then_evaluate_it(tmp_path):
    out = tmp_path / "agent"
    train = ["train-agent", "--env-id", "CartPole-v1", "--memory", "store-everything", "--total-steps", "64"]
    assert main([*train, "--eval-episodes", "2", "--out", str(out), *AGENT]) == 0
    saved = json.loads((out / "agent_config.json").read_text())
    assert saved["memory"] == "store-everything" and saved["readouts"] == ["retrieval", "novelty"]
    assert main(["evaluate-agent", "--agent", str(out / "agent.zip"), "--episodes", "2"]) == 0
    assert json.loads((out / "evaluation.json").read_text())["mean_return"] >= 1.0  # CartPole pays 1 a step


def test_models_declare_what_they_can_be_evaluated_on():
    assert MODELS["vae"].capabilities == {"elbo"}
    assert MODELS["km"].capabilities == {"elbo", "memory", "attractor"}
    assert MODELS["dkm"].capabilities == {"elbo", "memory", "attractor", "prior_samples"}
    assert MODELS["kpp"].capabilities == {"elbo", "memory", "attractor", "prior_samples"}
    assert MODELS["pkm"].capabilities == {"elbo", "memory", "attractor"}
    vae = MODELS["vae"]((6,), code_size=4, likelihood="gaussian", hidden_size=8)
    assert not hasattr(vae, "num_slots") and not hasattr(vae, "memory")  # the memory-less baseline has no memory size


@pytest.mark.parametrize(
    ("name", "rule"), [("hopfield-hebb", "hebb"), ("hopfield-storkey", "storkey"), ("hopfield-pinv", "pseudo-inverse")]
)
def test_each_hopfield_name_builds_its_rule(name, rule):
    machine = DynamicKanervaMachine((6,), code_size=4, num_slots=3, hidden_size=8)
    assert BACKENDS[name].build(machine, 2, 3).rule == rule
