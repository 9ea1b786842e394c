"""The time-addressed memory and its ``recall`` and ``recall_sum`` read-outs: closed forms, then the wrappers and the
agent."""

from __future__ import annotations

import pytest

pytest.importorskip("popgym")

import json
from dataclasses import replace

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from stable_baselines3 import PPO

from episodic_memory.agents.builder import AgentConfig, make_agent_env
from episodic_memory.agents.extractors import MemoryFeaturesExtractor, thermometer
from episodic_memory.backends import TimeAddressedMemory, time_addresses
from episodic_memory.envs.gym_envs import make_env
from episodic_memory.models.dkm import DynamicKanervaMachine
from episodic_memory.train.cli import main
from episodic_memory.wrappers import EpisodicMemoryWrapper
from episodic_memory.wrappers.core import EpisodicMemoryCore

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
    reads = [memory.step(z) for z in codes] + [memory.step(torch.zeros(B, C, dtype=torch.float64), write=False)]
    P = time_addresses(K, memory.horizon)[:T]  # [T, K]
    for t in range(T + 1):
        Pt = P[:t]  # the addresses written before step t [t, K]
        for b in range(B):
            M = Pt.T @ torch.linalg.solve(Pt @ Pt.T + SIGMA**2 * torch.eye(t, dtype=torch.float64), codes[:t, b])  # [K, C]
            for query, tau in enumerate((t - 1, t - 3, 0, 5)):
                expected = P[tau] @ M if 0 <= tau < t else torch.zeros(C, dtype=torch.float64)
                torch.testing.assert_close(reads[t]["recall"][b, query], expected, rtol=1e-9, atol=1e-10)
            every_step = (Pt @ M).sum(0)  # the sum of the posterior means of all the codes written [C]
            torch.testing.assert_close(reads[t]["recall_sum"][b], every_step, rtol=1e-9, atol=1e-10)
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


def test_within_k_steps_the_recall_sum_is_the_sum_of_the_codes_and_needs_no_lag():
    memory = TimeAddressedMemory(3, 5, num_slots=8, obs_noise_std=SIGMA)
    assert set(memory.readout_specs) == {"recall_sum"}
    codes = torch.randn(8, 3, 5, generator=torch.Generator().manual_seed(3))
    sums = [memory.step(z)["recall_sum"] for z in codes]
    assert not sums[0].any()  # nothing written before the first step
    torch.testing.assert_close(sums[-1], codes[:7].sum(0) / (1 + SIGMA**2), rtol=1e-4, atol=1e-5)


