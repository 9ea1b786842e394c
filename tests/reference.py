"""Dense reference computations the memory math is checked against (small float64 cases only)."""

from __future__ import annotations

import torch
from torch.distributions import MultivariateNormal, kl_divergence

from episodic_memory import MemoryState


def vec(M: torch.Tensor) -> torch.Tensor:
    """Column-stacking vec of [K, C] -> [K*C] (vec(M) has covariance I_C ⊗ U)."""
    return M.transpose(-1, -2).reshape(-1)


def dense_memory_kl(q: MemoryState, p: MemoryState) -> torch.Tensor:
    """KL(q(M) || p(M)) per memory ``[B]``, as the Gaussian KL of vec(M) with covariances I_C ⊗ U."""
    eye = torch.eye(q.code_size, dtype=q.mean.dtype)
    return torch.stack(
        [
            kl_divergence(
                MultivariateNormal(vec(q.mean[b]), torch.kron(eye, q.cov[b])),
                MultivariateNormal(vec(p.mean[b]), torch.kron(eye, p.cov[b])),
            )
            for b in range(q.batch_size)
        ]
    )
