"""EpisodicMemoryWrapper: spaces, read-outs against the memory math, episode boundaries, bad input."""

from __future__ import annotations

import math
import re
import warnings

import gymnasium
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from minigrid.wrappers import RGBImgPartialObsWrapper
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from episodic_memory import DynamicKanervaMachine, KanervaMachine
from episodic_memory.envs.mazes import make_frame_env
from episodic_memory.wrappers import EpisodicMemoryWrapper

FRAME = 16


@pytest.fixture(scope="module")
def dkm() -> DynamicKanervaMachine:
    torch.manual_seed(0)
    return DynamicKanervaMachine((FRAME, FRAME, 3), code_size=12, num_slots=6, likelihood="gaussian", hidden_channels=4).eval()


def frame_env() -> gymnasium.Env:
    return make_frame_env("MiniGrid-MemoryS7-v0", frame_size=FRAME)


# What the checkers say about every wrapped environment, and why it stays:
EXPECTED_CHECKER_WARNINGS = (
    "is different from the unwrapped version",  # gymnasium, for any wrapper
    "A Box observation space minimum value is -infinity",  # retrieval and memory: codes have no a priori bound
    "A Box observation space maximum value is infinity",  # no read-out has an upper bound
    "Your observation memory has an unconventional shape",  # SB3: the K x C memory, read by MemoryFeaturesExtractor
    "The minimal resolution for an image is 36x36",  # SB3: NatureCNN's; MemoryFeaturesExtractor reads small frames
)


def checker_warnings(env: gymnasium.Env, sb3: bool = True) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
        if sb3:
            sb3_check_env(env)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("novelty_reward", [0.0, 0.5])
def test_passes_the_gymnasium_and_sb3_env_checkers(dkm, novelty_reward):
    env = EpisodicMemoryWrapper(frame_env(), dkm, novelty_reward=novelty_reward)  # the checker steps twice from one seed
    unexpected = [m for m in checker_warnings(env) if not any(known in m for known in EXPECTED_CHECKER_WARNINGS)]
    assert unexpected == []


def test_novelty_is_bounded_below_so_the_checker_has_nothing_to_say_about_its_minimum(dkm):
    env = EpisodicMemoryWrapper(frame_env(), dkm, readouts=("novelty",))
    assert env.observation_space["novelty"].low.tolist() == [0.0]  # a sum of squares
    messages = checker_warnings(env, sb3=False)
    assert not any("minimum value is -infinity" in m for m in messages)
    assert any("maximum value is infinity" in m for m in messages)  # the checker ran over the read-out box


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
    # the mission string is left out: SB3's vectorised environments cannot hold strings
    assert set(obs) == {"image", "direction", "retrieval", "novelty", "memory"}
    assert env.observation_space.contains(obs)


def test_checkpoint_path(dkm, tmp_path):
    path = dkm.save(tmp_path / "dkm.safetensors")
    env = EpisodicMemoryWrapper(frame_env(), str(path))
    reference = EpisodicMemoryWrapper(frame_env(), dkm)
    np.testing.assert_array_equal(env.reset(seed=0)[0]["retrieval"], reference.reset(seed=0)[0]["retrieval"])


