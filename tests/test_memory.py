"""KanervaMemory against closed forms: dense Gaussian conditioning, ridge regression, Gaussian KL."""

from __future__ import annotations

import math

import pytest
import torch

from episodic_memory import KanervaMemory, MemoryState
from episodic_memory.kanerva.memory import matrix_normal_kl
from tests.reference import dense_memory_kl, vec

SEED = 0


def make_memory(K: int = 5, C: int = 4, dtype: torch.dtype = torch.float64, **kwargs) -> KanervaMemory:
    torch.manual_seed(SEED)
    return KanervaMemory(num_slots=K, code_size=C, **kwargs).to(dtype)


def random_state(B: int, K: int, C: int, dtype: torch.dtype = torch.float64) -> MemoryState:
    """A non-trivial memory state: random mean and a random SPD row covariance."""
    R = torch.randn(B, K, C, dtype=dtype)
    A = torch.randn(B, K, K, dtype=dtype)
    U = A @ A.transpose(-1, -2) / K + 0.5 * torch.eye(K, dtype=dtype)
    return MemoryState(R, U)


def dense_posterior(R, U, Z, W, noise_var):
    """Condition vec(M) ~ N(vec(R), I⊗U) on vec(Z) = (I⊗W) vec(M) + ξ by the Gaussian formulas (KM App. E)."""
    K, C = R.shape
    T = Z.shape[0]
    Sigma = torch.kron(torch.eye(C, dtype=R.dtype), U)  # [KC, KC]
    H = torch.kron(torch.eye(C, dtype=R.dtype), W)  # [TC, KC]
    S = H @ Sigma @ H.T + noise_var * torch.eye(T * C, dtype=R.dtype)
    gain = Sigma @ H.T @ torch.linalg.inv(S)
    mean = vec(R) + gain @ (vec(Z) - H @ vec(R))
    cov = Sigma - gain @ H @ Sigma
    return mean, cov


