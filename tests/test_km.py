"""KanervaMachine: addressing, objective terms against closed forms, writing, gradients, training, iterative reading."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal, kl_divergence

from episodic_memory import DynamicKanervaMachine, MemoryState
from episodic_memory.models.km import _MIN_STD, KanervaMachine, diagonal_normal_kl
from tests.reference import dense_memory_kl

SEED = 0


def tiny_km(dtype: torch.dtype = torch.float64, **kwargs) -> KanervaMachine:
    torch.manual_seed(SEED)
    defaults = dict(input_shape=(12,), code_size=6, num_slots=5, likelihood="bernoulli", address_size=4, hidden_size=16)
    defaults.update(kwargs)
    return KanervaMachine(**defaults).to(dtype)


def binary_episodes(B: int, T: int, D: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return (torch.rand(B, T, D) < 0.5).to(dtype)


def split_normal(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of a posterior MLP output ``[..., 2D]``, written out independently of the model."""
    mean, raw = params.chunk(2, dim=-1)
    return mean, F.softplus(raw) + _MIN_STD


def unit_addresses(model: KanervaMachine) -> torch.Tensor:
    A = model.addresses
    return A / A.norm(dim=1, keepdim=True)  # [K, S]


def sequential_write(model: KanervaMachine, z: torch.Tensor, w: torch.Tensor) -> MemoryState:
    """KM eq. 9-11 one item at a time (Algorithm 2, on-line), with dense algebra."""
    mem = model.memory
    R, U = (t.clone() for t in mem.prior(z.shape[0]))
    for t in range(z.shape[1]):
        z_t, w_t = z[:, t, None], w[:, t, :, None]  # [B, 1, C], [B, K, 1]
        s = U @ w_t  # Σcᵀ [B, K, 1]
        d = w_t.transpose(1, 2) @ s + mem.obs_noise_var  # Σz [B, 1, 1]
        R = R + s @ (z_t - w_t.transpose(1, 2) @ R) / d
        U = U - s @ s.transpose(1, 2) / d
    return MemoryState(R, U)


class TestAddressing:
    def test_rows_of_A_are_unit_norm_as_used(self):
        model = tiny_km().eval()
        x = binary_episodes(2, 3, 12)
        w = model.address_weights(x)
        assert w.shape == (2, 3, 5)
        with torch.no_grad():
            features = model.encoder(x.flatten(0, 1)).view(2, 3, 12)  # [B*T, 2C] -> [B, T, 2C]
            y_mean = split_normal(model.q_y(features))[0]
            expected = model.key(y_mean) @ unit_addresses(model).T
            torch.testing.assert_close(w, expected)
            model.addresses.mul_(torch.tensor([0.1, 2.0, 3.0, 7.0, 0.5], dtype=torch.float64)[:, None])  # rescale rows
            torch.testing.assert_close(model.address_weights(x), w)

    def test_address_weights_ignore_the_training_input_noise(self):
        model = tiny_km(y_input_noise_std=1.0).train()
        x = binary_episodes(2, 3, 12)
        torch.testing.assert_close(model.address_weights(x), model.address_weights(x))