def test_bigger_minigrid_frames_are_resized_by_the_machine(dkm):
    """MiniGrid's own 56 x 56 RGB views (7 cells of 8 pixels) feed a 16 x 16 machine, as F.interpolate would resize them."""
    env = EpisodicMemoryWrapper(RGBImgPartialObsWrapper(gymnasium.make("MiniGrid-MemoryS7-v0")), dkm, obs_key="image")
    memory = dkm.memory
    obs, _ = env.reset(seed=0)
    state = memory.prior(1)
    with torch.no_grad():
        for action in (2, 1, 2, 0, 2):
            assert obs["image"].shape == (56, 56, 3) and env.observation_space.contains(obs)  # the agent's view is untouched
            image = torch.as_tensor(obs["image"]).permute(2, 0, 1)[None].float() / 255  # [1, 3, 56, 56]
            small = F.interpolate(image, size=(FRAME, FRAME), mode="area")[0].permute(1, 2, 0)  # [16, 16, 3]
            z = dkm.encode(small[None, None])  # [1, 1, C]
            np.testing.assert_allclose(obs["retrieval"], memory.retrieve(state, z, 5)[0, 0].numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(obs["memory"], state.mean[0].numpy(), rtol=1e-5, atol=1e-6)
            state = memory.write_sequential(state, z)
            obs, *_ = env.step(action)


class TestBadInput:
    @pytest.mark.parametrize(
        ("space", "problem"),
        [
            (spaces.Box(0, 255, (FRAME, FRAME, 4), np.uint8), r"have 4 channels \(channels last\), the machine's frames"),
            (spaces.Box(0, 255, (3, 32, 32), np.uint8), r"have 32 channels"),
            (spaces.Box(0.0, 1.0, (FRAME * FRAME * 3,), np.float32), r"are not images like the machine's frames"),
        ],
    )
    def test_frames_the_machine_cannot_read(self, dkm, space, problem):
        env = gymnasium.wrappers.TransformObservation(frame_env(), lambda obs: obs, space)
        shape = re.escape(str(space.shape))
        with pytest.raises(
            ValueError,
            match=rf"frames of shape {shape} do not fit the memory's machine, which expects \(16, 16, 3\): .*{problem}",
        ):
            EpisodicMemoryWrapper(env, dkm)

    def test_a_machine_that_does_not_resize_refuses_another_size(self):
        torch.manual_seed(0)
        strict = DynamicKanervaMachine((FRAME, FRAME, 3), code_size=4, num_slots=3, hidden_channels=2, resize="none")
        with pytest.raises(ValueError, match=r"frames of shape \(32, 32, 3\) do not fit .*\(16, 16, 3\): .*resize='none'"):
            EpisodicMemoryWrapper(make_frame_env("MiniGrid-MemoryS7-v0", frame_size=32), strict)

    @pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, True, "0.1"])
    def test_novelty_reward_must_be_a_finite_number_at_least_0(self, dkm, bad):
        with pytest.raises(ValueError, match=r"novelty_reward must be a finite number >= 0 \(0 turns the bonus off\)"):
            EpisodicMemoryWrapper(frame_env(), dkm, novelty_reward=bad)

    def test_dict_observations_without_obs_key_are_read_whole_and_an_image_machine_refuses_them(self, dkm):
        # every non-Text key flattened: the 7x7x3 symbolic image (147 values) and the one-hot direction (4)
        with pytest.raises(ValueError, match=r"frames of shape \(151,\) do not fit .*are not images like the machine's"):
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


@pytest.mark.parametrize("mode", [gymnasium.vector.AutoresetMode.DISABLED, "Sometimes"])
def test_vector_wrapper_refuses_autoreset_modes_other_than_next_and_same_step(dkm, mode):
    from episodic_memory.wrappers import EpisodicMemoryVectorWrapper

    venv = gymnasium.vector.SyncVectorEnv([frame_env], autoreset_mode=gymnasium.vector.AutoresetMode.DISABLED)
    venv.metadata["autoreset_mode"] = mode  # what the wrapper reads; a vector environment of another library may declare anything
    with pytest.raises(
        ValueError,
        match=rf"supports autoreset_mode AutoresetMode.NEXT_STEP \(Gymnasium's default\) or AutoresetMode.SAME_STEP, "
        rf"actual value: {re.escape(repr(mode))}; make the vector environment with one of them",
    ):
        EpisodicMemoryVectorWrapper(venv, dkm)


ROUTE = (2, 2, 1, 2, 2)  # MiniGrid-Empty-5x5: two cells east, turn south, two cells: the goal, reward 1 - 0.9 * 5 / 100


def empty_env(**kwargs) -> gymnasium.Env:
    return make_frame_env("MiniGrid-Empty-5x5-v0", frame_size=FRAME, **kwargs)


def novelty_under(memory, state, z: torch.Tensor) -> torch.Tensor:
    """DKM eq. 5 at μw of codes ``z [1, 1, C]`` under ``state``, by the memory's own (Cholesky) addressing."""
    mu_w = memory.address(state, z)
    read = memory.read(state, mu_w)
    return ((z - read) ** 2).sum() / (2 * memory.obs_noise_var) + (mu_w**2).sum() / (2 * memory.w_prior_std**2)


