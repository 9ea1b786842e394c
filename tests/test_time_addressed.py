"""The time-addressed memory and its ``recall`` read-out: closed forms, then the wrappers and the agent."""

from __future__ import annotations

import pytest

pytest.importorskip("popgym")

import json
from dataclasses import replace

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from stable_baselines3 import PPO

from episodic_memory.agents.builder import AgentConfig, make_agent_env
from episodic_memory.agents.extractors import MemoryFeaturesExtractor
from episodic_memory.backends import TimeAddressedMemory, time_addresses
from episodic_memory.envs.gym_envs import make_env
from episodic_memory.models.dkm import DynamicKanervaMachine
from episodic_memory.train.cli import main
from episodic_memory.wrappers import EpisodicMemoryWrapper

SIGMA = 0.1


def written(memory: TimeAddressedMemory, codes: torch.Tensor) -> list[torch.Tensor]:
    """The ``recall`` read-out before each write of ``codes [T, B, C]``."""
    return [memory.step(z)["recall"] for z in codes]


def test_the_first_k_addresses_are_orthonormal_and_later_blocks_are_others():
    p = time_addresses(4, 10)  # [10, 4]
    assert p.shape == (10, 4)
    torch.testing.assert_close(p[:4] @ p[:4].T, torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(p[4:8] @ p[4:8].T, torch.eye(4, dtype=torch.float64))
    assert (p[:4] @ p[4:8].T).abs().max() > 0.1  # a new block is not the first one again
    torch.testing.assert_close(time_addresses(4, 10), p)  # drawn from a fixed seed
    state = torch.random.get_rng_state()
    time_addresses(4, 10)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global random state is left alone


def test_recall_is_the_posterior_mean_of_dense_gaussian_conditioning():
    """Beyond K steps the addresses overlap; every recall must still be the exact posterior mean of the code written
    at the queried step: Z = P M + noise with M ~ MN(0, I, I), so E[M | Z] = Pᵀ (P Pᵀ + σ² I)⁻¹ Z."""
    K, C, T, B = 4, 3, 11, 2
    memory = TimeAddressedMemory(B, C, lags=(1, 3), positions=(0, 5), num_slots=K, obs_noise_std=SIGMA, dtype=torch.float64)
    codes = torch.randn(T, B, C, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    recalls = written(memory, codes)
    P = time_addresses(K, memory.horizon)[:T]  # [T, K]
    for t in range(T + 1):
        recall = memory.step(torch.zeros(B, C, dtype=torch.float64), write=False)["recall"] if t == T else recalls[t]
        Pt = P[:t]  # the addresses written before step t [t, K]
        for b in range(B):
            M = Pt.T @ torch.linalg.solve(Pt @ Pt.T + SIGMA**2 * torch.eye(t, dtype=torch.float64), codes[:t, b])  # [K, C]
            for query, tau in enumerate((t - 1, t - 3, 0, 5)):
                expected = P[tau] @ M if 0 <= tau < t else torch.zeros(C, dtype=torch.float64)
                torch.testing.assert_close(recall[b, query], expected, rtol=1e-9, atol=1e-10)
    U = torch.linalg.inv(torch.eye(K, dtype=torch.float64) + P.T @ P / SIGMA**2)  # the posterior row covariance
    torch.testing.assert_close(memory.U, U.expand(B, K, K), rtol=1e-9, atol=1e-10)


def test_within_k_steps_every_recall_is_the_code_shrunk_by_one_plus_sigma_squared():
    memory = TimeAddressedMemory(3, 5, lags=(1, 2, 7), positions=(0,), num_slots=8, obs_noise_std=SIGMA)
    codes = torch.randn(8, 3, 5, generator=torch.Generator().manual_seed(1))
    recall = written(memory, codes)[-1]  # step 7: 7 codes written [3, 4, 5]
    shrink = 1 / (1 + SIGMA**2)
    torch.testing.assert_close(recall[:, 0], shrink * codes[6], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(recall[:, 1], shrink * codes[5], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(recall[:, 2], shrink * codes[0], rtol=1e-4, atol=1e-5)  # lag 7 is position 0
    torch.testing.assert_close(recall[:, 3], shrink * codes[0], rtol=1e-4, atol=1e-5)


def test_steps_not_written_read_as_zeros_and_a_read_only_step_does_not_advance():
    memory = TimeAddressedMemory(2, 4, lags=(2,), positions=(3,))
    z = torch.ones(2, 4)
    assert not memory.step(z)["recall"].any()  # nothing written
    for _ in range(2):  # step 1: lag 2 is step -1, position 3 is ahead; a read-only step leaves it at step 1
        assert not memory.step(z, write=False)["recall"].any()
    memory.step(z)
    recall = memory.step(z, write=False)["recall"]  # step 2: lag 2 is step 0, position 3 still ahead
    assert recall[:, 0].abs().sum() > 0 and not recall[:, 1].any()
    assert memory.t.tolist() == [2, 2]


def test_reset_empties_only_the_masked_memories():
    memory = TimeAddressedMemory(2, 3, lags=(1,), positions=(0,), num_slots=4)
    alone = TimeAddressedMemory(1, 3, lags=(1,), positions=(0,), num_slots=4)  # memory 1's episode after the reset
    codes = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(2))
    for z in codes[:3]:
        memory.step(z)
    before = memory.R[0].clone()
    memory.reset(torch.tensor([False, True]))
    torch.testing.assert_close(memory.R[0], before)
    for z in codes[3:]:
        recall = memory.step(z)["recall"]
        torch.testing.assert_close(recall[1:], alone.step(z[1:])["recall"])
    assert memory.t.tolist() == [6, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lags": (0,)}, "lags must be ints >= 1"),
        ({"positions": (-1,)}, "positions must be ints >= 0"),
        ({}, "at least one lag or position"),
        ({"lags": (1,), "num_slots": 0}, "num_slots must be a positive int"),
        ({"lags": (1,), "obs_noise_std": float("nan")}, "obs_noise_std must be a finite number > 0"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TimeAddressedMemory(2, 3, **kwargs)


def test_the_wrapper_recalls_the_codes_of_earlier_observations_and_is_check_env_clean():
    base = make_env("popgym-RepeatPreviousEasy-v0", imports=("popgym",))
    machine = DynamicKanervaMachine.for_space(base.observation_space, code_size=12, num_slots=6)
    env = EpisodicMemoryWrapper(base, machine, recall_lags=(1, 3), recall_positions=(0,))
    assert env.observation_space["recall"].shape == (3, env.core.machine.code_size)
    obs, _ = env.reset(seed=0)
    codes = [env.core.last_code[0].numpy()]
    assert not obs["recall"].any()
    shrink = 1 / (1 + SIGMA**2)
    for t in range(1, 6):
        obs, *_ = env.step(env.action_space.sample())
        np.testing.assert_allclose(obs["recall"][0], shrink * codes[t - 1], rtol=1e-4, atol=1e-5)
        expected_lag_3 = shrink * codes[t - 3] if t >= 3 else np.zeros_like(codes[0])
        np.testing.assert_allclose(obs["recall"][1], expected_lag_3, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(obs["recall"][2], shrink * codes[0], rtol=1e-4, atol=1e-5)
        codes.append(env.core.last_code[0].numpy())
    check_env(env, skip_render_check=True)


AGENT = ["--num-envs", "2", "--n-steps", "32", "--batch-size", "32", "--code-size", "12", "--num-slots", "6"]


def test_an_agent_trains_on_the_recall_and_evaluates_from_its_saved_config(tmp_path):
    out = tmp_path / "agent"
    train = ["train-agent", "--env-id", "popgym-RepeatPreviousEasy-v0", "--import", "popgym", "--memory", "dkm"]
    recall = ["--recall-lags", "1", "2", "--recall-positions", "0", "--recall-slots", "16", "--standardise-readouts", "true"]
    quiet = ["--total-steps", "64", "--eval-episodes", "2", "--wandb-mode", "disabled", "--device", "cpu"]
    assert main([*train, *recall, *quiet, "--out", str(out), *AGENT]) == 0
    assert main(["evaluate-agent", "--agent", str(out / "agent.zip"), "--episodes", "2", "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["episodes"] == 2
    model = PPO.load(out / "agent.zip", device="cpu")
    assert model.observation_space["recall"].shape == (3, 12)
    assert model.policy.features_extractor.readout_kinds["recall"] == "sequence"


def test_the_agent_config_adds_recall_to_the_read_outs_and_says_what_it_needs():
    config = AgentConfig(env_id="popgym-RepeatFirstEasy-v0", memory="dkm", recall_positions=(0,), device="cpu")
    assert config.readouts == ("retrieval", "novelty", "memory", "recall")
    venv = make_agent_env(replace(config, num_envs=2, code_size=12, num_slots=6, readouts=("recall",)))
    assert set(venv.observation_space.spaces) == {"observation", "recall"}
    with pytest.raises(ValueError, match=r"no read-outs \['recall'\].*needs --recall-lags or --recall-positions"):
        AgentConfig(memory="dkm", readouts=("recall",))
    with pytest.raises(ValueError, match="need --memory, not none"):
        AgentConfig(memory="none", recall_lags=(1,))


def test_the_extractor_normalises_each_recalled_code_on_its_own():
    space = spaces.Dict({"observation": spaces.Box(-1, 1, (4,)), "recall": spaces.Box(-np.inf, np.inf, (3, 5))})
    torch.manual_seed(0)
    extractor = MemoryFeaturesExtractor(space, readout_kinds={"recall": "sequence"})
    raw = MemoryFeaturesExtractor(space, readout_kinds={"recall": "sequence"}, normalise_readouts=False)
    raw.load_state_dict(extractor.state_dict())
    obs = {"observation": torch.rand(2, 4), "recall": torch.randn(2, 3, 5)}
    scaled = {**obs, "recall": obs["recall"] * torch.tensor([1.0, 30.0, 0.5])[None, :, None]}  # each row its own scale
    torch.testing.assert_close(extractor(scaled), extractor(obs), rtol=1e-3, atol=1e-4)
    assert not torch.allclose(raw(scaled), raw(obs))