class TestObjective:
    def test_diagonal_normal_kl_matches_torch_distributions(self):
        torch.manual_seed(SEED)
        mean_q, mean_p = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
        std_q, std_p = torch.rand(2, 3, 4, dtype=torch.float64) + 0.1, torch.rand(2, 3, 4, dtype=torch.float64) + 0.1
        expected = kl_divergence(Normal(mean_q, std_q), Normal(mean_p, std_p)).sum(-1)
        torch.testing.assert_close(diagonal_normal_kl(mean_q, std_q, mean_p, std_p), expected)
        standard = kl_divergence(Normal(mean_q, std_q), Normal(torch.zeros_like(mean_q), 1.0)).sum(-1)
        torch.testing.assert_close(diagonal_normal_kl(mean_q, std_q, 0.0, 1.0), standard)

    def test_loss_terms_match_closed_forms(self):
        model = tiny_km(obs_noise_std=0.7).eval()
        B, T, C = 2, 4, 6
        x = binary_episodes(B, T, 12)
        torch.manual_seed(123)
        out = model.loss(x)

        with torch.no_grad():
            features = model.encoder(x.flatten(0, 1)).view(B, T, 2 * C)  # [B*T, 2C] -> [B, T, 2C]
            A = unit_addresses(model)
            y_mean, y_std = split_normal(model.q_y(features))
            z_write = split_normal(model.q_z_write(features))[0]
            state = sequential_write(model, z_write, model.key(y_mean) @ A.T)  # eval mode writes the means
            torch.manual_seed(123)
            y = y_mean + y_std * torch.randn_like(y_mean)
            mu_z = model.key(y) @ A.T @ state.mean  # [B, T, C]
            z_mean, z_std = split_normal(model.q_z_read(torch.cat([features, mu_z], -1)))
            z = z_mean + z_std * torch.randn_like(z_mean)
            nll = -Bernoulli(logits=model.decoder(z.flatten(0, 1))).log_prob(x.flatten(0, 1)).sum(-1)
            kl_y = kl_divergence(Normal(y_mean, y_std), Normal(torch.zeros_like(y_mean), 1.0)).sum(-1)
            kl_z = kl_divergence(Normal(z_mean, z_std), Normal(mu_z, 0.7)).sum(-1)
            kl_memory = dense_memory_kl(state, model.memory.prior(B))
        torch.testing.assert_close(out["nll"], nll.mean())
        torch.testing.assert_close(out["kl_y"], kl_y.mean())
        torch.testing.assert_close(out["kl_z"], kl_z.mean())
        torch.testing.assert_close(out["kl_memory"], (kl_memory / T).mean())
        torch.testing.assert_close(out["cond_elbo"], -(nll.mean() + kl_y.mean() + kl_z.mean()))
        torch.testing.assert_close(out["loss"], -out["cond_elbo"])
        torch.testing.assert_close(out["elbo"], out["cond_elbo"] - out["kl_memory"])

    def test_energy_is_the_negative_elbo_at_the_means(self):
        model = tiny_km().eval()
        B, T, C = 3, 2, 6
        state = model.write(binary_episodes(B, 5, 12))
        query = binary_episodes(B, T, 12)
        with torch.no_grad():
            energy = model.energy(state, query)
            features = model.encoder(query.flatten(0, 1)).view(B, T, 2 * C)  # [B*T, 2C] -> [B, T, 2C]
            y_mean, y_std = split_normal(model.q_y(features))
            mu_z = model.key(y_mean) @ unit_addresses(model).T @ state.mean
            z_mean, z_std = split_normal(model.q_z_read(torch.cat([features, mu_z], -1)))
            nll = -Bernoulli(logits=model.decoder(z_mean.flatten(0, 1))).log_prob(query.flatten(0, 1)).sum(-1).view(B, T)
            kl_y = kl_divergence(Normal(y_mean, y_std), Normal(torch.zeros_like(y_mean), 1.0)).sum(-1)
            kl_z = kl_divergence(Normal(z_mean, z_std), Normal(mu_z, 1.0)).sum(-1)
            mean_frames = torch.sigmoid(model.decoder(z_mean.flatten(0, 1))).view(B, T, 12)  # [B*T, D] -> [B, T, D]
        torch.testing.assert_close(energy, nll + kl_y + kl_z)
        torch.testing.assert_close(model.reconstruct(state, query), mean_frames)


class TestWriting:
    def test_eval_write_equals_sequential_write_of_the_means(self):
        model = tiny_km().eval()
        x = binary_episodes(3, 6, 12)
        with torch.no_grad():
            state = model.write(x)
            expected = sequential_write(model, model.encode(x), model.address_weights(x))
        torch.testing.assert_close(state.mean, expected.mean)
        torch.testing.assert_close(state.cov, expected.cov)

    def test_training_write_samples_and_eval_write_is_deterministic(self):
        model = tiny_km()
        x = binary_episodes(2, 4, 12)
        model.train()
        assert not torch.allclose(model.write(x).mean, model.write(x).mean)
        model.eval()
        torch.testing.assert_close(model.write(x).mean, model.write(x).mean)

    def test_retrieve_delegates_to_ridge_addressing_on_the_memory(self):
        model = tiny_km().eval()
        x = binary_episodes(2, 4, 12)
        state = model.write(x)
        z = model.encode(x)
        torch.testing.assert_close(model.retrieve(state, z, 3), model.memory.retrieve(state, z, 3))