def test_without_novelty_reward_rewards_are_the_environments(dkm):
    plain = empty_env()
    plain.reset(seed=0)
    expected = [plain.step(a)[1] for a in ROUTE]
    env = EpisodicMemoryWrapper(empty_env(), dkm)
    env.reset(seed=0)
    steps = [env.step(a) for a in ROUTE]
    assert [s[1] for s in steps] == expected and expected[-1] == pytest.approx(0.955)
    assert [type(s[1]) for s in steps] == [type(r) for r in expected]  # the very objects, not re-computed
    assert [s[4]["episodic_memory"]["novelty_bonus"] for s in steps] == [0.0] * len(ROUTE)
    assert [s[4]["episodic_memory"]["extrinsic_reward"] for s in steps] == expected


@pytest.mark.parametrize("readouts", [("retrieval", "novelty", "memory"), ("retrieval",)])
def test_novelty_reward_is_the_novelty_read_out_over_its_value_under_the_prior(dkm, readouts):
    c = 0.25
    env = EpisodicMemoryWrapper(empty_env(), dkm, readouts=readouts, novelty_reward=c)
    reference = EpisodicMemoryWrapper(empty_env(), dkm, readouts=("novelty",))  # extrinsic rewards and the read-out
    memory, prior = dkm.memory, dkm.memory.prior(1)
    with torch.no_grad():
        for episode in range(2):
            env.reset(seed=episode)
            reference.reset(seed=episode)
            for action in ROUTE:
                obs, reward, *_, info = env.step(action)
                ref_obs, extrinsic, *_ = reference.step(action)
                frame = torch.as_tensor(ref_obs["observation"])[None, None]
                novelty_0 = novelty_under(memory, prior, dkm.encode(frame)).item()
                stats = info["episodic_memory"]
                assert stats["novelty"] == ref_obs["novelty"][0] and stats["extrinsic_reward"] == extrinsic
                assert stats["novelty_bonus"] == pytest.approx(c * ref_obs["novelty"][0] / novelty_0, rel=1e-5)
                assert reward == stats["extrinsic_reward"] + stats["novelty_bonus"]
    assert extrinsic == pytest.approx(0.955) and reward > extrinsic  # the goal pays its own reward plus the bonus


def test_vector_wrapper_bonus_skips_the_reset_steps(dkm):
    from episodic_memory.wrappers import EpisodicMemoryVectorWrapper

    c = 0.5
    max_steps = (3, 5)

    def make() -> gymnasium.vector.SyncVectorEnv:
        return gymnasium.vector.SyncVectorEnv([lambda n=n: empty_env(max_steps=n) for n in max_steps])

    env = EpisodicMemoryVectorWrapper(make(), dkm, readouts=("novelty",), novelty_reward=c)
    plain = make()
    env.reset(seed=0)
    plain.reset(seed=0)
    memory, prior = dkm.memory, dkm.memory.prior(1)
    starts, reset_steps = np.zeros(len(max_steps), dtype=bool), 0
    with torch.no_grad():
        for _ in range(12):
            actions = np.full(len(max_steps), 2)
            obs, rewards, terminated, truncated, info = env.step(actions)
            frames, extrinsic, *_ = plain.step(actions)
            stats = info["episodic_memory"]
            np.testing.assert_array_equal(stats["extrinsic_reward"], extrinsic)
            codes = [dkm.encode(torch.as_tensor(frame)[None, None]) for frame in frames]  # [1, 1, C] each
            novelty_0 = np.array([novelty_under(memory, prior, z).item() for z in codes])
            expected = np.where(starts, 0.0, c * obs["novelty"][:, 0] / novelty_0)
            np.testing.assert_allclose(stats["novelty_bonus"], expected, rtol=1e-5)
            np.testing.assert_array_equal(rewards, extrinsic + stats["novelty_bonus"])
            reset_steps += int(starts.sum())
            starts = terminated | truncated
    assert reset_steps >= 3
