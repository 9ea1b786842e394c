"""Kanerva++ (our reconstruction): a permutation-invariant write, exact online, and window reads that are bilinear sampling."""

from __future__ import annotations

import math

import pytest
import torch

from episodic_memory import BACKENDS, KanervaPlusPlus
from episodic_memory.evaluation.generative import sample_and_refine
from episodic_memory.kanerva.latent_block import read_window, window_weights
from episodic_memory.models.km import diagonal_normal_kl

C = 5


def small_kpp(seed: int = 0, write_mode: str = "pooled") -> KanervaPlusPlus:
    torch.manual_seed(seed)
    kpp = KanervaPlusPlus(
        (10,),
        code_size=C,
        num_slots=16,
        memory_channels=3,
        window=2,
        likelihood="bernoulli",
        hidden_size=16,
        write_mode=write_mode,
    )
    return kpp.double().eval()


def episodes(B: int, T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 2, (B, T, 10), generator=torch.Generator().manual_seed(seed)).double()


def test_a_window_read_is_bilinear_sampling_of_the_memory_grid():
    # M[d, i, j] = a_d + b_d j + c_d i is linear in the cell, so bilinear sampling returns it exactly at any point.
    H = 5
    a, b, c = (torch.tensor(v, dtype=torch.float64) for v in ([0.5, -1.0], [2.0, 0.25], [-1.5, 3.0]))
    rows, cols = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(H, dtype=torch.float64), indexing="ij")
    memory = (a[:, None, None] + b[:, None, None] * cols + c[:, None, None] * rows)[None].double()  # [1, 2, 5, 5]
    tx, ty, scale = 0.3, -0.4, 0.5
    key = torch.tensor([[[math.atanh(tx), math.atanh(ty), math.log(scale / (1 - scale))]]], dtype=torch.float64)
    window = read_window(memory, key, (3, 3))  # [1, 2, 3, 3]
    for i, v in enumerate((-1.0, 0.0, 1.0)):  # the window's grid in its own [-1, 1] coordinates
        for j, u in enumerate((-1.0, 0.0, 1.0)):
            x, y = tx + scale * u, ty + scale * v  # in the memory's [-1, 1]² (align_corners: cell centres at ±1)
            col, row = (x + 1) / 2 * (H - 1), (y + 1) / 2 * (H - 1)
            torch.testing.assert_close(window[0, :, i, j], (a + b * col + c * row).double(), rtol=1e-12, atol=1e-12)


