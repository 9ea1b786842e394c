"""VecEpisodicMemory under SB3 auto-reset: per-environment memories, exact resets, terminal observations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from episodic_memory import DynamicKanervaMachine
from episodic_memory.envs.mazes import make_frame_env
from episodic_memory.wrappers.vec_env import VecEpisodicMemory

FRAME = 16
MAX_STEPS = (3, 4, 6)  # episodes end at different steps in the three sub-environments


@pytest.fixture(scope="module")
def dkm() -> DynamicKanervaMachine:
    torch.manual_seed(0)
    return DynamicKanervaMachine((FRAME, FRAME, 3), code_size=12, num_slots=6, likelihood="gaussian", hidden_channels=4).eval()


def make_venv() -> DummyVecEnv:
    return DummyVecEnv([lambda n=n: make_frame_env("MiniGrid-MemoryS7-v0", frame_size=FRAME, max_steps=n) for n in MAX_STEPS])


def test_each_memory_follows_its_own_episode_and_resets_exactly(dkm):
    venv = VecEpisodicMemory(make_venv(), dkm, attractor_steps=3)
    venv.seed(0)
    memory = dkm.memory
    obs = venv.reset()
    states = [memory.prior(1) for _ in MAX_STEPS]
    rng = np.random.default_rng(0)
    resets = 0
    with torch.no_grad():
        for _ in range(13):
            codes = []
            for i, state in enumerate(states):
                np.testing.assert_allclose(obs["memory"][i], state.mean[0].numpy(), rtol=1e-4, atol=1e-5)
                z = dkm.encode(torch.as_tensor(obs["observation"][i])[None, None])
                np.testing.assert_allclose(obs["retrieval"][i], memory.retrieve(state, z, 3)[0, 0].numpy(), rtol=1e-4, atol=1e-5)
                codes.append(z)
            states = [memory.write_sequential(state, z) for state, z in zip(states, codes, strict=True)]
            obs, _, dones, infos = venv.step(rng.integers(0, 3, size=len(MAX_STEPS)))
            for i in np.flatnonzero(dones):
                terminal = infos[i]["terminal_observation"]
                assert set(terminal) == {"observation", "retrieval", "novelty", "memory"}
                np.testing.assert_allclose(terminal["memory"], states[i].mean[0].numpy(), rtol=1e-4, atol=1e-5)  # the old memory
                states[i] = memory.prior(1)  # and env i alone starts again from the prior
                np.testing.assert_array_equal(obs["memory"][i], memory.prior_mean.numpy())
                resets += 1
    assert resets >= 4


def test_observations_lie_in_the_declared_space(dkm):
    venv = VecEpisodicMemory(make_venv(), dkm, readouts=("retrieval", "novelty"))
    obs = venv.reset()
    for _ in range(5):
        for i in range(venv.num_envs):
            assert venv.observation_space.contains({key: value[i] for key, value in obs.items()})
        obs, *_ = venv.step(np.full(venv.num_envs, 2))


def test_batched_equals_one_wrapper_per_environment(dkm):
    from episodic_memory.wrappers import EpisodicMemoryWrapper

    venv = VecEpisodicMemory(make_venv(), dkm)
    venv.seed(5)
    batched = [venv.reset()]
    actions = np.random.default_rng(1).integers(0, 3, size=(7, len(MAX_STEPS)))
    for a in actions:
        batched.append(venv.step(a)[0])
    for i, n in enumerate(MAX_STEPS):
        env = EpisodicMemoryWrapper(make_frame_env("MiniGrid-MemoryS7-v0", frame_size=FRAME, max_steps=n), dkm)
        obs, _ = env.reset(seed=5 + i)
        for t, a in enumerate(actions):
            np.testing.assert_allclose(batched[t]["retrieval"][i], obs["retrieval"], rtol=1e-4, atol=1e-5)
            obs, _, terminated, truncated, _ = env.step(a[i])
            if terminated or truncated:
                break


def test_bigger_frames_are_resized_by_the_machine(dkm):
    """32 x 32 frames into a 16 x 16 machine: the memory reads them area-resized, the agent sees them as they are."""
    venv = VecEpisodicMemory(
        DummyVecEnv([lambda: make_frame_env("MiniGrid-MemoryS7-v0", frame_size=2 * FRAME) for _ in range(2)]), dkm
    )
    venv.seed(0)
    obs = venv.reset()
    assert obs["observation"].shape == (2, 2 * FRAME, 2 * FRAME, 3)
    frames = torch.as_tensor(obs["observation"]).float() / 255  # [2, 32, 32, 3]
    blocks = frames.reshape(2, FRAME, 2, FRAME, 2, 3).mean((2, 4))  # area resizing by 2: means of 2 x 2 blocks [2, 16, 16, 3]
    with torch.no_grad():
        z = dkm.encode(blocks[:, None])  # [2, 1, C]
        expected = dkm.memory.retrieve(dkm.memory.prior(2), z, 5)[:, 0]
    np.testing.assert_allclose(obs["retrieval"], expected.numpy(), rtol=1e-5, atol=1e-6)


def test_novelty_reward_of_a_finished_episode_is_that_of_its_terminal_observation(dkm):
    c = 0.2
    venv = VecEpisodicMemory(make_venv(), dkm, readouts=("novelty",), novelty_reward=c)
    plain = make_venv()
    venv.seed(0)
    plain.seed(0)
    venv.reset()
    plain.reset()
    memory, prior = dkm.memory, dkm.memory.prior(1)
    rng = np.random.default_rng(0)
    finished = 0
    with torch.no_grad():
        for _ in range(13):
            actions = rng.integers(0, 3, size=len(MAX_STEPS))
            obs, rewards, dones, infos = venv.step(actions)
            frames, extrinsic, _, plain_infos = plain.step(actions)
            for i in range(len(MAX_STEPS)):
                stats = infos[i]["episodic_memory"]
                if dones[i]:  # the step led to the terminal observation, not to the next episode's first one
                    frame, novelty = plain_infos[i]["terminal_observation"], infos[i]["terminal_observation"]["novelty"][0]
                    finished += 1
                else:
                    frame, novelty = frames[i], obs["novelty"][i, 0]
                z = dkm.encode(torch.as_tensor(frame)[None, None])
                mu_w = memory.address(prior, z)
                error = ((z - memory.read(prior, mu_w)) ** 2).sum() / (2 * memory.obs_noise_var)
                novelty_0 = error + (mu_w**2).sum() / (2 * memory.w_prior_std**2)  # DKM eq. 5 at μw, under the prior
                assert stats["extrinsic_reward"] == extrinsic[i]
                assert stats["novelty_bonus"] == pytest.approx(c * novelty / novelty_0.item(), rel=1e-5)
                assert rewards[i] == np.float32(extrinsic[i]) + np.float32(stats["novelty_bonus"])
    assert finished >= 4


def test_without_novelty_reward_rewards_are_untouched(dkm):
    venv = VecEpisodicMemory(make_venv(), dkm)
    plain = make_venv()
    venv.seed(1)
    plain.seed(1)
    venv.reset()
    plain.reset()
    for _ in range(7):
        _, rewards, _, infos = venv.step(np.full(len(MAX_STEPS), 2))
        _, expected, _, _ = plain.step(np.full(len(MAX_STEPS), 2))
        assert rewards.dtype == expected.dtype
        np.testing.assert_array_equal(rewards, expected)
        assert [info["episodic_memory"]["novelty_bonus"] for info in infos] == [0.0] * len(MAX_STEPS)
