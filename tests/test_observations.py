"""Observation encodings (episodic_memory.models.observations) and machines built for a space (for_space).

The encodings are checked against hand-written one-hot vectors; the machines against real
Gymnasium, MiniGrid and POPGym environments of every space kind.
"""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv

from episodic_memory import DynamicKanervaMachine, KanervaMachine, load_machine
from episodic_memory.agents.builder import AgentConfig, build_agent
from episodic_memory.agents.extractors import MemoryFeaturesExtractor
from episodic_memory.envs.mazes import make_frame_env
from episodic_memory.models.observations import ObservationEncoding
from episodic_memory.wrappers import EpisodicMemoryWrapper

popgym = pytest.importorskip("popgym")


class TestEncoding:
    def test_discrete_with_a_start_is_one_hot_from_the_start(self):
        encoding = ObservationEncoding.for_space(spaces.Discrete(4, start=-1))
        np.testing.assert_array_equal(encoding.encode(np.array([-1, 2]), 2), [[1, 0, 0, 0], [0, 0, 0, 1]])

    def test_multi_discrete_is_one_one_hot_per_entry(self):
        encoding = ObservationEncoding.for_space(spaces.MultiDiscrete([3, 2]))
        assert encoding.frame_shape == (5,)
        np.testing.assert_array_equal(encoding.encode(np.array([[2, 0], [0, 1]]), 2), [[0, 0, 1, 1, 0], [1, 0, 0, 0, 1]])

    def test_integer_box_is_scaled_to_its_bounds_and_float_box_kept(self):
        ints = ObservationEncoding.for_space(spaces.Box(-2, 6, (2,), np.int64))
        np.testing.assert_allclose(ints.encode(np.array([[-2, 6], [2, 0]]), 2), [[0, 1], [0.5, 0.25]])
        floats = ObservationEncoding.for_space(spaces.Box(-np.inf, np.inf, (2,), np.float32))
        np.testing.assert_array_equal(floats.encode(np.array([[-7.5, 3.0]]), 1), [[-7.5, 3.0]])
        assert floats.value_range == (-np.inf, np.inf) and ints.value_range == (0.0, 1.0)

    def test_tuple_and_dict_concatenate_in_the_spaces_order_and_skip_text(self):
        tuple_space = spaces.Tuple((spaces.Discrete(2), spaces.MultiBinary(3)))
        encoding = ObservationEncoding.for_space(tuple_space)
        np.testing.assert_array_equal(encoding.encode((np.array([1]), np.array([[1, 0, 1]])), 1), [[0, 1, 1, 0, 1]])
        dict_space = spaces.Dict({"b": spaces.Discrete(3), "a": spaces.Box(0.0, 1.0, (1,)), "text": spaces.Text(5)})
        encoding = ObservationEncoding.for_space(dict_space)
        assert encoding.keys == ("a", "b")  # the space's order (gymnasium sorts the keys of a plain dict), no Text
        obs = {"a": np.array([[0.25]]), "b": np.array([2]), "text": np.array(["hi"])}
        np.testing.assert_allclose(encoding.encode(obs, 1), [[0.25, 0, 0, 1]])

    def test_a_chosen_image_key_is_read_as_an_image(self):
        space = spaces.Dict({"image": spaces.Box(0, 255, (8, 8, 3), np.uint8), "direction": spaces.Discrete(4)})
        encoding = ObservationEncoding.for_space(space, "image")
        frames = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
        assert encoding.image and encoding.encode({"image": frames, "direction": np.array([0, 1])}, 2) is frames

    @pytest.mark.parametrize(
        ("space", "obs", "match"),
        [
            (spaces.Discrete(3), np.array([3]), r"holds values outside Discrete\(3\)"),
            (spaces.MultiDiscrete([2, 2]), np.array([[0, 2]]), r"values outside MultiDiscrete"),
            (spaces.Box(-1.0, 1.0, (2,)), np.array([[np.nan, 0.0]]), "NaN or inf"),
            (spaces.Box(-1.0, 1.0, (2,)), np.array([[0.0, 0.0, 0.0]]), r"must have shape \[1, 2\]"),
        ],
    )
    def test_observations_that_do_not_fit_the_space(self, space, obs, match):
        with pytest.raises(ValueError, match=match):
            ObservationEncoding.for_space(space).encode(obs, 1)

    @pytest.mark.parametrize(
        ("space", "obs_key", "match"),
        [
            (spaces.Dict({"mission": spaces.Text(4), "x": spaces.Discrete(2)}), "mission", r"Text keys \['mission'\]"),
            (spaces.Dict({"x": spaces.Discrete(2)}), "y", r"unknown keys \['y'\]; pass one or several distinct keys of \['x'\]"),
            (spaces.Discrete(2), "x", "only for Dict observations"),
            (spaces.Sequence(spaces.Discrete(2)), None, "cannot read observations of Sequence"),
        ],
    )
    def test_spaces_and_keys_it_cannot_read(self, space, obs_key, match):
        with pytest.raises(ValueError, match=match):
            ObservationEncoding.for_space(space, obs_key)


