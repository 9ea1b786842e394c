"""MemoryFeaturesExtractor with real SB3 algorithms on memory-wrapped MiniGrid environments."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from episodic_memory import DynamicKanervaMachine
from episodic_memory.agents.builder import AgentConfig, build_agent, load_agent
from episodic_memory.agents.extractors import MemoryAttention, MemoryFeaturesExtractor, SmallImageCNN
from episodic_memory.envs.mazes import make_frame_env
from episodic_memory.wrappers.vec_env import VecEpisodicMemory

FRAME = 16
POLICY_KWARGS = {
    "features_extractor_class": MemoryFeaturesExtractor,
    "features_extractor_kwargs": {"cnn_features": 32, "cnn_channels": 8},
}


@pytest.fixture(scope="module")
def dkm() -> DynamicKanervaMachine:
    torch.manual_seed(0)
    return DynamicKanervaMachine((FRAME, FRAME, 3), code_size=12, num_slots=6, likelihood="gaussian", hidden_channels=4).eval()


def memory_venv(dkm, n: int = 2) -> VecEpisodicMemory:
    return VecEpisodicMemory(DummyVecEnv([lambda: make_frame_env("MiniGrid-MemoryS7-v0", frame_size=FRAME)] * n), dkm)


def test_features_have_the_declared_size_and_attention_reads_the_memory():
    space = spaces.Dict(
        {
            "observation": spaces.Box(0.0, 1.0, (3, 7, 7), np.float32),
            "retrieval": spaces.Box(-np.inf, np.inf, (12,), np.float32),
            "novelty": spaces.Box(-np.inf, np.inf, (1,), np.float32),
            "memory": spaces.Box(-np.inf, np.inf, (6, 12), np.float32),
        }
    )
    extractor = MemoryFeaturesExtractor(space, cnn_features=16, mlp_features=8, attention_dim=4)
    assert extractor.features_dim == 16 + 8 + 4
    obs = {k: torch.as_tensor(np.stack([s.sample() for _ in range(5)])) for k, s in space.spaces.items()}
    obs["retrieval"] = torch.randn(5, 12)
    obs["novelty"] = torch.randn(5, 1)
    obs["memory"] = torch.randn(5, 6, 12)
    features = extractor(obs)
    assert features.shape == (5, 28)
    changed = dict(obs, memory=obs["memory"] + torch.randn(5, 6, 12))
    assert not torch.allclose(extractor(changed)[:, -4:], features[:, -4:])  # the attention part reads the memory
    torch.testing.assert_close(extractor(changed)[:, :-4], features[:, :-4])  # and only it


def test_readouts_are_normalised_to_order_one_whatever_the_machine_scale():
    space = spaces.Dict(
        {
            "observation": spaces.Box(0.0, 1.0, (3, 7, 7), np.float32),
            "retrieval": spaces.Box(-np.inf, np.inf, (12,), np.float32),
            "novelty": spaces.Box(0.0, np.inf, (1,), np.float32),
            "memory": spaces.Box(-np.inf, np.inf, (6, 12), np.float32),
        }
    )
    torch.manual_seed(0)
    obs = {
        "observation": torch.rand(5, 3, 7, 7),
        "retrieval": 80 * torch.randn(5, 12),
        "novelty": torch.tensor([[0.0], [3.0], [40.0], [900.0], [12_000.0]]),
        "memory": 80 * torch.randn(5, 6, 12) + 5,
    }
    normalised = MemoryFeaturesExtractor(space, cnn_features=16, mlp_features=8, attention_dim=4)
    torch.testing.assert_close(normalised._flat("novelty", obs["novelty"]), torch.log1p(obs["novelty"]))
    code = normalised._flat("retrieval", obs["retrieval"])  # per code: zero mean, unit (biased) variance
    torch.testing.assert_close(code.mean(1), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(code.var(1, unbiased=False), torch.ones(5), atol=1e-3, rtol=0)
    rescaled = dict(obs, retrieval=0.01 * obs["retrieval"], memory=0.01 * (obs["memory"] - 5))  # another machine's scale
    torch.testing.assert_close(normalised(rescaled), normalised(obs), atol=1e-4, rtol=1e-4)  # the policy sees the same

    raw = MemoryFeaturesExtractor(space, cnn_features=16, mlp_features=8, attention_dim=4, normalise_readouts=False)
    raw.load_state_dict(normalised.state_dict())  # same weights: only the normalisation differs
    changed = (raw(rescaled) - raw(obs)).abs()  # [5, 28]
    assert (changed[:, 16:24].amax(1) > 1e-2).all() and (changed[:, 24:].amax(1) > 1e-2).all()


def test_readouts_are_read_by_their_declared_kind_not_their_name():
    space = spaces.Dict(
        {
            "observation": spaces.Box(0.0, 1.0, (4,), np.float32),
            "cleaned": spaces.Box(-np.inf, np.inf, (12,), np.float32),
            "energy": spaces.Box(-np.inf, np.inf, (1,), np.float32),
            "slots": spaces.Box(-np.inf, np.inf, (6, 12), np.float32),
            "memory": spaces.Box(-np.inf, np.inf, (3,), np.float32),  # an environment key that happens to be called memory
        }
    )
    kinds = {"cleaned": "code", "energy": "energy", "slots": "rows"}
    extractor = MemoryFeaturesExtractor(space, mlp_features=8, attention_dim=4, readout_kinds=kinds)
    assert extractor.memory_key == "slots" and extractor.attention is not None
    assert set(extractor.flat_keys) == {"observation", "cleaned", "energy", "memory"}
    x = torch.tensor([[-5.0], [0.0], [300.0]])
    torch.testing.assert_close(extractor._flat("energy", x), torch.sign(x) * torch.log1p(x.abs()))
    torch.testing.assert_close(extractor._flat("memory", 50 * torch.ones(2, 3)), 50 * torch.ones(2, 3))  # not a read-out: raw
    code = extractor._flat("cleaned", 80 * torch.randn(2, 12))
    torch.testing.assert_close(code.mean(1), torch.zeros(2), atol=1e-5, rtol=0)
    assert extractor({k: torch.as_tensor(v)[None] for k, v in space.sample().items()}).shape == (1, 8 + 4)
    with pytest.raises(ValueError, match="reads one 'rows' read-out"):
        MemoryFeaturesExtractor(space, readout_kinds={"slots": "rows", "cleaned": "rows"})
    with pytest.raises(ValueError, match=r"must map keys to one of \('code', 'energy', 'rows', 'sequence', 'total', 'count'\)"):
        MemoryFeaturesExtractor(space, readout_kinds={"slots": "matrix"})


def test_agents_saved_before_the_normalisation_keep_reading_raw(dkm, tmp_path):
    venv = memory_venv(dkm)
    old = PPO(
        "MultiInputPolicy", venv, n_steps=8, batch_size=8, policy_kwargs={"features_extractor_class": MemoryFeaturesExtractor}
    )
    old.save(tmp_path / "old.zip")
    new = build_agent(AgentConfig(frame_size=FRAME, num_envs=2, n_steps=8, batch_size=8, device="cpu"), venv)
    new.save(tmp_path / "new.zip")
    for name, normalised in (("old", False), ("new", True)):
        model = load_agent(tmp_path / f"{name}.zip", "ppo", venv)
        extractors = [m for m in model.policy.modules() if isinstance(m, MemoryFeaturesExtractor)]
        assert extractors and all(m.normalise_readouts is normalised for m in extractors)


def test_attention_is_a_convex_combination_of_values():
    attention = MemoryAttention(query_dim=3, code_size=2, attention_dim=2)
    memory = torch.randn(4, 5, 2)
    out = attention(torch.randn(4, 3), memory)
    values = attention.value(memory)  # [4, 5, 2]
    assert ((out >= values.min(1).values - 1e-6) & (out <= values.max(1).values + 1e-6)).all()


@pytest.mark.parametrize("size", [3, 7, 16, 64])
def test_small_image_cnn_takes_any_size(size):
    cnn = SmallImageCNN(3, size, size, features_dim=10, hidden_channels=4)
    assert cnn(torch.zeros(2, 3, size, size)).shape == (2, 10)


@pytest.mark.parametrize("algo", [PPO, A2C])
def test_trains_saves_and_loads_with_sb3(dkm, tmp_path, algo):
    venv = memory_venv(dkm)
    extra = {"batch_size": 16} if algo is PPO else {}
    model = algo("MultiInputPolicy", venv, policy_kwargs=POLICY_KWARGS, n_steps=8, seed=0, device="cpu", **extra)
    model.learn(32)
    obs = venv.reset()
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "agent")
    loaded = algo.load(tmp_path / "agent", env=venv, device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)


def test_recurrent_ppo(dkm):
    model = RecurrentPPO(
        "MultiInputLstmPolicy", memory_venv(dkm), policy_kwargs=POLICY_KWARGS, n_steps=8, batch_size=16, seed=0, device="cpu"
    )
    model.learn(16)
    assert model.num_timesteps >= 16


def test_minigrid_symbolic_view_via_obs_key():
    torch.manual_seed(0)
    machine = DynamicKanervaMachine((7, 7, 3), code_size=8, num_slots=4, hidden_channels=4, likelihood="gaussian").eval()

    def make() -> gymnasium.Env:
        from minigrid.wrappers import ImgObsWrapper

        return ImgObsWrapper(gymnasium.make("MiniGrid-MemoryS7-v0"))

    venv = VecEpisodicMemory(DummyVecEnv([make]), machine)
    model = PPO("MultiInputPolicy", venv, policy_kwargs=POLICY_KWARGS, n_steps=8, batch_size=8, seed=0, device="cpu")
    model.learn(8)
    assert isinstance(model.policy.features_extractor.cnns["observation"], SmallImageCNN)


def test_needs_a_dict_space():
    with pytest.raises(ValueError, match="needs Dict observations"):
        MemoryFeaturesExtractor(spaces.Box(0, 1, (4,)))


def test_memory_metrics_reach_the_sb3_logger(dkm, tmp_path):
    import csv

    from stable_baselines3.common.logger import configure

    from episodic_memory.agents.callbacks import MemoryMetricsCallback

    model = PPO("MultiInputPolicy", memory_venv(dkm), policy_kwargs=POLICY_KWARGS, n_steps=8, batch_size=16, seed=0, device="cpu")
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(32, callback=MemoryMetricsCallback())
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert rows and all(float(r["memory/step_ms"]) > 0 for r in rows)
    assert all(float(r["memory/novelty"]) > 0 for r in rows)
    assert all(0 <= float(r["memory/retrieval_error"]) < 10 for r in rows)


def test_memory_metrics_need_the_memory_wrapper():
    from episodic_memory.agents.callbacks import MemoryMetricsCallback

    model = PPO("MlpPolicy", DummyVecEnv([lambda: gymnasium.make("CartPole-v1")]), n_steps=8, batch_size=8, device="cpu")
    with pytest.raises(ValueError, match="needs a training environment wrapped in VecEpisodicMemory"):
        model.learn(8, callback=MemoryMetricsCallback())


def test_the_linear_memory_head_keeps_the_rows_relative_scales_that_attention_normalises_away():
    space = spaces.Dict({"novelty": spaces.Box(0.0, np.inf, (1,), np.float32), "memory": spaces.Box(-np.inf, np.inf, (4, 6))})
    torch.manual_seed(0)
    obs = {"novelty": torch.ones(1, 1), "memory": torch.randn(1, 4, 6)}
    louder = {"novelty": obs["novelty"], "memory": obs["memory"] * torch.tensor([3.0, 1.0, 1.0, 1.0])[:, None]}
    attention = MemoryFeaturesExtractor(space, mlp_features=8, attention_dim=5)
    linear = MemoryFeaturesExtractor(space, mlp_features=8, attention_dim=5, memory_head="linear")
    assert linear.features_dim == attention.features_dim == 13
    with torch.no_grad():
        torch.testing.assert_close(attention(obs), attention(louder))  # each row layer-normalised on its own
        assert not torch.allclose(linear(obs)[:, 8:], linear(louder)[:, 8:])  # one norm over the whole matrix
        torch.testing.assert_close(linear(obs), linear({"novelty": obs["novelty"], "memory": obs["memory"] * 7.0}))
    with pytest.raises(ValueError, match="memory_head must be one of"):
        MemoryFeaturesExtractor(space, memory_head="mean")
