"""DynamicKanervaMachine: objective terms against closed forms, gradients, training, attractor dynamics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Normal, kl_divergence

from episodic_memory import DynamicKanervaMachine, MemoryState
from tests.reference import dense_memory_kl

SEED = 0


def tiny_dkm(dtype: torch.dtype = torch.float64, **kwargs) -> DynamicKanervaMachine:
    torch.manual_seed(SEED)
    defaults = dict(input_shape=(12,), code_size=6, num_slots=5, likelihood="bernoulli", hidden_size=16)
    defaults.update(kwargs)
    return DynamicKanervaMachine(**defaults).to(dtype)


def binary_episodes(B: int, T: int, D: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return (torch.rand(B, T, D) < 0.5).to(dtype)


def manual_write(model: DynamicKanervaMachine, z: torch.Tensor) -> MemoryState:
    """Algorithm 1 writing with dense solves: w_t from eq. 6 against M_{t-1}, then KM eq. 9-11."""
    mem = model.memory
    R, U = (t.clone() for t in mem.prior(z.shape[0]))
    K = mem.num_slots
    for t in range(z.shape[1]):
        z_t = z[:, t, :, None]  # [B, C, 1]
        w = torch.linalg.solve(R @ R.transpose(1, 2) + mem.ridge * torch.eye(K, dtype=z.dtype), R @ z_t)  # [B, K, 1]
        s = U @ w  # [B, K, 1]
        d = w.transpose(1, 2) @ s + mem.obs_noise_var  # [B, 1, 1]
        R = R + s @ (z_t.transpose(1, 2) - w.transpose(1, 2) @ R) / d
        U = U - s @ s.transpose(1, 2) / d
    return MemoryState(R, U)


class TestObjective:
    def test_loss_terms_match_closed_forms(self):
        model = tiny_dkm()
        x = binary_episodes(2, 4, 12)
        B, T = 2, 4
        torch.manual_seed(123)
        out = model.loss(x)

        with torch.no_grad():
            z = model.encoder(x.flatten(0, 1)).view(B, T, -1)
            state = manual_write(model, z)
            R = state.mean
            K = model.num_slots
            mu_w = torch.linalg.solve(
                R @ R.transpose(1, 2) + model.memory.ridge * torch.eye(K, dtype=x.dtype), R @ z.transpose(1, 2)
            ).transpose(1, 2)
            torch.manual_seed(123)
            w = mu_w + model.log_w_std.exp() * torch.randn_like(mu_w)
            nll = -Bernoulli(logits=model.decoder((w @ R).flatten(0, 1))).log_prob(x.flatten(0, 1)).sum(-1)
            nll_ae = -Bernoulli(logits=model.decoder(z.flatten(0, 1))).log_prob(x.flatten(0, 1)).sum(-1)
            q_w = Normal(mu_w, model.log_w_std.exp())
            kl_w = kl_divergence(q_w, Normal(torch.zeros_like(mu_w), model.memory.w_prior_std)).sum(-1)
            kl_memory = dense_memory_kl(state, model.memory.prior(B))
        torch.testing.assert_close(out["nll"], nll.mean())
        torch.testing.assert_close(out["nll_ae"], nll_ae.mean())
        torch.testing.assert_close(out["kl_w"], kl_w.mean())
        torch.testing.assert_close(out["kl_memory"], (kl_memory / T).mean())
        torch.testing.assert_close(out["cond_elbo"], -(nll.mean() + kl_w.mean()))
        expected_loss = (nll.view(B, T).mean(1) + kl_w.mean(1) + kl_memory / T + nll_ae.view(B, T).mean(1)).mean()
        torch.testing.assert_close(out["loss"], expected_loss)

    def test_energy_matches_eq14(self):
        model = tiny_dkm()
        x = binary_episodes(3, 5, 12)
        state = model.write(x)
        query = binary_episodes(3, 2, 12)
        with torch.no_grad():
            energy = model.energy(state, query)
            z = model.encoder(query.flatten(0, 1)).view(3, 2, -1)
            R = state.mean
            mu_w = torch.linalg.solve(R @ R.transpose(1, 2) + torch.eye(5, dtype=R.dtype), R @ z.transpose(1, 2)).transpose(1, 2)
            nll = -Bernoulli(logits=model.decoder((mu_w @ R).flatten(0, 1))).log_prob(query.flatten(0, 1)).sum(-1).view(3, 2)
            kl = kl_divergence(Normal(mu_w, model.log_w_std.exp()), Normal(torch.zeros_like(mu_w), 1.0)).sum(-1)
        torch.testing.assert_close(energy, nll + kl)

    def test_gaussian_likelihood_log_prob(self):
        model = tiny_dkm(likelihood="gaussian")
        x = torch.rand(2, 3, 12, dtype=torch.float64)
        state = model.write(x)
        with torch.no_grad():
            params = model.decoder(model.memory.read(state, model.memory.address(state, model.encode(x))).flatten(0, 1))
            expected = Normal(params, model.likelihood.std).log_prob(x.flatten(0, 1)).sum(-1)
            got = model.likelihood.log_prob(params, x.flatten(0, 1))
        torch.testing.assert_close(got, expected)


class TestGradients:
    def test_every_parameter_gets_a_gradient(self):
        torch.manual_seed(SEED)
        model = DynamicKanervaMachine((16, 16, 3), code_size=8, num_slots=6, likelihood="gaussian", hidden_channels=4)
        x = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
        model.loss(x)["loss"].backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name

    def test_gradcheck_through_write_address_read_and_coders(self):
        model = tiny_dkm(code_size=3, num_slots=3, hidden_size=4, input_shape=(4,))
        x = binary_episodes(2, 3, 4)
        checked = ["memory.prior_mean", "memory.log_prior_cov_scale", "encoder.net.0.weight", "decoder.net.4.weight", "log_w_std"]

        class Objective(nn.Module):
            def __init__(self, dkm: DynamicKanervaMachine) -> None:
                super().__init__()
                self.dkm = dkm

            def forward(self, inputs: torch.Tensor) -> torch.Tensor:
                state = self.dkm.write(inputs)
                return self.dkm.energy(state, inputs).sum() + self.dkm.memory.kl(state).sum()

        objective = Objective(model)
        params = {
            f"dkm.{name}": p.detach().clone().requires_grad_(True) for name, p in model.named_parameters() if name in checked
        }
        assert len(params) == len(checked)

        def f(*tensors: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(objective, dict(zip(params, tensors, strict=True)), (x,), strict=False)

        assert torch.autograd.gradcheck(f, tuple(params.values()))


class TestTraining:
    def test_training_lowers_loss_and_attractor_energy_falls(self):
        torch.manual_seed(SEED)
        num_patterns, D, T, B = 32, 64, 8, 16
        patterns = (torch.rand(num_patterns, D) < 0.5).float()
        model = DynamicKanervaMachine((D,), code_size=16, num_slots=16, likelihood="bernoulli", hidden_size=64)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses = []
        for _ in range(700):
            out = model.loss(patterns[torch.randint(0, num_patterns, (B, T))])
            optimiser.zero_grad()
            out["loss"].backward()
            optimiser.step()
            losses.append(out["loss"].item())
        first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
        assert last < 0.4 * first

        model.eval()
        with torch.no_grad():
            x = patterns[torch.randint(0, num_patterns, (B, T))]
            state = model.write(x)
            noisy = torch.where(torch.rand_like(x) < 0.15, 1 - x, x)
            trajectory, energies = model.attractor(state, noisy, steps=10)
        mean_energy = energies.mean((1, 2))  # [N+1]
        assert mean_energy[-1] < 0.5 * mean_energy[0]
        assert (mean_energy[1:] <= mean_energy[:-1] * 1.05).all(), mean_energy
        rises = (energies[1:] - energies[:-1]) > 1e-3 * energies[:-1].abs()
        assert rises.float().mean() < 0.15
        assert set(trajectory[-1].unique().tolist()) <= {0.0, 1.0}  # Bernoulli modes are binary frames


class TestAttractor:
    def test_contract_shapes_and_start(self):
        torch.manual_seed(SEED)
        model = DynamicKanervaMachine((8, 8, 3), code_size=6, num_slots=4, likelihood="gaussian", hidden_channels=4)
        x = torch.randint(0, 256, (2, 3, 8, 8, 3), dtype=torch.uint8)
        state = model.write(x)
        trajectory, energies = model.attractor(state, x, steps=4)
        assert trajectory.shape == (5, 2, 3, 8, 8, 3)
        assert energies.shape == (5, 2, 3)
        torch.testing.assert_close(trajectory[0], x.float() / 255)
        torch.testing.assert_close(energies[0], model.energy(state, x))
        torch.testing.assert_close(trajectory[1], model.reconstruct(state, x))  # Gaussian mode == mean

    def test_rtol_stops_each_trajectory_where_its_free_energy_stops_falling(self):
        torch.manual_seed(SEED)
        model = DynamicKanervaMachine((8, 8, 3), code_size=6, num_slots=4, likelihood="gaussian", hidden_channels=4).double()
        x = torch.randint(0, 256, (3, 5, 8, 8, 3), dtype=torch.uint8)
        N = 6
        with torch.no_grad():
            state = model.write(x)
            free, free_energies = model.attractor(state, x, steps=N)  # [N+1, B, T, ...], [N+1, B, T]
            relative_fall = (free_energies[:-1] - free_energies[1:]) / free_energies[:-1].abs()  # [N, B, T]
            rtol = float(relative_fall[1].median())  # about half the trajectories stop after one iteration
            stopped, stopped_energies = model.attractor(state, x, steps=N, rtol=rtol)
        falls = free_energies[1:] < free_energies[:-1] - rtol * free_energies[:-1].abs()  # [N, B, T]
        taken = falls.long().cumprod(0).sum(0)  # iterations before the first step that does not fall enough
        assert taken.max() < N and len(taken.unique()) > 1  # trajectories stop early, at different iterations
        for n in range(N + 1):
            kept = torch.clamp(taken, max=n)  # [B, T]: the iterate each trajectory holds at iteration n
            expected = free.gather(0, kept.view(1, 3, 5, 1, 1, 1).expand(1, 3, 5, 8, 8, 3))[0]
            torch.testing.assert_close(stopped[n], expected)
            torch.testing.assert_close(stopped_energies[n], free_energies.gather(0, kept[None])[0])
        assert (stopped_energies[1:] <= stopped_energies[:-1]).all()  # the energy never rises

    def test_rtol_must_be_a_non_negative_number(self):
        model = tiny_dkm()
        x = binary_episodes(1, 2, 12)
        state = model.write(x)
        for bad in (-0.1, float("nan"), float("inf"), "0.1"):
            with pytest.raises(ValueError, match="rtol must be None or a finite number >= 0"):
                model.attractor(state, x, steps=2, rtol=bad)

    def test_channel_orders_are_the_same_model(self):
        hwc = DynamicKanervaMachine((8, 8, 3), code_size=6, num_slots=4, hidden_channels=4)
        chw = DynamicKanervaMachine((3, 8, 8), code_size=6, num_slots=4, hidden_channels=4)
        chw.load_state_dict(hwc.state_dict())
        x = torch.randint(0, 256, (2, 3, 8, 8, 3), dtype=torch.uint8)
        with torch.no_grad():
            state = hwc.write(x)
            torch.testing.assert_close(chw.energy(state, x.permute(0, 1, 4, 2, 3)), hwc.energy(state, x))

    def test_retrieve_delegates_to_code_space_attractor(self):
        model = tiny_dkm()
        x = binary_episodes(2, 4, 12)
        state = model.write(x)
        z = model.encode(x)
        torch.testing.assert_close(model.retrieve(state, z, 3), model.memory.retrieve(state, z, 3))


@pytest.mark.parametrize("shape", [(7, 7, 3), (28, 28, 1), (3, 32, 32), (13, 17, 3), (64, 64, 3)])
def test_decoder_reproduces_the_input_shape(shape):
    model = DynamicKanervaMachine(shape, code_size=4, num_slots=3, hidden_channels=2)
    x = torch.randint(0, 256, (1, 2, *shape), dtype=torch.uint8)
    assert model.reconstruct(model.write(x), x).shape == x.shape


class TestBadInput:
    def test_wrong_frame_shape_names_x(self):
        model = tiny_dkm()
        with pytest.raises(ValueError, match=r"x must have shape \[B, T, 12\], got \(2, 3, 11\)"):
            model.loss(torch.zeros(2, 3, 11, dtype=torch.float64))

    def test_missing_time_axis(self):
        model = tiny_dkm()
        with pytest.raises(ValueError, match=r"x must have shape \[B, T, 12\]"):
            model.write(torch.zeros(2, 12, dtype=torch.float64))

    @pytest.mark.parametrize("bad", [math.nan, math.inf])
    def test_non_finite_frames(self, bad):
        model = tiny_dkm()
        x = torch.zeros(1, 2, 12, dtype=torch.float64)
        x[0, 1, 3] = bad
        with pytest.raises(ValueError, match="x holds NaN or inf"):
            model.loss(x)

    def test_state_batch_mismatch(self):
        model = tiny_dkm()
        state = model.write(binary_episodes(2, 3, 12))
        with pytest.raises(ValueError, match="x holds 3 episodes but state holds the memories of 2 episodes"):
            model.energy(state, binary_episodes(3, 1, 12))

    def test_ambiguous_channel_axis(self):
        with pytest.raises(ValueError, match="channel_order='hwc' or 'chw'"):
            DynamicKanervaMachine((3, 16, 3))

    def test_unknown_likelihood(self):
        with pytest.raises(ValueError, match="likelihood must be one of"):
            DynamicKanervaMachine((4,), likelihood="poisson")

    def test_bernoulli_frames_outside_unit_interval(self):
        model = tiny_dkm()
        with pytest.raises(ValueError, match=r"x must lie in \[0, 1\] for a BernoulliLikelihood .*got \[0, 2\]"):
            model.loss(torch.full((1, 2, 12), 2.0, dtype=torch.float64) * torch.tensor([0.0] + [1.0] * 11, dtype=torch.float64))

    def test_integer_frames_other_than_uint8(self):
        model = tiny_dkm()
        with pytest.raises(ValueError, match="x must be uint8 or floating point"):
            model.write(torch.zeros(1, 1, 12, dtype=torch.int64))