class TestForSpace:
    def test_the_encoding_is_saved_with_the_machine(self, tmp_path):
        space = gymnasium.make("CartPole-v1").observation_space  # bounds with infinities
        machine = DynamicKanervaMachine.for_space(space, code_size=8, num_slots=4)
        loaded = load_machine(machine.save(tmp_path / "m.safetensors"))
        assert loaded.observation_encoding == machine.observation_encoding
        assert loaded.observation_encoding.read_space == space
        json.dumps(loaded.config)  # the config stays JSON

    @pytest.mark.parametrize(
        ("space", "likelihood", "input_shape"),
        [
            (spaces.Box(0, 255, (56, 56, 3), np.uint8), "logistic", (28, 28, 3)),
            (spaces.Box(0, 255, (3, 84, 84), np.uint8), "logistic", (3, 28, 28)),
            (spaces.Box(0, 255, (7, 7, 3), np.uint8), "logistic", (7, 7, 3)),
            (spaces.Tuple((spaces.Discrete(2), spaces.Discrete(4))), "bernoulli", (6,)),
            (spaces.Box(-1.0, 2.0, (3,)), "gaussian", (3,)),
        ],
    )
    def test_coders_and_likelihood_fit_the_space(self, space, likelihood, input_shape):
        machine = KanervaMachine.for_space(space, code_size=8, num_slots=4)
        assert machine.config["likelihood"] == likelihood and tuple(machine.input_shape) == input_shape
        assert machine.config["normalise_codes"]

    def test_a_likelihood_that_cannot_model_the_values_fails_at_construction(self):
        space = gymnasium.make("CartPole-v1").observation_space
        with pytest.raises(ValueError, match=r"for_space\(Box.*'bernoulli' likelihood models values in \[0, 1\].*\[-inf, inf\]"):
            DynamicKanervaMachine.for_space(space, likelihood="bernoulli")

    def test_a_bernoulli_machine_is_refused_by_the_wrapper_for_unbounded_vectors(self):
        machine = DynamicKanervaMachine((4,), code_size=8, num_slots=4)  # the constructor's default: Bernoulli
        with pytest.raises(ValueError, match=r"'bernoulli' likelihood models values in \[0, 1\].*for_space\(env.obs"):
            EpisodicMemoryWrapper(gymnasium.make("CartPole-v1"), machine)

    def test_a_machine_built_for_one_space_refuses_another_of_the_same_size(self):
        machine = DynamicKanervaMachine.for_space(spaces.Discrete(4), code_size=8, num_slots=4)
        env = gymnasium.make("popgym-CountRecallEasy-v0")  # MultiDiscrete([2, 2]): 4 entries too
        with pytest.raises(ValueError, match=r"built for observations .*Discrete.*the environment gives .*MultiDiscrete"):
            EpisodicMemoryWrapper(env, machine)

    def test_codes_are_normalised_and_a_repeat_is_recognised(self):
        env = gymnasium.make("CartPole-v1")
        torch.manual_seed(0)
        machine = DynamicKanervaMachine.for_space(env.observation_space)
        wrapped = EpisodicMemoryWrapper(env, machine, readouts=("code", "novelty"))
        obs, info = wrapped.reset(seed=0)
        np.testing.assert_allclose(np.linalg.norm(obs["code"]), np.sqrt(100), rtol=2e-3)  # layer-normalised: |z| = √C
        first = info["episodic_memory"]["novelty"]  # under the prior
        core = wrapped.core
        frame = wrapped.layout.frames(obs["observation"][None], 1)
        for _ in range(3):
            core.step(frame)
        repeated = core.step(frame, write=False)["novelty"][0, 0]
        assert repeated < 0.2 * first  # written three times: the memory explains most of it