class TestGradients:
    def test_every_parameter_gets_a_gradient(self):
        model = tiny_km(likelihood="gaussian").train()
        x = torch.rand(2, 4, 12, dtype=torch.float64)
        model.loss(x)["loss"].backward()
        names = dict(model.named_parameters())
        expected = {"addresses", "memory.prior_mean", "memory.log_prior_cov_scale", "likelihood.raw_std"}
        prefixes = ("encoder.", "decoder.", "q_y.", "key.", "q_z_write.", "q_z_read.")
        assert expected <= set(names) and all(any(n.startswith(p) for n in names) for p in prefixes)
        for name, p in names.items():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


NUM_PATTERNS, PATTERN_SIZE, EPISODE_LENGTH, BATCH = 16, 32, 8, 16


@pytest.fixture(scope="module")
def trained() -> tuple[KanervaMachine, torch.Tensor, list[float]]:
    """A KM trained for 1000 Adam steps on episodes drawn from 16 fixed random binary patterns.

    The first few hundred steps sit near the collapsed posterior (loss about 32 ln 2 nats, the
    uniform Bernoulli); 1000 steps (a few seconds) reach a model that reads its memory.
    """
    torch.manual_seed(SEED)
    patterns = (torch.rand(NUM_PATTERNS, PATTERN_SIZE) < 0.5).float()
    model = KanervaMachine((PATTERN_SIZE,), code_size=16, num_slots=16, likelihood="bernoulli", hidden_size=64)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(1000):
        out = model.loss(patterns[torch.randint(0, NUM_PATTERNS, (BATCH, EPISODE_LENGTH))])
        optimiser.zero_grad()
        out["loss"].backward()
        optimiser.step()
        losses.append(out["loss"].item())
    return model.eval(), patterns, losses


class TestTraining:
    def test_training_lowers_the_loss(self, trained):
        _, _, losses = trained
        first, at_300, last = sum(losses[:20]) / 20, sum(losses[280:300]) / 20, sum(losses[-20:]) / 20
        assert at_300 < 0.9 * first
        assert last < 0.4 * first

    def test_iterative_reading_cleans_up_noisy_stored_patterns(self, trained):
        """Most noisy queries settle exactly on their clean pattern; the rest settle on another stored one.

        The second kind costs about 16 wrong bits each, so the typical (median) error is asserted, not the mean.
        """
        model, patterns, _ = trained
        torch.manual_seed(SEED + 1)
        x = patterns[torch.randint(0, NUM_PATTERNS, (BATCH, EPISODE_LENGTH))]
        with torch.no_grad():
            state = model.write(x)
            noisy = torch.where(torch.rand_like(x) < 0.1, 1 - x, x)
            trajectory, energies = model.attractor(state, noisy, steps=5)
        assert trajectory.shape == (6, BATCH, EPISODE_LENGTH, PATTERN_SIZE) and energies.shape == (6, BATCH, EPISODE_LENGTH)
        torch.testing.assert_close(trajectory[0], noisy)
        assert set(trajectory[-1].unique().tolist()) <= {0.0, 1.0}
        errors = (trajectory - x).abs().sum(-1)  # Hamming distance to the clean pattern [N+1, B, T]
        recovered = (errors == 0).float().mean((1, 2))  # [N+1]
        assert recovered[0] < 0.1 and recovered[-1] > 0.4
        assert recovered[-1] >= recovered[1]  # iterating helps beyond one read
        assert errors[-1].median() < errors[0].median()
        mean_energy = energies.mean((1, 2))  # [N+1]
        assert mean_energy[-1] < 0.5 * mean_energy[0]