class TestWrite:
    def test_batch_write_equals_dense_gaussian_conditioning(self):
        torch.manual_seed(SEED)
        B, K, C, T = 3, 5, 4, 6
        mem = make_memory(K, C, obs_noise_std=0.7)
        state = random_state(B, K, C)
        Z = torch.randn(B, T, C, dtype=torch.float64)
        W = torch.randn(B, T, K, dtype=torch.float64)
        post = mem.write(state, Z, W)
        for b in range(B):
            mean, cov = dense_posterior(state.mean[b], state.cov[b], Z[b], W[b], mem.obs_noise_var)
            torch.testing.assert_close(vec(post.mean[b]), mean, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(torch.kron(torch.eye(C, dtype=torch.float64), post.cov[b]), cov, rtol=1e-10, atol=1e-10)

    def test_batch_write_equals_one_at_a_time_writes(self):
        torch.manual_seed(SEED)
        B, K, C, T = 4, 6, 5, 7
        mem = make_memory(K, C, obs_noise_std=1.3)
        state = random_state(B, K, C)
        Z = torch.randn(B, T, C, dtype=torch.float64)
        W = torch.randn(B, T, K, dtype=torch.float64)
        at_once = mem.write(state, Z, W)
        one_by_one = state
        for t in range(T):
            one_by_one = mem.write(one_by_one, Z[:, t : t + 1], W[:, t : t + 1])
        torch.testing.assert_close(at_once.mean, one_by_one.mean, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(at_once.cov, one_by_one.cov, rtol=1e-10, atol=1e-10)

    def test_summing_rank1_updates_from_one_old_state_is_not_the_posterior(self):
        """Guards against the reference code's mistake: the T rank-1 updates do not add up."""
        torch.manual_seed(SEED)
        mem = make_memory(4, 3)
        state = random_state(1, 4, 3)
        Z = torch.randn(1, 2, 3, dtype=torch.float64)
        W = torch.randn(1, 2, 4, dtype=torch.float64)
        exact = mem.write(state, Z, W)
        summed_R = state.mean + sum(mem.write(state, Z[:, t : t + 1], W[:, t : t + 1]).mean - state.mean for t in range(2))
        assert (exact.mean - summed_R).abs().max() > 1e-3

    def test_write_sequential_addresses_against_the_current_memory(self):
        torch.manual_seed(SEED)
        B, K, C, T = 2, 5, 4, 6
        mem = make_memory(K, C, obs_noise_std=0.8, w_prior_std=1.5)
        state = random_state(B, K, C)
        Z = torch.randn(B, T, C, dtype=torch.float64)
        expected = state
        for t in range(T):
            R = expected.mean
            A = R @ R.transpose(-1, -2) + mem.ridge * torch.eye(K, dtype=torch.float64)
            w = torch.linalg.solve(A, R @ Z[:, t, :, None]).transpose(-1, -2)  # DKM eq. 6 [B, 1, K]
            expected = mem.write(expected, Z[:, t : t + 1], w)
        got = mem.write_sequential(state, Z)
        torch.testing.assert_close(got.mean, expected.mean)
        torch.testing.assert_close(got.cov, expected.cov)

    def test_posterior_shrinks_covariance_and_fits_written_codes(self):
        torch.manual_seed(SEED)
        mem = make_memory(8, 6, obs_noise_std=0.1)
        state = mem.prior(2)
        Z = torch.randn(2, 3, 6, dtype=torch.float64)
        W = torch.randn(2, 3, 8, dtype=torch.float64)
        post = mem.write(state, Z, W)
        # U0 - U is PSD and reads at the written addresses approach the written codes.
        assert torch.linalg.eigvalsh(state.cov - post.cov).min() > -1e-12
        assert (mem.read(post, W) - Z).abs().max() < (mem.read(state, W) - Z).abs().max() / 10


class TestAddress:
    def test_address_equals_ridge_closed_form(self):
        torch.manual_seed(SEED)
        B, K, C, T = 3, 6, 5, 4
        mem = make_memory(K, C, obs_noise_std=0.7, w_prior_std=1.3)
        state = random_state(B, K, C)
        z = torch.randn(B, T, C, dtype=torch.float64)
        w = mem.address(state, z)
        lam = 0.7**2 / 1.3**2
        for b in range(B):
            R = state.mean[b]
            expected = torch.linalg.inv(R @ R.T + lam * torch.eye(K, dtype=torch.float64)) @ R @ z[b].T
            torch.testing.assert_close(w[b], expected.T, rtol=1e-10, atol=1e-10)

    def test_address_is_the_posterior_mode_of_w(self):
        """μw minimises ||z - Rᵀw||²/(2σξ²) + ||w||²/(2σw0²): the gradient vanishes there."""
        torch.manual_seed(SEED)
        mem = make_memory(6, 5, obs_noise_std=0.5, w_prior_std=2.0)
        state = random_state(1, 6, 5)
        z = torch.randn(1, 1, 5, dtype=torch.float64)
        w = mem.address(state, z).requires_grad_(True)
        energy = ((z - w @ state.mean) ** 2).sum() / (2 * 0.5**2) + (w**2).sum() / (2 * 2.0**2)
        (grad,) = torch.autograd.grad(energy, w)
        assert grad.abs().max() < 1e-9

    def test_reused_factor_gives_the_same_weights(self):
        torch.manual_seed(SEED)
        mem = make_memory(6, 5)
        state = random_state(2, 6, 5)
        z = torch.randn(2, 3, 5, dtype=torch.float64)
        factor = mem.addressing_factor(state)
        torch.testing.assert_close(mem.address(state, z, factor=factor), mem.address(state, z))


class TestKL:
    def test_kl_is_zero_at_the_prior(self):
        mem = make_memory(7, 5)
        assert mem.kl(mem.prior(3)).abs().max() < 1e-10

    def test_kl_equals_dense_gaussian_kl(self):
        torch.manual_seed(SEED)
        B, K, C = 2, 4, 3
        q = random_state(B, K, C)
        p = random_state(B, K, C)
        torch.testing.assert_close(matrix_normal_kl(q, p), dense_memory_kl(q, p), rtol=1e-10, atol=1e-10)

    def test_memory_kl_uses_the_learned_prior(self):
        torch.manual_seed(SEED)
        mem = make_memory(4, 3, prior_cov_scale=2.5)
        state = random_state(2, 4, 3)
        expected = matrix_normal_kl(
            state,
            MemoryState(
                mem.prior_mean.detach().expand(2, 4, 3),
                2.5 * torch.eye(4, dtype=torch.float64).expand(2, 4, 4),
            ),
        )
        torch.testing.assert_close(mem.kl(state), expected)


class TestRetrieve:
    def test_zero_steps_returns_the_query(self):
        mem = make_memory(6, 5)
        state = random_state(2, 6, 5)
        z = torch.randn(2, 3, 5, dtype=torch.float64)
        assert torch.equal(mem.retrieve(state, z, steps=0), z)

    def test_retrieval_moves_noisy_queries_towards_stored_codes(self):
        torch.manual_seed(SEED)
        B, K, C, T = 4, 16, 64, 4
        mem = make_memory(K, C, obs_noise_std=0.1)
        with torch.no_grad():
            mem.prior_mean.mul_(0.1)
        Z = torch.randn(B, T, C, dtype=torch.float64)
        state = mem.write_sequential(mem.prior(B), Z)
        noisy = Z + 0.5 * torch.randn_like(Z)
        cleaned = mem.retrieve(state, noisy, steps=5)
        before = (noisy - Z).norm(dim=-1)
        after = (cleaned - Z).norm(dim=-1)
        assert (after < 0.7 * before).all()


class TestGradients:
    def test_gradcheck_through_write_address_read(self):
        torch.manual_seed(SEED)
        B, K, C, T = 2, 3, 4, 3
        mem = make_memory(K, C, obs_noise_std=0.9)
        z = torch.randn(B, T, C, dtype=torch.float64, requires_grad=True)
        R0 = mem.prior_mean.detach().clone().requires_grad_(True)
        log_u = mem.log_prior_cov_scale.detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda a, b, c: _objective(mem, c, a, b), (R0, log_u, z))


def _objective(mem: KanervaMemory, z: torch.Tensor, R0: torch.Tensor, log_u: torch.Tensor) -> torch.Tensor:
    """Read-back error and KL of a DKM write, from the prior MN(R0, exp(log_u) I, I)."""
    B, _, _ = z.shape
    K = R0.shape[0]
    prior = MemoryState(R0.expand(B, *R0.shape), (log_u.exp() * torch.eye(K, dtype=R0.dtype)).expand(B, K, K))
    state = mem.write_sequential(prior, z)
    w = mem.address(state, z)
    z_hat = mem.read(state, w)
    return ((z_hat - z) ** 2).sum() + matrix_normal_kl(state, prior).sum()


class TestNumerics:
    def test_float32_rank1_writes_keep_u_symmetric_positive_definite(self):
        torch.manual_seed(SEED)
        B, K, C, N = 4, 16, 32, 3000
        mem = make_memory(K, C, dtype=torch.float32)
        with torch.no_grad():
            state = mem.prior(B)
            for _ in range(N):
                state = mem.write_sequential(state, torch.randn(B, 1, C))
        U = state.cov
        assert torch.equal(U, U.transpose(-1, -2))
        eigenvalues = torch.linalg.eigvalsh(U.double())
        assert eigenvalues.min() > 0
        assert eigenvalues.max() <= 1.0 + 1e-4  # a posterior covariance never exceeds U0 = I
        assert torch.isfinite(state.mean).all()

    def test_float32_follows_float64(self):
        torch.manual_seed(SEED)
        B, K, C, N = 2, 8, 16, 500
        mem = make_memory(K, C, dtype=torch.float64)
        Z = torch.randn(B, N, C, dtype=torch.float64)
        with torch.no_grad():
            exact = mem.write_sequential(mem.prior(B), Z)
            mem32 = mem.float()
            approx = mem32.write_sequential(mem32.prior(B), Z.float())
        torch.testing.assert_close(approx.mean.double(), exact.mean, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(approx.cov.double(), exact.cov, rtol=1e-3, atol=1e-5)


class TestBadInput:
    @pytest.fixture
    def mem(self):
        return make_memory(5, 4)

    def test_wrong_rank(self, mem):
        with pytest.raises(ValueError, match=r"z must have shape \[B=2, T, C=4\]"):
            mem.address(mem.prior(2), torch.zeros(2, 4, dtype=torch.float64))

    def test_wrong_code_size(self, mem):
        with pytest.raises(ValueError, match=r"z must have shape .*got \(2, 1, 3\)"):
            mem.write_sequential(mem.prior(2), torch.zeros(2, 1, 3, dtype=torch.float64))

    def test_wrong_weight_shape(self, mem):
        with pytest.raises(ValueError, match=r"w must have shape \[B=2, T, K=5\]"):
            mem.read(mem.prior(2), torch.zeros(2, 1, 4, dtype=torch.float64))

    def test_mismatched_T(self, mem):
        with pytest.raises(ValueError, match="same number T"):
            mem.write(mem.prior(1), torch.zeros(1, 2, 4, dtype=torch.float64), torch.zeros(1, 3, 5, dtype=torch.float64))

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_non_finite_codes(self, mem, bad):
        z = torch.zeros(2, 3, 4, dtype=torch.float64)
        z[1, 2, 0] = bad
        with pytest.raises(ValueError, match="z holds NaN or inf"):
            mem.write_sequential(mem.prior(2), z)

    def test_wrong_state_shape(self, mem):
        state = MemoryState(torch.zeros(2, 5, 3, dtype=torch.float64), torch.zeros(2, 5, 5, dtype=torch.float64))
        with pytest.raises(ValueError, match=r"state.mean must have shape \[B, 5, 4\]"):
            mem.kl(state)

    def test_wrong_dtype(self, mem):
        with pytest.raises(ValueError, match="z must have the memory's dtype"):
            mem.address(mem.prior(1), torch.zeros(1, 1, 4, dtype=torch.float32))

    @pytest.mark.parametrize(
        "kwargs", [{"num_slots": 0, "code_size": 3}, {"num_slots": 3, "code_size": 3, "obs_noise_std": -1.0}]
    )
    def test_bad_constructor_arguments(self, kwargs):
        with pytest.raises(ValueError, match="must be a positive"):
            KanervaMemory(**kwargs)