class SymbolicInts(gymnasium.ObservationWrapper, gymnasium.utils.RecordConstructorArgs):
    """MiniGrid's symbolic 7x7x3 view, flattened, as int64 (an integer Box that is not an image)."""

    def __init__(self, env: gymnasium.Env) -> None:
        gymnasium.utils.RecordConstructorArgs.__init__(self)
        gymnasium.ObservationWrapper.__init__(self, env)
        self.observation_space = spaces.Box(0, 255, (147,), np.int64)

    def observation(self, observation: dict) -> np.ndarray:
        return observation["image"].reshape(-1).astype(np.int64)


class LakeBits(gymnasium.ObservationWrapper, gymnasium.utils.RecordConstructorArgs):
    """FrozenLake's position as 4 bits: MultiBinary(4)."""

    def __init__(self, env: gymnasium.Env) -> None:
        gymnasium.utils.RecordConstructorArgs.__init__(self)
        gymnasium.ObservationWrapper.__init__(self, env)
        self.observation_space = spaces.MultiBinary(4)

    def observation(self, observation: int) -> np.ndarray:
        return np.array([(int(observation) >> bit) & 1 for bit in range(4)], dtype=np.int8)


SPACES = {
    "Discrete": lambda: gymnasium.make("popgym-RepeatPreviousEasy-v0"),
    "MultiDiscrete": lambda: gymnasium.make("popgym-ConcentrationEasy-v0"),
    "MultiBinary": lambda: LakeBits(gymnasium.make("FrozenLake-v1", is_slippery=False)),
    "Tuple": lambda: gymnasium.make("popgym-AutoencodeEasy-v0"),
    "Dict with Text": lambda: gymnasium.make("MiniGrid-Empty-5x5-v0"),
    "int Box": lambda: SymbolicInts(gymnasium.make("MiniGrid-Empty-5x5-v0")),
    "float Box": lambda: gymnasium.make("CartPole-v1"),
    "image": lambda: make_frame_env("MiniGrid-Empty-5x5-v0", frame_size=56),  # the 56x56 RGB view, read at 28x28
}
SB3_SPACES = [name for name in SPACES if name != "Tuple"]  # SB3 policies take no Tuple observations


def _machine(env: gymnasium.Env, **options):
    torch.manual_seed(0)
    obs_key = "image" if isinstance(env.observation_space, spaces.Dict) and "image" in env.observation_space.spaces else None
    return DynamicKanervaMachine.for_space(env.observation_space, obs_key=obs_key, code_size=16, num_slots=8, **options)


@pytest.mark.parametrize("kind", list(SPACES))
def test_every_space_kind_passes_gymnasiums_check_env(kind):
    env = SPACES[kind]()
    machine = _machine(env)
    obs_key = machine.observation_encoding.keys[0] if machine.observation_encoding.keys else None
    wrapped = EpisodicMemoryWrapper(env, machine, obs_key=obs_key)
    gymnasium_check_env(wrapped, skip_render_check=True)
    obs, _ = wrapped.reset(seed=1)
    for _ in range(5):
        obs, *_ = wrapped.step(wrapped.action_space.sample())
        assert wrapped.observation_space.contains(obs)
    assert "mission" not in obs and np.isfinite(obs["retrieval"]).all()