def test_the_keyed_write_is_the_adjoint_of_the_window_read():
    # <read(M), c> = <M, write(c)>: an item's contents land on the cells a read at its key looks at, with the same weights.
    g = torch.Generator().manual_seed(6)
    memory = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)  # [B, D, H, W]
    key = torch.randn(2, 1, 3, generator=g, dtype=torch.float64)
    content = torch.randn(2, 3, 3, 3, generator=g, dtype=torch.float64)  # window contents [B*T, D, h, w]
    window = read_window(memory, key, (3, 3))
    torch.testing.assert_close(
        window_weights(key, (3, 3), (4, 5)) @ memory.flatten(2).transpose(1, 2), window.flatten(2).transpose(1, 2)
    )
    written = (window_weights(key, (3, 3), (4, 5)).transpose(1, 2) @ content.flatten(2).transpose(1, 2)).transpose(1, 2)  # Aᵀc
    torch.testing.assert_close((window * content).sum(), (memory.flatten(2) * written).sum(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("write_mode", ["pooled", "keyed"])
def test_the_write_forgets_the_order_of_the_episode(write_mode):
    kpp = small_kpp(write_mode=write_mode)
    x = episodes(2, 6)
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        torch.testing.assert_close(kpp.write(x).memory, kpp.write(x[:, order]).memory, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(kpp.write(x).memory, kpp.write(x[:, :3]).memory)  # but not what it holds


@pytest.mark.parametrize("write_mode", ["pooled", "keyed"])
def test_the_online_memory_after_t_steps_is_the_batch_write_of_those_t_frames(write_mode):
    kpp = small_kpp(write_mode=write_mode)
    x = episodes(3, 5, seed=1)
    kind = BACKENDS["kpp"]
    backend = kind.build(kpp, 3, 1)
    with torch.no_grad():
        for t in range(5):
            code, step_input = kind.inputs(kpp, x[:, t : t + 1])
            out = backend.step(step_input)
            if t > 0:  # read before the write: the memory of frames 0..t-1
                before = kpp.write(x[:, :t])
                mean, std = kpp.memory.prior(before, step_input[:, None, C:])
                torch.testing.assert_close(out["retrieval"], mean[:, 0], rtol=1e-10, atol=1e-10)
                surprise = (0.5 * ((code - mean[:, 0]) / std[:, 0]) ** 2).sum(-1, keepdim=True)
                torch.testing.assert_close(out["novelty"], surprise, rtol=1e-10, atol=1e-10)
            else:
                torch.testing.assert_close(out["memory"], torch.zeros_like(out["memory"]), rtol=0, atol=0)  # empty
        torch.testing.assert_close(backend.state.memory, kpp.write(x).memory, rtol=1e-10, atol=1e-10)
    assert backend.state_floats == 3 * 16 + (1 if write_mode == "pooled" else 16)


def test_the_elbo_terms_are_the_gaussian_kls_and_the_energy_reads_at_the_mean_key():
    kpp = small_kpp()
    x = episodes(2, 4, seed=2)
    with torch.no_grad():
        state = kpp.write(x)
        frames = kpp._frames_in(x)
        features = kpp._features(frames, 2, 4)
        mean_z, std_z = kpp._q_z(features)
        mean_key, std_key = kpp._q_key(features)
        prior_mean, prior_std = kpp.memory.prior(state, mean_key)
        expected_kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(mean_z, std_z), torch.distributions.Normal(prior_mean, prior_std)
        ).sum(-1) + torch.distributions.kl_divergence(
            torch.distributions.Normal(mean_key, std_key), torch.distributions.Normal(0.0, 1.0)
        ).sum(-1)
        nll = -kpp.likelihood.log_prob(kpp._decode(prior_mean), frames).view(2, 4)
        torch.testing.assert_close(kpp.energy(state, x), nll + expected_kl, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(
            diagonal_normal_kl(mean_z, std_z, prior_mean, prior_std) + diagonal_normal_kl(mean_key, std_key, 0.0, 1.0),
            expected_kl,
            rtol=1e-10,
            atol=1e-10,
        )


def test_training_reaches_the_writer_the_key_and_the_prior_networks():
    kpp = small_kpp().train()
    losses = kpp.loss(episodes(2, 4, seed=3))
    losses["loss"].backward()
    for name, module in (("writer", kpp.memory.writer), ("prior", kpp.memory.prior_net), ("key", kpp.q_key)):
        assert sum(p.grad.abs().sum() for p in module.parameters()) > 0, name
    assert float(losses["cond_elbo"]) < 0 and float(losses["kl_key"]) >= 0


def test_prior_samples_are_drawn_from_the_memory_at_random_keys_and_refined_by_the_attractor():
    kpp = small_kpp()
    state = kpp.write(episodes(2, 4, seed=4))
    torch.manual_seed(5)
    with torch.no_grad():
        codes = kpp.sample_codes(state, 4000)  # [2, 4000, C]
    torch.manual_seed(5)
    key = torch.randn(2, 4000, 3, dtype=torch.float64)  # the same draws: Y ~ N(0, I), then z ~ p(Z | M, Y)
    with torch.no_grad():
        mean, std = kpp.memory.prior(state, key)
    torch.testing.assert_close(((codes - mean) / std).mean((0, 1)), torch.zeros(C, dtype=torch.float64), atol=0.05, rtol=0)
    torch.testing.assert_close(((codes - mean) / std).std((0, 1)), torch.ones(C, dtype=torch.float64), atol=0.05, rtol=0)
    trajectory, energies = sample_and_refine(kpp, state, num_samples=3, steps=2, rng=0)
    assert trajectory.shape == (3, 2, 3, 10) and set(trajectory.unique().tolist()) <= {0.0, 1.0}  # Bernoulli modes
    torch.testing.assert_close(energies[-1], kpp.energy(state, trajectory[-1]))


def test_bad_sizes_are_refused():
    assert KanervaPlusPlus((10,), code_size=4, num_slots=12).memory.grid == (3, 4)  # the squarest grid of 12 cells
    with pytest.raises(ValueError, match="positive int"):
        KanervaPlusPlus((10,), code_size=4, num_slots=0)
    kpp = small_kpp()
    with pytest.raises(TypeError, match="LatentMemoryState"):
        kpp.energy(kpp.write(episodes(2, 3)).memory, episodes(2, 3))
    with pytest.raises(NotImplementedError, match="key"):
        kpp.retrieve(kpp.write(episodes(2, 3)), torch.zeros(2, 1, C, dtype=torch.float64), 1)
