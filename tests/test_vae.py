"""VariationalAutoencoder: objective terms against closed forms, gradients, checkpoints, training."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from episodic_memory import load_machine
from episodic_memory.models.vae import VariationalAutoencoder

SEED = 0


def tiny_vae(dtype: torch.dtype = torch.float64, **kwargs) -> VariationalAutoencoder:
    torch.manual_seed(SEED)
    defaults = dict(input_shape=(12,), code_size=5, likelihood="bernoulli", hidden_size=16)
    defaults.update(kwargs)
    return VariationalAutoencoder(**defaults).to(dtype)


def binary_episodes(B: int, T: int, D: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return (torch.rand(B, T, D) < 0.5).to(dtype)


class TestObjective:
    def test_loss_terms_match_closed_forms(self):
        model = tiny_vae()
        B, T = 2, 4
        x = binary_episodes(B, T, 12)
        torch.manual_seed(123)
        out = model.loss(x)

        with torch.no_grad():
            mean, log_std = model.encoder(x.flatten(0, 1)).chunk(2, dim=-1)  # [B*T, C] each
            torch.manual_seed(123)
            z = mean + log_std.exp() * torch.randn_like(mean)
            nll = -Bernoulli(logits=model.decoder(z)).log_prob(x.flatten(0, 1)).sum(-1)
            kl_z = kl_divergence(Normal(mean, log_std.exp()), Normal(torch.zeros_like(mean), 1.0)).sum(-1)
        torch.testing.assert_close(out["nll"], nll.mean())
        torch.testing.assert_close(out["kl_z"], kl_z.mean())
        torch.testing.assert_close(out["cond_elbo"], -(nll + kl_z).mean())
        torch.testing.assert_close(out["elbo"], out["cond_elbo"])
        torch.testing.assert_close(out["loss"], (nll + kl_z).mean())
        assert set(out) == {"loss", "nll", "kl_z", "cond_elbo", "elbo"}

    def test_gaussian_likelihood_nll(self):
        model = tiny_vae(likelihood="gaussian")
        x = torch.rand(2, 3, 12, dtype=torch.float64)
        torch.manual_seed(7)
        out = model.loss(x)
        with torch.no_grad():
            mean, log_std = model.encoder(x.flatten(0, 1)).chunk(2, dim=-1)
            torch.manual_seed(7)
            z = mean + log_std.exp() * torch.randn_like(mean)
            nll = -Normal(model.decoder(z), model.likelihood.std).log_prob(x.flatten(0, 1)).sum(-1)
        torch.testing.assert_close(out["nll"], nll.mean())

    def test_encode_is_the_posterior_mean_and_reconstruct_decodes_it(self):
        model = tiny_vae()
        x = binary_episodes(3, 2, 12)
        with torch.no_grad():
            mean = model.encoder(x.flatten(0, 1)).chunk(2, dim=-1)[0]
            torch.testing.assert_close(model.encode(x), mean.view(3, 2, 5))
            torch.testing.assert_close(model.reconstruct(x), torch.sigmoid(model.decoder(mean)).view(3, 2, 12))


class TestModel:
    def test_every_parameter_gets_a_gradient(self):
        torch.manual_seed(SEED)
        model = VariationalAutoencoder((16, 16, 3), code_size=8, likelihood="gaussian", hidden_channels=4)
        x = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
        model.loss(x)["loss"].backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name

    def test_dtype_and_device_follow_the_coders(self):
        model = tiny_vae(dtype=torch.float32)
        assert model.dtype == torch.float32 and model.device == torch.device("cpu")
        model.double()
        assert model.dtype == torch.float64
        assert model.encode(binary_episodes(1, 2, 12, torch.float32)).dtype == torch.float64  # frames follow the model
        assert model.code_size == 5 and not hasattr(model, "memory")

    def test_save_load_round_trip(self, tmp_path):
        torch.manual_seed(SEED)
        model = VariationalAutoencoder((8, 8, 1), code_size=6, hidden_channels=4).eval()
        with torch.no_grad():
            model.decoder.project.bias.add_(0.5)  # differ from a fresh initialisation
        path = model.save(tmp_path / "vae.safetensors")
        loaded = VariationalAutoencoder.load(path).eval()
        assert loaded.config == model.config
        x = torch.randint(0, 256, (2, 3, 8, 8, 1), dtype=torch.uint8)
        with torch.no_grad():
            torch.testing.assert_close(loaded.reconstruct(x), model.reconstruct(x), rtol=0, atol=0)
        assert type(load_machine(path)) is VariationalAutoencoder

    def test_training_lowers_the_loss(self):
        torch.manual_seed(SEED)
        patterns = (torch.rand(16, 32) < 0.5).float()
        model = VariationalAutoencoder((32,), code_size=8, hidden_size=64)
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(400):
            out = model.loss(patterns[torch.randint(0, 16, (8, 4))])
            optimiser.zero_grad()
            out["loss"].backward()
            optimiser.step()
            losses.append(out["loss"].item())
        first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
        assert last < 0.5 * first, (first, last)


class TestBadInput:
    @pytest.mark.parametrize("name", ["code_size", "hidden_channels", "hidden_size"])
    def test_sizes_must_be_positive_ints(self, name):
        with pytest.raises(ValueError, match=rf"{name} must be a positive int, got 0"):
            VariationalAutoencoder((4,), **{name: 0})

    def test_wrong_frame_shape_names_x(self):
        model = tiny_vae()
        with pytest.raises(ValueError, match=r"x must have shape \[B, T, 12\], got \(2, 3, 11\)"):
            model.loss(torch.zeros(2, 3, 11, dtype=torch.float64))

    def test_unknown_likelihood(self):
        with pytest.raises(ValueError, match="likelihood must be one of"):
            VariationalAutoencoder((4,), likelihood="poisson")