@pytest.mark.parametrize("kind", SB3_SPACES)
def test_every_space_kind_passes_sb3s_check_env_and_trains_ppo(kind):
    machine = _machine(SPACES[kind]())
    obs_key = machine.observation_encoding.keys[0] if machine.observation_encoding.keys else None
    sb3_check_env(EpisodicMemoryWrapper(SPACES[kind](), machine, obs_key=obs_key))
    venv = DummyVecEnv([lambda: EpisodicMemoryWrapper(SPACES[kind](), machine, obs_key=obs_key)] * 2)
    model = PPO(
        "MultiInputPolicy",
        venv,
        n_steps=64,
        batch_size=32,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"features_extractor_class": MemoryFeaturesExtractor},
    )
    model.learn(256)
    assert model.num_timesteps >= 256
    memory = model.rollout_buffer.observations["memory"]  # [n_steps, envs, K, C]: what the policy trained on
    assert not np.allclose(memory, memory[0, 0])  # written within episodes, not the prior throughout


def test_tuple_observations_train_through_the_builder_with_popgym():
    config = AgentConfig(
        env_id="popgym-AutoencodeEasy-v0", imports=("popgym",), memory="dkm", num_envs=2, n_steps=32, batch_size=32,
        code_size=16, num_slots=8, device="cpu",
    )  # fmt: skip
    model = build_agent(config)
    assert model.observation_space["observation"].shape == (6,)  # flattened one-hot for SB3: Discrete(2) + Discrete(4)
    model.learn(128)
    assert model.num_timesteps >= 128


class TestCalibrate:
    def test_centres_the_outputs_of_every_calibrated_layer_on_the_frames(self):
        torch.manual_seed(0)
        for cls in (DynamicKanervaMachine, KanervaMachine):
            machine = cls.for_space(spaces.Box(-1.0, 1.0, (6,)), code_size=8, num_slots=4).double().eval()
            x = torch.rand(50, 6, dtype=torch.float64) * 2 - 1  # [N, 6]
            machine.calibrate(x)
            for layer, width in machine._calibration_layers():
                outputs = []
                handle = layer.register_forward_hook(lambda _m, _i, out: outputs.append(out))  # noqa: B023
                machine.encode_and_address(x[:, None])
                handle.remove()
                mean = outputs[0].reshape(-1, layer.out_features)[:, :width].mean(0)
                torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-10, rtol=0)
            if cls is KanervaMachine:  # keys rescaled: the median address norm is 1
                with torch.no_grad():
                    w = machine.encode_and_address(x[:, None])[1][:, 0]
                assert abs(float(w.norm(dim=-1).median()) - 1.0) < 1e-9

    def test_needs_a_batch_of_frames(self):
        machine = DynamicKanervaMachine.for_space(spaces.Discrete(3), code_size=8, num_slots=4)
        with pytest.raises(ValueError, match="at least 2 frames"):
            machine.calibrate(torch.zeros(1, 3))

    @pytest.mark.parametrize("env_id", ["CartPole-v1", "popgym-ConcentrationEasy-v0", "MiniGrid-MemoryS7-v0"])
    def test_a_fresh_agent_memory_tells_a_repeated_observation_from_new_ones(self, env_id):
        from episodic_memory.agents.builder import make_machine
        from episodic_memory.envs.gym_envs import make_env, random_observations
        from episodic_memory.wrappers.core import EpisodicMemoryCore
        from episodic_memory.wrappers.env import batch_of_one

        machine = make_machine(AgentConfig(env_id=env_id, memory="dkm", seed=0), "cpu")
        walk = random_observations(make_env(env_id), 200, seed=123)  # another walk than the calibration's
        frames = {f.tobytes(): f for f in (machine.observation_encoding.encode(batch_of_one(o), 1)[0] for o in walk)}
        distinct = list(frames.values())
        written, new = distinct[:10], distinct[10:18]
        assert len(new) == 8
        core = EpisodicMemoryCore(machine, 1, ("novelty",), novelty_reward=1.0)  # the bonus is the novelty ratio
        for frame in [*written, written[0], written[0]]:
            core.step(frame[None])
        core.step(written[0][None], write=False)
        repeated = float(core.last_bonus[0])
        ratios = []
        for frame in new:
            core.step(frame[None], write=False)
            ratios.append(float(core.last_bonus[0]))
        assert repeated < 0.5 * float(np.median(ratios))  # written three times vs never written