class TestIterativeReading:
    def test_contract_shapes_and_start(self):
        model = tiny_km().eval()
        x = binary_episodes(2, 3, 12)
        state = model.write(x)
        trajectory, energies = model.attractor(state, x, steps=4)
        assert trajectory.shape == (5, 2, 3, 12)
        assert energies.shape == (5, 2, 3)
        torch.testing.assert_close(trajectory[0], x)
        torch.testing.assert_close(energies[0], model.energy(state, x))
        torch.testing.assert_close(trajectory[1], (model.reconstruct(state, x) > 0.5).to(x.dtype))  # Bernoulli mode
        torch.testing.assert_close(energies[2], model.energy(state, trajectory[2]))

    def test_negative_steps(self):
        model = tiny_km()
        x = binary_episodes(1, 2, 12)
        with pytest.raises(ValueError, match="steps must be a non-negative int"):
            model.attractor(model.write(x), x, steps=-1)


class TestSaveLoad:
    def test_round_trip(self, tmp_path):
        model = tiny_km(dtype=torch.float32, likelihood="gaussian", y_size=3).eval()
        with torch.no_grad():
            model.addresses.add_(1.0)  # differ from a fresh initialisation
        x = torch.rand(2, 3, 12)
        path = model.save(tmp_path / "km.safetensors")
        loaded = KanervaMachine.load(path).eval()
        assert loaded.config == model.config and loaded.config["y_size"] == 3
        with torch.no_grad():
            torch.testing.assert_close(loaded.reconstruct(loaded.write(x), x), model.reconstruct(model.write(x), x))

    def test_kinds_are_not_mixed_up(self, tmp_path):
        km_path = tiny_km(dtype=torch.float32).save(tmp_path / "km.safetensors")
        dkm_path = DynamicKanervaMachine((12,), code_size=6, num_slots=5).save(tmp_path / "dkm.safetensors")
        with pytest.raises(ValueError, match="holds a KanervaMachine"):
            DynamicKanervaMachine.load(km_path)
        with pytest.raises(ValueError, match="holds a DynamicKanervaMachine, not a KanervaMachine"):
            KanervaMachine.load(dkm_path)


class TestBadInput:
    def test_wrong_frame_shape_names_x(self):
        model = tiny_km()
        with pytest.raises(ValueError, match=r"x must have shape \[B, T, 12\], got \(2, 3, 11\)"):
            model.loss(torch.zeros(2, 3, 11, dtype=torch.float64))

    @pytest.mark.parametrize("bad", [math.nan, math.inf])
    def test_non_finite_frames(self, bad):
        model = tiny_km()
        x = torch.zeros(1, 2, 12, dtype=torch.float64)
        x[0, 1, 3] = bad
        with pytest.raises(ValueError, match="x holds NaN or inf"):
            model.write(x)

    def test_state_batch_mismatch(self):
        model = tiny_km()
        state = model.write(binary_episodes(2, 3, 12))
        with pytest.raises(ValueError, match="x holds 3 episodes but state holds the memories of 2 episodes"):
            model.reconstruct(state, binary_episodes(3, 1, 12))

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"address_size": 0}, "address_size must be a positive int"),
            ({"y_size": 2.5}, "y_size must be a positive int"),
            ({"y_input_noise_std": -0.1}, "y_input_noise_std must be a non-negative finite number"),
            ({"obs_noise_std": 0.0}, "obs_noise_std must be a positive finite number"),
            ({"likelihood": "poisson"}, "likelihood must be one of"),
        ],
    )
    def test_invalid_constructor_arguments(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            KanervaMachine((4,), **kwargs)


@pytest.mark.parametrize("shape", [(28, 28, 1), (3, 32, 32)])
def test_image_inputs(shape):
    torch.manual_seed(SEED)
    model = KanervaMachine(shape, code_size=8, num_slots=4, address_size=4, hidden_channels=8, hidden_size=16)
    x = torch.randint(0, 256, (1, 2, *shape), dtype=torch.uint8)
    out = model.loss(x)
    assert all(bool(torch.isfinite(v)) for v in out.values()), out
    assert model.reconstruct(model.write(x), x).shape == x.shape
