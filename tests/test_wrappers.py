"""EpisodicMemoryWrapper: spaces, read-outs against the memory math, episode boundaries, bad input."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from envs.mazes import make_frame_env
from episodic_memory import DynamicKanervaMachine, KanervaMachine
from episodic_memory.wrappers import EpisodicMemoryWrapper

FRAME = 16


@pytest.fixture(scope="module")
def dkm() -> DynamicKanervaMachine:
    torch.manual_seed(0)
    return DynamicKanervaMachine((FRAME, FRAME, 3), code_size=12, num_slots=6, likelihood="gaussian", hidden_channels=4).eval()


def frame_env() -> gymnasium.Env:
    return make_frame_env("MiniGrid-MemoryS7-v0", frame_size=FRAME)


def test_passes_the_gymnasium_and_sb3_env_checkers(dkm):
    env = EpisodicMemoryWrapper(frame_env(), dkm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unbounded read-out boxes and small images are expected warnings
        check_env(env, skip_render_check=True)
        sb3_check_env(env)


def test_observations_lie_in_the_declared_space(dkm):
    env = EpisodicMemoryWrapper(frame_env(), dkm, attractor_steps=3)
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    for action in (2, 0, 2, 1, 2):
        obs, *_ = env.step(action)
        assert env.observation_space.contains(obs)
    assert obs["retrieval"].shape == (12,) and obs["novelty"].shape == (1,) and obs["memory"].shape == (6, 12)


def test_readouts_follow_the_memory_math_and_episodes_start_from_the_prior(dkm):
    env = EpisodicMemoryWrapper(frame_env(), dkm, attractor_steps=4)
    memory = dkm.memory
    with torch.no_grad():
        for episode in range(2):
            obs, _ = env.reset(seed=episode)
            state = memory.prior(1)
            for action in (2, 1, 2, 2):
                z = dkm.encode(torch.as_tensor(obs["observation"])[None, None])  # [1, 1, C]
                mu_w = memory.address(state, z)
                read = memory.read(state, mu_w)
                novelty = ((z - read) ** 2).sum() / (2 * memory.obs_noise_var) + (mu_w**2).sum() / (2 * memory.w_prior_std**2)
                np.testing.assert_allclose(obs["memory"], state.mean[0].numpy(), rtol=1e-4, atol=1e-5)  # before the write
                np.testing.assert_allclose(obs["retrieval"], memory.retrieve(state, z, 4)[0, 0].numpy(), rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(obs["novelty"][0], novelty.item(), rtol=1e-4, atol=1e-6)
                state = memory.write_sequential(state, z)
                obs, *_ = env.step(action)
    # right after a reset the memory read-out is the prior again
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["memory"], memory.prior_mean.detach().numpy())


def test_novelty_is_lower_for_frames_already_written(dkm):
    env = EpisodicMemoryWrapper(frame_env(), dkm)
    obs, _ = env.reset(seed=3)
    first = obs["novelty"][0]
    for _ in range(4):
        obs, *_ = env.step(0)  # four left turns: three new views, then the first one again
    assert obs["novelty"][0] < first


def test_same_seed_same_observations(dkm):
    def rollout() -> list[np.ndarray]:
        env = EpisodicMemoryWrapper(frame_env(), dkm)
        obs, _ = env.reset(seed=7)
        out = [obs["retrieval"]]
        for action in (2, 2, 1, 2, 0):
            obs, *_ = env.step(action)
            out.append(np.concatenate([obs["retrieval"], obs["novelty"], obs["memory"].ravel()]))
        return out

    for a, b in zip(rollout(), rollout(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_selected_readouts_only(dkm):
    env = EpisodicMemoryWrapper(frame_env(), dkm, readouts=("novelty",))
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"observation", "novelty"}


def test_dict_observations_with_obs_key():
    torch.manual_seed(0)
    km = KanervaMachine((7, 7, 3), code_size=8, num_slots=5, likelihood="gaussian", hidden_channels=4).eval()
    env = EpisodicMemoryWrapper(gymnasium.make("MiniGrid-MemoryS7-v0"), km, obs_key="image")
    obs, _ = env.reset(seed=0)
    assert {"image", "direction", "mission", "retrieval", "novelty", "memory"} <= set(obs)
    assert env.observation_space.contains(obs)


def test_checkpoint_path(dkm, tmp_path):
    path = dkm.save(tmp_path / "dkm.safetensors")
    env = EpisodicMemoryWrapper(frame_env(), str(path))
    reference = EpisodicMemoryWrapper(frame_env(), dkm)
    np.testing.assert_array_equal(env.reset(seed=0)[0]["retrieval"], reference.reset(seed=0)[0]["retrieval"])


class TestBadInput:
    def test_frames_of_another_shape(self, dkm):
        with pytest.raises(
            ValueError, match=r"frames of shape \(32, 32, 3\) do not fit the memory's machine, which expects \(16, 16, 3\)"
        ):
            EpisodicMemoryWrapper(make_frame_env("MiniGrid-MemoryS7-v0", frame_size=32), dkm)

    def test_dict_observations_without_obs_key(self, dkm):
        with pytest.raises(ValueError, match=r"need obs_key .*expected one of \['direction', 'image', 'mission'\]"):
            EpisodicMemoryWrapper(gymnasium.make("MiniGrid-MemoryS7-v0"), dkm)

    def test_unknown_readout(self, dkm):
        with pytest.raises(ValueError, match="readouts must be distinct names from"):
            EpisodicMemoryWrapper(frame_env(), dkm, readouts=("retrieval", "surprise"))

    def test_not_a_machine(self):
        with pytest.raises(TypeError, match="machine must be a DynamicKanervaMachine, a KanervaMachine or a checkpoint path"):
            EpisodicMemoryWrapper(frame_env(), torch.nn.Linear(2, 2))

    def test_nan_observation_at_step_time(self, dkm):
        class NaNFrames(gymnasium.ObservationWrapper):
            def __init__(self, env):
                super().__init__(env)
                self.observation_space = gymnasium.spaces.Box(0.0, 1.0, (FRAME, FRAME, 3), np.float32)

            def observation(self, observation):
                frame = observation.astype(np.float32) / 255
                frame[0, 0, 0] = np.nan
                return frame

        env = EpisodicMemoryWrapper(NaNFrames(frame_env()), dkm)
        with pytest.raises(ValueError, match="observations hold NaN or inf values"):
            env.reset(seed=0)


def test_vector_wrapper_next_step_autoreset_starts_fresh_memories(dkm):
    from episodic_memory.wrappers import EpisodicMemoryVectorWrapper

    max_steps = (3, 5)
    venv = gymnasium.vector.SyncVectorEnv(
        [lambda n=n: make_frame_env("MiniGrid-MemoryS7-v0", frame_size=FRAME, max_steps=n) for n in max_steps]
    )
    env = EpisodicMemoryVectorWrapper(venv, dkm, attractor_steps=2)
    memory = dkm.memory
    obs, _ = env.reset(seed=0)
    states = [memory.prior(1) for _ in max_steps]
    starts = ended = np.zeros(len(max_steps), dtype=bool)
    fresh = 0
    with torch.no_grad():
        for _ in range(12):
            for i in range(len(max_steps)):
                if starts[i]:  # the reset observation of the next step: a new episode's first frame
                    states[i] = memory.prior(1)
                    fresh += 1
                np.testing.assert_allclose(obs["memory"][i], states[i].mean[0].numpy(), rtol=1e-4, atol=1e-5)
                z = dkm.encode(torch.as_tensor(obs["observation"][i])[None, None])
                states[i] = memory.write_sequential(states[i], z)
            assert env.observation_space.contains(obs)
            obs, _, terminated, truncated, _ = env.step(np.full(len(max_steps), 2))
            starts, ended = ended, terminated | truncated  # an episode's end comes with its last frame; the reset frame follows
    assert fresh >= 3


def test_vector_wrapper_refuses_same_step_autoreset(dkm):
    from episodic_memory.wrappers import EpisodicMemoryVectorWrapper

    venv = gymnasium.vector.SyncVectorEnv([frame_env], autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
    with pytest.raises(ValueError, match="needs autoreset_mode=NEXT_STEP"):
        EpisodicMemoryVectorWrapper(venv, dkm)
