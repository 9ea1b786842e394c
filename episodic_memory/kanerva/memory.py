"""The Bayesian Kanerva memory shared by the Kanerva Machine (KM) and the Dynamic Kanerva Machine (DKM).

Shape convention (every tensor in this module):

- ``B``: batch of independent memories (environments, episodes);
- ``T``: codes written or queried per memory;
- ``K``: memory slots (rows of M);
- ``C``: code size (columns of M).

A memory M [K, C] has the matrix normal distribution ``MN(R, U, I)``: mean ``R [K, C]`` and row
covariance ``U [K, K]``; the C columns are independent with covariance U, i.e.
``vec(M) ~ N(vec(R), I_C ⊗ U)`` (KM eq. 4, DKM §2.1). Codes are read as ``z = w^T M + ξ`` with
``ξ ~ N(0, σξ² I)`` (DKM eq. 1). A batch of memories is a :class:`MemoryState` with
``mean [B, K, C]`` and ``cov [B, K, K]``.

Ref: Wu et al., *The Kanerva Machine* (ICLR 2018), eq. 9-11 and App. E; Wu et al., *Learning
Attractor Dynamics for Generative Memory* (NeurIPS 2018), eq. 1, 6 and Algorithm 1.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from episodic_memory.kanerva.linalg import safe_cholesky, symmetrize

__all__ = ["MemoryState", "KanervaMemory", "addressing_factor", "matrix_normal_kl", "write_one"]


class MemoryState(NamedTuple):
    """A batch of B memory distributions ``q(M) = MN(R, U, I)``.

    :param mean: R, the mean of M, ``[B, K, C]``.
    :param cov: U, the row covariance of M (symmetric positive definite), ``[B, K, K]``.
    """

    mean: torch.Tensor
    cov: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.mean.shape[0]

    @property
    def num_slots(self) -> int:
        return self.mean.shape[1]

    @property
    def code_size(self) -> int:
        return self.mean.shape[2]


def matrix_normal_kl(q: MemoryState, p: MemoryState) -> torch.Tensor:
    """Exact ``KL(MN(R, U, I) || MN(R0, U0, I))`` for each of the B memories, ``[B]``.

    ``½[C tr(U0⁻¹U) + tr((R−R0)ᵀ U0⁻¹ (R−R0)) − K C + C (ln|U0| − ln|U|)]``, the Gaussian KL of
    ``vec(M)`` with covariances ``I_C ⊗ U`` and ``I_C ⊗ U0``.
    """
    R, U = q
    R0, U0 = p
    K, C = R.shape[-2], R.shape[-1]
    L0 = safe_cholesky(U0)  # [B, K, K]
    L = safe_cholesky(U)  # [B, K, K]
    D = R - R0  # [B, K, C]
    trace_term = torch.cholesky_solve(U, L0).diagonal(dim1=-2, dim2=-1).sum(-1)  # tr(U0⁻¹U) [B]
    mahalanobis = (D * torch.cholesky_solve(D, L0)).sum((-2, -1))  # [B]
    logdet_U0 = 2.0 * L0.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # [B]
    logdet_U = 2.0 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # [B]
    return 0.5 * (C * trace_term + mahalanobis - K * C + C * (logdet_U0 - logdet_U))


def write_one(state: MemoryState, z: torch.Tensor, w: torch.Tensor, obs_noise_var: float) -> MemoryState:
    """The posterior after one code per memory, ``z [B, 1, C]`` at ``w [B, 1, K]`` (KM eq. 9-11), unchecked.

    Σz is a scalar, so this divides instead of factorising (``wUwᵀ >= 0`` in exact arithmetic).
    """
    R, U = state
    Delta = z - w @ R  # prediction error, KM eq. 9 [B, 1, C]
    Sigma_c = w @ U  # cross-covariance of z and M, KM eq. 9 [B, 1, K]
    Sigma_z = (Sigma_c * w).sum(-1, keepdim=True).clamp_min(0.0) + obs_noise_var  # KM eq. 10 [B, 1, 1]
    R = R + Sigma_c.transpose(-1, -2) * (Delta / Sigma_z)  # KM eq. 9, broadcast [B, K, 1] * [B, 1, C]
    # U -= vᵀv with v = Σc/√Σz: a broadcast outer product of one vector with itself is exactly
    # symmetric (and far cheaper than a bmm with an inner size of 1), so U stays symmetric.
    v = Sigma_c * Sigma_z.rsqrt()  # [B, 1, K]
    return MemoryState(R, U - v.transpose(-1, -2) * v)  # KM eq. 11 [B, K, K]


def addressing_factor(R: torch.Tensor, ridge: float) -> torch.Tensor:
    """Cholesky factor ``L [B, K, K]`` of the DKM addressing matrix ``R Rᵀ + λI`` (eq. 6) for ``R [B, K, C]``."""
    eye = torch.eye(R.shape[-2], dtype=R.dtype, device=R.device)
    return safe_cholesky(R @ R.transpose(-1, -2) + ridge * eye)


class KanervaMemory(nn.Module):
    """A batch of Bayesian linear-Gaussian memories with a learned prior ``MN(R0, U0, I)``.

    The prior mean ``R0 [K, C]`` and the prior row covariance ``U0 = exp(u) I`` (one learned
    log-scale u, so U0 stays positive definite) are parameters; everything else is inference.

    :param num_slots: K, rows of the memory.
    :param code_size: C, columns of the memory (size of the codes z).
    :param obs_noise_std: σξ, the std of the read noise ξ in ``z = wᵀM + ξ``.
    :param w_prior_std: σw0, the std of the addressing prior ``p(w) = N(0, σw0² I)``. Together
        with σξ it sets the ridge ``λ = σξ²/σw0²`` of DKM addressing (eq. 6).
    :param prior_cov_scale: initial value of the scale of ``U0``.

    Example::

        mem = KanervaMemory(num_slots=32, code_size=100)
        state = mem.prior(batch_size=8)           # R [8, 32, 100], U [8, 32, 32]
        state = mem.write_sequential(state, z)    # z [8, T, 100]
        z_hat = mem.read(state, mem.address(state, z))
    """

    def __init__(
        self,
        num_slots: int,
        code_size: int,
        obs_noise_std: float = 1.0,
        w_prior_std: float = 1.0,
        prior_cov_scale: float = 1.0,
    ) -> None:
        super().__init__()
        for name, value in (("num_slots", num_slots), ("code_size", code_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name, value in (
            ("obs_noise_std", obs_noise_std),
            ("w_prior_std", w_prior_std),
            ("prior_cov_scale", prior_cov_scale),
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        self.num_slots = num_slots
        self.code_size = code_size
        self.obs_noise_std = float(obs_noise_std)
        self.w_prior_std = float(w_prior_std)
        self.prior_mean = nn.Parameter(nn.init.trunc_normal_(torch.empty(num_slots, code_size)))  # R0 [K, C]
        self.log_prior_cov_scale = nn.Parameter(torch.tensor(math.log(prior_cov_scale)))  # U0 = exp(u) I

    @property
    def obs_noise_var(self) -> float:
        """σξ²."""
        return self.obs_noise_std**2

    @property
    def ridge(self) -> float:
        """λ = σξ²/σw0², the ridge of DKM addressing (eq. 6)."""
        return self.obs_noise_var / self.w_prior_std**2

    def extra_repr(self) -> str:
        return (
            f"num_slots={self.num_slots}, code_size={self.code_size}, "
            f"obs_noise_std={self.obs_noise_std}, w_prior_std={self.w_prior_std}"
        )

    # ----------------------------------------------------------------------------------------
    # Prior and KL
    # ----------------------------------------------------------------------------------------
    def prior(self, batch_size: int) -> MemoryState:
        """``p(M) = MN(R0, U0, I)`` for B memories: ``mean [B, K, C]``, ``cov [B, K, K]``.

        Differentiable w.r.t. R0 and U0.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        K, C = self.num_slots, self.code_size
        R0 = self.prior_mean.expand(batch_size, K, C)  # [B, K, C]
        eye = torch.eye(K, dtype=self.prior_mean.dtype, device=self.prior_mean.device)
        U0 = (self.log_prior_cov_scale.exp() * eye).expand(batch_size, K, K)  # [B, K, K]
        return MemoryState(R0, U0)

    def kl(self, state: MemoryState) -> torch.Tensor:
        """Exact ``KL(q(M) || p(M))`` per memory, ``[B]`` (see :func:`matrix_normal_kl`)."""
        self._check_state(state)
        return matrix_normal_kl(state, self.prior(state.batch_size))

    # ----------------------------------------------------------------------------------------
    # Addressing, reading, retrieval
    # ----------------------------------------------------------------------------------------
    def addressing_factor(self, state: MemoryState) -> torch.Tensor:
        """Cholesky factor ``L [B, K, K]`` of ``R Rᵀ + λ I`` (DKM eq. 6).

        The factor depends on the memory only: compute it once per memory state and pass it to
        :meth:`address` / :meth:`retrieve` for every query against that state.
        """
        self._check_state(state)
        return self._addressing_factor(state.mean)

    def address(self, state: MemoryState, z: torch.Tensor, factor: torch.Tensor | None = None) -> torch.Tensor:
        """MAP addressing weights ``μw = (R Rᵀ + λ I)⁻¹ R z`` (DKM eq. 6).

        :param state: memories, ``mean [B, K, C]``.
        :param z: query codes ``[B, T, C]``.
        :param factor: optional :meth:`addressing_factor` of ``state`` ``[B, K, K]``, reused.
        :return: ``μw [B, T, K]``.
        """
        self._check_state(state)
        self._check_codes("z", z, state)
        if factor is not None:
            self._check_factor(factor, state)
        return self._address(state.mean, z, factor)

    def read(self, state: MemoryState, w: torch.Tensor) -> torch.Tensor:
        """Mean-field read ``ẑ = wᵀ R`` (DKM eq. 1 without noise): ``w [B, T, K] -> [B, T, C]``."""
        self._check_state(state)
        self._check_weights("w", w, state)
        return w @ state.mean  # [B, T, K] @ [B, K, C]

    def retrieve(self, state: MemoryState, z: torch.Tensor, steps: int, factor: torch.Tensor | None = None) -> torch.Tensor:
        """Code-space attractor: iterate ``z <- read(address(z))`` ``steps`` times (DKM §3.5).

        One Cholesky factor of ``R Rᵀ + λ I`` serves every iteration, and iterations after the first
        run in weight space (``w <- w − λ (R Rᵀ + λI)⁻¹ w``), the same map with one solve each.

        :param z: query codes ``[B, T, C]``; :param steps: iterations (0 returns ``z``).
        :return: cleaned codes ``[B, T, C]``.
        """
        self._check_state(state)
        self._check_codes("z", z, state)
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        if steps == 0:
            return z
        if factor is None:
            factor = self._addressing_factor(state.mean)
        else:
            self._check_factor(factor, state)
        w = self._address(state.mean, z, factor)  # [B, T, K]
        for _ in range(steps - 1):
            # address(read(w)) = A⁻¹ R Rᵀ w = A⁻¹ (A − λI) w = w − λ A⁻¹ w with A = R Rᵀ + λI
            w = w - self.ridge * torch.cholesky_solve(w.transpose(-1, -2), factor).transpose(-1, -2)
        return w @ state.mean  # [B, T, C]

    # ----------------------------------------------------------------------------------------
    # Writing
    # ----------------------------------------------------------------------------------------
    def write(self, state: MemoryState, z: torch.Tensor, w: torch.Tensor) -> MemoryState:
        """Exact Bayesian posterior ``p(M | z_1..T, w_1..T)`` (KM eq. 9-11).

        Writing all T pairs at once equals T one-at-a-time writes.

        :param state: prior memories ``MN(R [B, K, C], U [B, K, K], I)``.
        :param z: codes ``[B, T, C]``; :param w: their addressing weights ``[B, T, K]``.
        :return: the posterior state.
        """
        self._check_state(state)
        self._check_codes("z", z, state)
        self._check_weights("w", w, state)
        if z.shape[1] != w.shape[1]:
            raise ValueError(f"z and w must hold the same number T of items, got z {tuple(z.shape)} and w {tuple(w.shape)}")
        return self._write(state, z, w)

    def write_sequential(self, state: MemoryState, z: torch.Tensor) -> MemoryState:
        """DKM writing (Algorithm 1): for t = 1..T, ``w_t = address(M_{t-1}, z_t)`` then write ``(z_t, w_t)``.

        :param z: codes ``[B, T, C]``, written in order.
        :return: the state after all T writes.
        """
        self._check_state(state)
        self._check_codes("z", z, state)
        for t in range(z.shape[1]):
            z_t = z[:, t : t + 1]  # [B, 1, C]
            w_t = self._address(state.mean, z_t, None)  # DKM eq. 6 against M_{t-1}
            state = self._write(state, z_t, w_t)
        return state

    # ----------------------------------------------------------------------------------------
    # Unchecked kernels
    # ----------------------------------------------------------------------------------------
    def _addressing_factor(self, R: torch.Tensor) -> torch.Tensor:
        return addressing_factor(R, self.ridge)

    def _address(self, R: torch.Tensor, z: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
        if factor is None:
            factor = self._addressing_factor(R)
        Rz = (z @ R.transpose(-1, -2)).transpose(-1, -2)  # R z as rows: [B, T, C] @ [B, C, K] -> [B, K, T]
        return torch.cholesky_solve(Rz, factor).transpose(-1, -2)  # DKM eq. 6, μw [B, T, K]

    def _write(self, state: MemoryState, z: torch.Tensor, w: torch.Tensor) -> MemoryState:
        R, U = state
        T = z.shape[1]
        if T == 1:
            R, U = write_one(state, z, w, self.obs_noise_var)
        else:
            Delta = z - w @ R  # prediction error, KM eq. 9 [B, T, C]
            Sigma_c = w @ U  # cross-covariance of Z and M, KM eq. 9 [B, T, K]
            eye = torch.eye(T, dtype=z.dtype, device=z.device)
            Sigma_z = Sigma_c @ w.transpose(-1, -2) + self.obs_noise_var * eye  # KM eq. 10 [B, T, T]
            gain = torch.cholesky_solve(Sigma_c, safe_cholesky(Sigma_z))  # Σz⁻¹ Σc [B, T, K]
            R = R + gain.transpose(-1, -2) @ Delta  # KM eq. 9 [B, K, C]
            U = symmetrize(U - Sigma_c.transpose(-1, -2) @ gain)  # KM eq. 11 [B, K, K]
        floor = torch.finfo(U.dtype).eps
        U = torch.diagonal_scatter(U, U.diagonal(dim1=-2, dim2=-1).clamp_min(floor), dim1=-2, dim2=-1)
        return MemoryState(R, U)

    # ----------------------------------------------------------------------------------------
    # Validation
    # ----------------------------------------------------------------------------------------
    def _check_state(self, state: MemoryState) -> None:
        if not isinstance(state, MemoryState):
            raise TypeError(f"state must be a MemoryState, got {type(state).__name__}")
        R, U = state
        K, C = self.num_slots, self.code_size
        if R.dim() != 3 or R.shape[1:] != (K, C):
            raise ValueError(f"state.mean must have shape [B, {K}, {C}], got {tuple(R.shape)}")
        if U.shape != (R.shape[0], K, K):
            raise ValueError(f"state.cov must have shape [{R.shape[0]}, {K}, {K}], got {tuple(U.shape)}")

    def _check_codes(self, name: str, z: torch.Tensor, state: MemoryState) -> None:
        self._check_items(name, z, state, self.code_size, "C")

    def _check_weights(self, name: str, w: torch.Tensor, state: MemoryState) -> None:
        self._check_items(name, w, state, self.num_slots, "K")

    @staticmethod
    def _check_items(name: str, x: torch.Tensor, state: MemoryState, last: int, last_name: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        B = state.batch_size
        if x.dim() != 3 or x.shape[0] != B or x.shape[2] != last:
            raise ValueError(f"{name} must have shape [B={B}, T, {last_name}={last}], got {tuple(x.shape)}")
        if x.dtype != state.mean.dtype:
            raise ValueError(f"{name} must have the memory's dtype {state.mean.dtype}, got {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} holds NaN or inf values")

    @staticmethod
    def _check_factor(factor: torch.Tensor, state: MemoryState) -> None:
        expected = (state.batch_size, state.num_slots, state.num_slots)
        if factor.shape != expected:
            raise ValueError(f"factor must have shape {list(expected)}, got {tuple(factor.shape)}")
