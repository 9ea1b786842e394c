"""The Product Kanerva Machine's memory: each sub-memory's write is exact Gaussian conditioning with noise σ²/α."""

from __future__ import annotations

import math

import pytest
import torch

from episodic_memory import BACKENDS, ProductKanervaMachine, ProductKanervaMemory
from episodic_memory.models.pkm import allocation_entropy

M, K, C, T = 2, 3, 2, 4


def product_memory(seed: int = 0) -> ProductKanervaMemory:
    torch.manual_seed(seed)
    memory = ProductKanervaMemory(M, K, C, obs_noise_std=0.7, w_prior_std=1.3).double()
    with torch.no_grad():
        for i, sub in enumerate(memory.subs):
            sub.log_prior_cov_scale.fill_(math.log(0.5 + i))  # different priors per sub-memory
    return memory


def dense_posterior(
    r0: torch.Tensor, U0: torch.Tensor, W: torch.Tensor, Y: torch.Tensor, noise_var: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior of the columns of M [K, C] (each ~ N(r0_c, U0)) given ``Y [T, C] = W M + ε``, ε_t ~ N(0, noise_var_t)."""
    precision = torch.linalg.inv(U0) + W.T @ torch.diag(1 / noise_var) @ W  # [K, K]
    U = torch.linalg.inv(precision)
    R = U @ (torch.linalg.inv(U0) @ r0 + W.T @ torch.diag(1 / noise_var) @ Y)  # [K, C]
    return R, U


def test_each_sub_memory_conditions_on_the_items_with_noise_sigma_squared_over_alpha():
    memory = product_memory()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(1, T, C, generator=g, dtype=torch.float64)
    w = torch.randn(M, T, K, generator=g, dtype=torch.float64)
    alpha = torch.softmax(torch.randn(1, T, M, generator=g, dtype=torch.float64), -1)
    prior = memory.prior(1)
    posterior = memory.write(prior, z, w, alpha)
    for m in range(M):
        R, U = dense_posterior(prior.mean[m], prior.cov[m], w[m], z[0], memory.obs_noise_var / alpha[0, :, m])
        torch.testing.assert_close(posterior.mean[m], R, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(posterior.cov[m], U, rtol=1e-10, atol=1e-10)


def test_an_item_with_zero_weight_leaves_its_sub_memory_as_it_was_and_the_other_gets_the_km_write():
    memory = product_memory()
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, T, C, generator=g, dtype=torch.float64)
    w = torch.randn(M, T, K, generator=g, dtype=torch.float64)
    alpha = torch.tensor([1.0, 0.0], dtype=torch.float64).expand(1, T, M)
    prior = memory.prior(1)
    posterior = memory.write(prior, z, w, alpha)
    torch.testing.assert_close(posterior.mean[1], prior.mean[1], rtol=0, atol=0)
    torch.testing.assert_close(posterior.cov[1], prior.cov[1], rtol=0, atol=0)
    km = memory.subs[0].write(memory.subs[0].prior(1), z, w[:1])  # the KM's own write, eq. 9-11
    torch.testing.assert_close(posterior.mean[:1], km.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(posterior.cov[:1], km.cov, rtol=1e-12, atol=1e-12)


def test_the_read_is_the_precision_weighted_mean_of_the_sub_memories_reads():
    memory = product_memory()
    g = torch.Generator().manual_seed(3)
    state = memory.prior(2)
    w = torch.randn(2 * M, T, K, generator=g, dtype=torch.float64)
    alpha = torch.softmax(torch.randn(2, T, M, generator=g, dtype=torch.float64), -1)
    read = memory.read(state, w, alpha)  # [2, T, C]
    for b in range(2):
        for t in range(T):
            experts = [w[b * M + m, t] @ state.mean[b * M + m] for m in range(M)]  # each N(r_m, σ²/α_m I)
            precisions = alpha[b, t] / memory.obs_noise_var
            mode = sum(p * r for p, r in zip(precisions, experts, strict=True)) / precisions.sum()
            torch.testing.assert_close(read[b, t], mode, rtol=1e-12, atol=1e-12)


def small_pkm(seed: int = 0) -> ProductKanervaMachine:
    torch.manual_seed(seed)
    pkm = ProductKanervaMachine((10,), code_size=C + 3, num_slots=6, num_memories=M, likelihood="bernoulli", hidden_size=16)
    return pkm.double().eval()


def test_the_online_backend_writes_what_the_batch_model_writes_item_by_item():
    pkm = small_pkm()
    x = torch.randint(0, 2, (3, T, 10), generator=torch.Generator().manual_seed(4)).double()
    with torch.no_grad():
        batch = pkm.write(x)  # [3*M, K, C]
        backend = BACKENDS["pkm"].build(pkm, 3, 2)
        z = pkm.encode(x)
        for t in range(T):
            out = backend.step(z[:, t])
            torch.testing.assert_close(out["allocation"], pkm.selection(z[:, t]), rtol=0, atol=0)
    torch.testing.assert_close(backend.online.R, batch.mean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(backend.online.U, batch.cov, rtol=1e-9, atol=1e-9)
    assert backend.state_floats == M * (3 * 5 + 3 * 4 // 2)


def test_allocation_entropy_is_zero_for_one_sub_memory_and_ln_m_for_all_alike():
    assert float(allocation_entropy(torch.tensor([0.0, 1.0, 0.0]))) == pytest.approx(0.0, abs=1e-9)
    assert float(allocation_entropy(torch.full((4,), 0.25))) == pytest.approx(math.log(4))


def test_training_reaches_the_selector_and_every_sub_memory_prior():
    pkm = small_pkm().train()
    x = torch.randint(0, 2, (2, T, 10), generator=torch.Generator().manual_seed(5)).double()
    losses = pkm.loss(x)
    losses["loss"].backward()
    assert pkm.selector.weight.grad.abs().sum() > 0
    assert all(sub.prior_mean.grad.abs().sum() > 0 for sub in pkm.memory.subs)
    assert 0.0 <= float(losses["allocation_entropy"]) <= math.log(M) + 1e-9
    assert float(losses["cond_elbo"]) < 0


def test_bad_sizes_and_weights_are_refused():
    with pytest.raises(ValueError, match="multiple of num_memories"):
        ProductKanervaMachine((10,), code_size=4, num_slots=7, num_memories=2)
    memory = product_memory()
    state = memory.prior(1)
    z = torch.zeros(1, T, C, dtype=torch.float64)
    w = torch.zeros(M, T, K, dtype=torch.float64)
    with pytest.raises(ValueError, match="alpha must have shape"):
        memory.write(state, z, w, torch.full((1, T, M + 1), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        memory.write(state, z, w, torch.full((1, T, M), math.nan, dtype=torch.float64))
    with pytest.raises(ValueError, match="multiple of M"):
        memory.kl(memory.subs[0].prior(3))
