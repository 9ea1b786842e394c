"""Evaluation of generative memories: NLL bookkeeping, capacity grid, denoising, prior samples, the report."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
import torch

from episodic_memory import DynamicKanervaMachine
from episodic_memory.evaluation.generative import (
    EvaluationConfig,
    capacity_curve,
    conditional_nll,
    denoising,
    evaluate_models,
    sample_and_refine,
)
from episodic_memory.models.vae import VariationalAutoencoder

SEED = 0
FRAME = (8, 8, 1)
NUM_LAYOUTS, VARIANTS = 8, 4


class LayoutSampler:
    """Binary 8x8 frames, ``VARIANTS`` fixed frames per layout; ``layouts=n`` draws an episode from n layouts.

    Records every batch it returns and every request it gets.
    """

    def __init__(self, seed: int = 123) -> None:
        g = np.random.default_rng(seed)
        self.frames = (g.random((NUM_LAYOUTS, VARIANTS, *FRAME)) < 0.5).astype(np.uint8) * 255
        self.episodes: list[torch.Tensor] = []
        self.requests: list[tuple[int, int, str]] = []

    def __call__(self, batch_size: int, episode_length: int, mode: str, rng: np.random.Generator) -> torch.Tensor:
        n = NUM_LAYOUTS if mode == "mixed" else int(mode.removeprefix("layouts="))
        layouts = np.stack([rng.choice(NUM_LAYOUTS, n, replace=False) for _ in range(batch_size)])  # [B, n]
        which = layouts[np.arange(batch_size)[:, None], rng.integers(0, n, (batch_size, episode_length))]  # [B, T]
        variant = rng.integers(0, VARIANTS, (batch_size, episode_length))  # [B, T]
        x = torch.from_numpy(self.frames[which, variant])  # [B, T, 8, 8, 1]
        self.episodes.append(x)
        self.requests.append((batch_size, episode_length, mode))
        return x


@pytest.fixture(scope="module")
def trained_dkm() -> DynamicKanervaMachine:
    torch.manual_seed(SEED)
    model = DynamicKanervaMachine(FRAME, code_size=16, num_slots=16, hidden_channels=8)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    sample, rng = LayoutSampler(), np.random.default_rng(SEED)
    for _ in range(300):
        out = model.loss(sample(8, 8, "mixed", rng))
        optimiser.zero_grad()
        out["loss"].backward()
        optimiser.step()
    return model.eval()


def tiny_dkm(**kwargs) -> DynamicKanervaMachine:
    torch.manual_seed(SEED)
    return DynamicKanervaMachine(FRAME, code_size=6, num_slots=4, hidden_channels=4, **kwargs)


class TestConditionalNLL:
    def test_equals_the_hand_computed_mean_over_the_same_episodes(self):
        model = tiny_dkm().double().train()
        with torch.no_grad():
            model.log_w_std.fill_(-30.0)  # σw ≈ 0: the sampled w is μw, so loss() is deterministic
        sample = LayoutSampler()
        result = conditional_nll(model, sample, episode_length=5, num_episodes=10, batch_size=4, rng=7)

        assert [x.shape[0] for x in sample.episodes] == [4, 4, 2]
        assert model.training  # the mode is restored
        model.eval()
        with torch.no_grad():
            batch_nll = np.array([-model.loss(x)["cond_elbo"].item() for x in sample.episodes])
        sizes = np.array([4, 4, 2])
        mean = (sizes * batch_nll).sum() / 10
        stderr = math.sqrt((sizes * (batch_nll - mean) ** 2).sum() / 2 / 10)
        assert result["nats"] == pytest.approx(mean, rel=1e-9)
        assert result["nats_stderr"] == pytest.approx(stderr, rel=1e-6)

    def test_bits_per_dim_conversion(self):
        result = conditional_nll(tiny_dkm(), LayoutSampler(), episode_length=4, num_episodes=4, batch_size=2)
        D = math.prod(FRAME)
        assert result["bits_per_dim"] == pytest.approx(result["nats"] / (math.log(2) * D), rel=1e-12)
        assert result["bits_per_dim_stderr"] == pytest.approx(result["nats_stderr"] / (math.log(2) * D), rel=1e-12)

    def test_repeats_for_a_seed_and_leaves_torch_random_state_alone(self):
        model = tiny_dkm()
        state = torch.get_rng_state()
        first = conditional_nll(model, LayoutSampler(), episode_length=4, num_episodes=4, batch_size=2, rng=3)
        assert torch.equal(torch.get_rng_state(), state)
        assert conditional_nll(model, LayoutSampler(), episode_length=4, num_episodes=4, batch_size=2, rng=3) == first
        assert conditional_nll(model, LayoutSampler(), episode_length=4, num_episodes=4, batch_size=2, rng=4) != first

    def test_vae_is_evaluated_with_its_elbo(self):
        torch.manual_seed(SEED)
        vae = VariationalAutoencoder(FRAME, code_size=4, hidden_channels=4)
        result = conditional_nll(vae, LayoutSampler(), episode_length=3, num_episodes=4, batch_size=2)
        assert math.isfinite(result["nats"]) and result["nats"] > 0

    def test_sampler_of_the_wrong_frame_shape(self):
        def wrong(batch_size: int, episode_length: int, mode: str, rng: np.random.Generator) -> torch.Tensor:
            return torch.zeros(batch_size, episode_length, 8, 8, 3, dtype=torch.uint8)

        with pytest.raises(ValueError, match=r"expected a tensor of shape \(2, 4, 8, 8, 1\) .* actual value: \(2, 4, 8, 8, 3\)"):
            conditional_nll(tiny_dkm(), wrong, episode_length=4, num_episodes=2, batch_size=2)


class TestCapacity:
    def test_grid_of_lengths_and_modes_in_small_batches(self):
        sample = LayoutSampler()
        result = capacity_curve(
            tiny_dkm(), sample, lengths=(3, 9), modes=("mixed", "layouts=2"), num_episodes=4, max_frames_per_batch=10
        )
        assert result["lengths"] == [3, 9] and result["modes"] == ["mixed", "layouts=2"]
        for key in ("error", "stderr"):
            assert set(result[key]) == {"mixed", "layouts=2"}
            assert all(len(values) == 2 and all(math.isfinite(v) for v in values) for values in result[key].values())
        assert all(b * T <= 10 for b, T, _ in sample.requests)  # at most max(1, 10 // T) episodes per batch
        assert sorted({(T, mode) for _, T, mode in sample.requests}) == [
            (3, "layouts=2"),
            (3, "mixed"),
            (9, "layouts=2"),
            (9, "mixed"),
        ]

    def test_needs_a_memory(self):
        vae = VariationalAutoencoder(FRAME, code_size=4, hidden_channels=4)
        with pytest.raises(TypeError, match="capacity_curve needs a model with a memory .* got a VariationalAutoencoder"):
            capacity_curve(vae, LayoutSampler(), lengths=(3,), modes=("mixed",), num_episodes=2)


class TestDenoising:
    def test_gaussian_noise_on_a_trained_dkm(self, trained_dkm):
        steps, noise_std = 6, 0.15
        result = denoising(trained_dkm, LayoutSampler(), "gaussian", steps, episode_length=8, num_episodes=8, noise_std=noise_std)
        assert len(result["mse"]) == len(result["energy"]) == steps + 1
        assert len(result["rising_fraction"]) == steps
        assert 0.0 <= result["never_rises"] <= 1.0
        assert all(0.0 <= f <= 1.0 for f in result["rising_fraction"])
        assert len(result["energy_traces"]) == 20 and all(len(trace) == steps + 1 for trace in result["energy_traces"])
        # Clipped N(0, σ²) noise on binary frames: E[(x̃ − x)²] = σ²/2 for x in {0, 1}.
        assert result["mse"][0] == pytest.approx(noise_std**2 / 2, rel=0.15)
        assert result["energy"][-1] < result["energy"][0]  # the attractor lowers the energy of noisy frames
        examples = result["examples"]
        assert examples.shape == (4, steps + 2, *FRAME)
        assert set(examples[:, 0].unique().tolist()) <= {0.0, 1.0}  # clean frames scaled to [0, 1]
        assert examples.min() >= 0 and examples.max() <= 1
        converged = result["converged"]
        assert converged["rtol"] == 1e-3 and len(converged["mse"]) == len(converged["energy"]) == steps + 1
        assert converged["mse"][0] == pytest.approx(result["mse"][0])  # the same corrupted frames
        assert all(b <= a for a, b in itertools.pairwise(converged["energy"]))  # stopped energies never rise
        assert 0 < converged["iterations"] < steps

    def test_an_unreachable_tolerance_stops_every_trajectory_at_once(self, trained_dkm):
        result = denoising(trained_dkm, LayoutSampler(), "gaussian", 3, episode_length=8, num_episodes=4, rtol=10.0)
        converged = result["converged"]  # no step lowers a positive energy by 10x its size
        assert converged["iterations"] == 0
        assert converged["mse"] == [result["mse"][0]] * 4 and converged["energy"] == [result["energy"][0]] * 4

    def test_occlusion_blanks_one_block_per_frame(self, trained_dkm):
        block = 3
        result = denoising(
            trained_dkm, LayoutSampler(), "occlusion", 2, episode_length=8, num_episodes=4, block=block, num_examples=6
        )
        clean, noisy = result["examples"][:, 0, ..., 0], result["examples"][:, 1, ..., 0]  # [6, 8, 8]
        for c, n in zip(clean, noisy, strict=True):
            zeroed = ((n == 0) & (c == 1)).nonzero()
            assert torch.equal(n, torch.where((n == 0) & (c == 1), 0.0, c))  # only zeros are introduced
            assert (zeroed.max(0).values - zeroed.min(0).values < block).all()  # within one block x block square
        assert 0 < result["mse"][0] <= block**2 / math.prod(FRAME)

    def test_bad_arguments(self, trained_dkm):
        with pytest.raises(ValueError, match=r"noise must be one of \('gaussian', 'occlusion'\), got 'salt'"):
            denoising(trained_dkm, LayoutSampler(), "salt")
        with pytest.raises(ValueError, match=r"block must fit in the 8x8 frames, got block=9"):
            denoising(trained_dkm, LayoutSampler(), "occlusion", block=9)
        vector_dkm = DynamicKanervaMachine((64,), code_size=4, num_slots=3, hidden_size=8)
        with pytest.raises(ValueError, match="occlusion needs image frames"):
            denoising(vector_dkm, LayoutSampler(), "occlusion")


class TestSampling:
    def test_prior_samples_refined_by_the_attractor(self, trained_dkm):
        sample = LayoutSampler()
        with torch.no_grad():
            state = trained_dkm.write(sample(2, 8, "mixed", np.random.default_rng(1)))
        trajectory, energies = sample_and_refine(trained_dkm, state, num_samples=5, steps=4, rng=2)
        assert trajectory.shape == (5, 2, 5, *FRAME) and energies.shape == (5, 2, 5)
        assert set(trajectory.unique().tolist()) <= {0.0, 1.0}  # Bernoulli modes
        torch.testing.assert_close(energies[0], trained_dkm.energy(state, trajectory[0]))
        again, _ = sample_and_refine(trained_dkm, state, num_samples=5, steps=4, rng=2)
        assert torch.equal(again, trajectory)

    def test_dkm_only(self):
        vae = VariationalAutoencoder(FRAME, code_size=4, hidden_channels=4)
        state = tiny_dkm().memory.prior(1)
        with pytest.raises(TypeError, match=r"needs a model with prior samples \(a DKM or Kanerva\+\+\), got a Variational"):
            sample_and_refine(vae, state, num_samples=2, steps=1)


def test_config_fields_have_help_and_are_checked():
    assert all(f.metadata.get("help") for f in dataclasses.fields(EvaluationConfig))
    with pytest.raises(ValueError, match="noise must be one of"):
        EvaluationConfig(noises=("gaussian", "salt"))
    with pytest.raises(ValueError, match="steps must be an int >= 0, got -1"):
        EvaluationConfig(steps=-1)
    with pytest.raises(ValueError, match="capacity_lengths must be an int >= 1, got 0"):
        EvaluationConfig(capacity_lengths=(10, 0))
    with pytest.raises(ValueError, match="attractor_rtol must be a non-negative finite number, got -0.1"):
        EvaluationConfig(attractor_rtol=-0.1)


def test_evaluate_models_writes_report_and_figures(tmp_path, trained_dkm):
    torch.manual_seed(SEED)
    vae = VariationalAutoencoder(FRAME, code_size=4, hidden_channels=4)
    config = EvaluationConfig(
        episode_length=6,
        num_episodes=4,
        batch_size=2,
        capacity_lengths=(4, 8),
        capacity_modes=("mixed", "layouts=2"),
        capacity_episodes=2,
        steps=3,
        denoising_episodes=2,
        block=4,
        num_examples=2,
        num_samples=3,
    )
    report = evaluate_models({"dkm": trained_dkm, "vae": vae}, LayoutSampler(), tmp_path, config)

    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert set(report) == {"config", "models", "figures"}
    assert report["config"]["capacity_lengths"] == [4, 8]
    dkm, vae_entry = report["models"]["dkm"], report["models"]["vae"]
    assert set(dkm) == {"kind", "conditional_nll", "capacity", "denoising", "sampling"}
    assert set(vae_entry) == {"kind", "conditional_nll"}  # no memory: no capacity, denoising or samples
    assert set(dkm["denoising"]) == {"gaussian", "occlusion"}
    assert len(dkm["sampling"]["energy"]) == config.steps + 1
    assert report["figures"] == ["nll.png", "capacity.png", "denoising.png", "attractor.png", "samples.png"]
    for name in report["figures"]:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000, name