def test_the_recall_sum_is_the_sum_of_every_written_step_s_recall_beyond_the_horizon():
    """Past ``horizon`` steps the addresses repeat; the sum must still be the sum of the recalls of all written steps."""
    T = 11
    memory = TimeAddressedMemory(2, 3, positions=tuple(range(T)), num_slots=4, horizon=3, dtype=torch.float64)
    codes = torch.randn(T, 2, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for z in codes:
        read = memory.step(z)  # the positions not written yet read as zeros
        torch.testing.assert_close(read["recall_sum"], read["recall"].sum(1), rtol=1e-9, atol=1e-12)
    assert memory.t.tolist() == [T, T]


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
        read, expected = memory.step(z), alone.step(z[1:])
        torch.testing.assert_close(read["recall"][1:], expected["recall"])
        torch.testing.assert_close(read["recall_sum"][1:], expected["recall_sum"])
    assert memory.t.tolist() == [6, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lags": (0,)}, "lags must be ints >= 1"),
        ({"positions": (-1,)}, "positions must be ints >= 0"),
        ({"lags": (1, True)}, "lags must be ints >= 1"),
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


def test_a_recall_of_observations_returns_them_and_its_sum_counts_the_cards_dealt():
    """CountRecall deals one of two colours a step and asks how often a colour has come up: the recall of the
    one-hot observations must hold the earlier ones, and its sum the counts the environment keeps itself."""
    base = make_env("popgym-CountRecallEasy-v0", imports=("popgym",))
    machine = DynamicKanervaMachine.for_space(base.observation_space, code_size=12, num_slots=6)
    env = EpisodicMemoryWrapper(
        base, machine, readouts=("recall", "recall_sum"), recall_lags=(1,), recall_positions=(0,), recall_source="observation"
    )
    assert env.observation_space["recall"].shape == (2, 4) and env.observation_space["recall_sum"].shape == (4,)
    obs, info = env.reset(seed=0)
    one_hot = [np.concatenate([np.eye(2)[obs["observation"][0]], np.eye(2)[obs["observation"][1]]])]
    shrink = 1 / (1 + SIGMA**2)
    for _ in range(40):
        obs, _, terminated, _, info = env.step(env.action_space.sample())
        dealt, query = obs["observation"]
        np.testing.assert_allclose(obs["recall"], shrink * np.stack([one_hot[-1], one_hot[0]]), rtol=1e-5, atol=1e-6)
        counts = obs["recall_sum"][:2] / shrink + np.eye(2)[dealt]  # the cards dealt before this step, and this one
        np.testing.assert_allclose(counts, info["counts"], rtol=1e-4, atol=1e-4)
        one_hot.append(np.concatenate([np.eye(2)[dealt], np.eye(2)[query]]))
        assert not terminated


def test_a_recall_of_observations_refuses_frames_the_machine_resizes():
    machine = DynamicKanervaMachine.for_space(spaces.Box(0, 255, (32, 32, 3), np.uint8), code_size=8, num_slots=4)
    core = EpisodicMemoryCore(machine, 1, readouts=("recall",), recall_lags=(1,), recall_source="observation")
    assert core.readout_specs()["recall"].shape == (1, 32 * 32 * 3)
    with pytest.raises(ValueError, match=r"keeps observations of the machine's input shape \(32, 32, 3\), got \(40, 40, 3\)"):
        core.step(np.zeros((1, 40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match="recall_source must be one of"):
        EpisodicMemoryCore(machine, 1, recall_lags=(1,), recall_source="frames")


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
    with pytest.raises(ValueError, match="--recall-source observation .* runs with --recall-lags, --recall-positions or"):
        AgentConfig(memory="dkm", recall_source="observation")


def test_the_agent_sees_the_observations_recalled_and_their_sum_without_a_lag():
    config = AgentConfig(
        env_id="popgym-CountRecallEasy-v0",
        memory="dkm",
        readouts=("recall_sum",),
        recall_source="observation",
        device="cpu",
        num_envs=2,
        code_size=12,
        num_slots=6,
    )
    venv = make_agent_env(config)
    assert venv.observation_space["recall_sum"].shape == (4,)  # two one-hot entries of two values each
    obs = venv.reset()
    assert not obs["recall_sum"].any()
    for _ in range(5):
        obs, *_ = venv.step(np.zeros(2, dtype=np.int64))
    np.testing.assert_allclose(obs["recall_sum"].sum(1), 2 * 5 / (1 + SIGMA**2), rtol=1e-5)  # 5 steps of two one-hots


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


def test_the_extractor_keeps_the_magnitude_of_a_total_and_compresses_it():
    space = spaces.Dict({"observation": spaces.Box(-1, 1, (4,)), "sum": spaces.Box(-np.inf, np.inf, (4,))})
    torch.manual_seed(0)
    total = MemoryFeaturesExtractor(space, readout_kinds={"sum": "total"})
    code = MemoryFeaturesExtractor(space, readout_kinds={"sum": "code"})
    code.load_state_dict(total.state_dict())
    obs = {"observation": torch.rand(1, 4).expand(2, 4), "sum": torch.tensor([[3.0, 1.0, 2.0, 2.0], [6.0, 2.0, 4.0, 4.0]])}
    doubled = code(obs)
    torch.testing.assert_close(doubled[0], doubled[1])  # a code's layer norm drops the scale: 2x the counts, same input
    assert not torch.allclose(total(obs)[0], total(obs)[1])  # a total keeps it
    huge = {**obs, "sum": obs["sum"] * 1e6}
    assert total(huge).abs().max() < 1e3  # symlog: a million times the counts stays of order ten


def test_the_sum_of_one_hot_observations_is_declared_a_count_and_other_sums_totals():
    one_hot = DynamicKanervaMachine.for_space(spaces.MultiDiscrete([2, 2]), code_size=8, num_slots=4)
    unbounded = DynamicKanervaMachine.for_space(gymnasium.make("CartPole-v1").observation_space, code_size=8, num_slots=4)

    def kind(machine: DynamicKanervaMachine, source: str) -> str:
        return EpisodicMemoryCore(machine, 1, readouts=("recall_sum",), recall_source=source).readout_specs()["recall_sum"].kind

    assert kind(one_hot, "observation") == "count"
    assert kind(one_hot, "code") == "total"  # a sum of codes is no count
    assert kind(unbounded, "observation") == "total"  # nor is a sum of CartPole's positions and velocities


def test_a_thermometer_turns_on_one_feature_per_unit_of_a_count():
    n = torch.tensor([[0.0, 2.5, 40.0]])
    expected = [[0, 0, 0, 0], [1, 1, 0.5, 0], [1, 1, 1, 1]]  # four levels: a count past them reads as 4
    torch.testing.assert_close(thermometer(n, 4), torch.tensor(expected).flatten()[None])
    counts = torch.arange(0.0, 10.0)[:, None]  # [10, 1]
    features = thermometer(counts, 12)  # [10, 12]
    exactly = features[:, :-1] - features[:, 1:]  # "the count is exactly k + 1", a linear read of the features
    torch.testing.assert_close(exactly[1:, :9], torch.eye(9))
    assert not exactly[0].any()


def test_the_extractor_reads_a_count_as_a_thermometer():
    space = spaces.Dict({"observation": spaces.Box(-1, 1, (4,)), "counts": spaces.Box(0, np.inf, (3,))})
    extractor = MemoryFeaturesExtractor(space, readout_kinds={"counts": "count"}, count_levels=5)
    assert extractor.mlp[0].in_features == 4 + 3 * 5
    features = extractor._flat("counts", torch.tensor([[2.0, 0.0, 7.0]]))
    torch.testing.assert_close(features[0], torch.tensor([1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1.0]))
    with pytest.raises(ValueError, match="count_levels must be a positive int"):
        MemoryFeaturesExtractor(space, readout_kinds={"counts": "count"}, count_levels=0)
