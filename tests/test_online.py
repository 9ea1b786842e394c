"""OnlineMemory (the RL hot path) against the stateless KanervaMemory it must reproduce."""

from __future__ import annotations

import math

import pytest
import torch

from episodic_memory import KanervaMemory, OnlineMemory

SEED = 0


def make(K: int = 8, C: int = 12, B: int = 3, dtype: torch.dtype = torch.float64, **kwargs) -> tuple[KanervaMemory, OnlineMemory]:
    torch.manual_seed(SEED)
    mem = KanervaMemory(K, C, obs_noise_std=0.8, w_prior_std=1.3).to(dtype)
    return mem, OnlineMemory(mem, B, **kwargs)


def exact_inverse(online: OnlineMemory) -> torch.Tensor:
    R = online.R
    eye = torch.eye(R.shape[1], dtype=R.dtype)
    return torch.linalg.inv(R @ R.transpose(1, 2) + online.ridge * eye)


def test_steps_reproduce_dkm_writing_and_readouts():
    mem, online = make(refresh_every=10**9)  # no refresh: the Woodbury updates alone must stay exact
    Z = torch.randn(3, 40, 12, dtype=torch.float64)
    state = mem.prior(3)
    for t in range(40):
        z = Z[:, t]
        w = mem.address(state, z[:, None])
        expected_retrieval = mem.retrieve(state, z[:, None], 4)
        readout = online.step(z, attractor_steps=4)
        torch.testing.assert_close(readout.weights, w[:, 0])
        torch.testing.assert_close(readout.read, mem.read(state, w)[:, 0])
        torch.testing.assert_close(readout.retrieval, expected_retrieval[:, 0])
        state = mem.write(state, z[:, None], w)
    reference = mem.write_sequential(mem.prior(3), Z)
    torch.testing.assert_close(online.R, reference.mean.detach())
    torch.testing.assert_close(online.U, reference.cov.detach())
    torch.testing.assert_close(online.A_inv, exact_inverse(online))


def test_retrieve_is_iterated_read_of_address():
    _, online = make()
    for z in torch.randn(10, 3, 12, dtype=torch.float64):
        online.write(z)
    z = torch.randn(3, 12, dtype=torch.float64)
    expected = z
    for _ in range(5):
        expected = (online.address(expected)[:, None] @ online.R)[:, 0]  # read(address(z))
    torch.testing.assert_close(online.retrieve(z, 5), expected)
    assert torch.equal(online.retrieve(z, 0), z)


def test_float32_inverse_stays_close_with_refresh():
    torch.manual_seed(SEED)
    mem = KanervaMemory(16, 32)
    online = OnlineMemory(mem, 4, refresh_every=64)
    patterns = torch.randn(3, 4, 32)
    for t in range(1000):  # repeated patterns: the hard case for an updated inverse
        online.step(patterns[t % 3], attractor_steps=2)
    R = online.R.double()
    reference = torch.linalg.inv(R @ R.transpose(1, 2) + torch.eye(16, dtype=torch.float64))
    assert ((online.A_inv.double() - reference).abs().max() / reference.abs().max()) < 1e-4
    assert torch.equal(online.U, online.U.transpose(1, 2))
    assert torch.linalg.eigvalsh(online.U.double()).min() > 0


def test_reset_restores_exactly_the_masked_memories():
    mem, online = make(B=4)
    for z in torch.randn(6, 4, 12, dtype=torch.float64):
        online.step(z, attractor_steps=1)
    before = [t.clone() for t in (online.R, online.U, online.A_inv)]
    prior = mem.prior(1)
    online.reset(torch.tensor([False, True, False, True]))
    for i in (1, 3):
        torch.testing.assert_close(online.R[i], prior.mean[0].detach())
        torch.testing.assert_close(online.U[i], prior.cov[0].detach())
    for i in (0, 2):
        for now, then in zip((online.R, online.U, online.A_inv), before, strict=True):
            assert torch.equal(now[i], then[i])
    torch.testing.assert_close(online.A_inv, exact_inverse(online))
    online.reset()
    torch.testing.assert_close(online.R, prior.mean.detach().expand(4, -1, -1))


class TestBadInput:
    def test_wrong_shape(self):
        _, online = make()
        with pytest.raises(ValueError, match=r"z must have shape \[B=3, C=12\], got \(3, 1, 12\)"):
            online.step(torch.zeros(3, 1, 12, dtype=torch.float64), 1)

    def test_non_finite(self):
        _, online = make()
        z = torch.zeros(3, 12, dtype=torch.float64)
        z[0, 0] = math.nan
        with pytest.raises(ValueError, match="z holds NaN or inf"):
            online.write(z)
        torch.testing.assert_close(online.R, online._R0.expand(3, -1, -1))  # nothing was written

    def test_bad_mask(self):
        _, online = make()
        with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \[3\]"):
            online.reset(torch.ones(3))

    def test_bad_attractor_steps(self):
        _, online = make()
        with pytest.raises(ValueError, match="attractor_steps must be a positive int"):
            online.step(torch.zeros(3, 12, dtype=torch.float64), 0)
