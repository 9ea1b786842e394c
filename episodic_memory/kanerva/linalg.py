"""Batched linear algebra for symmetric positive-definite (SPD) systems.

Shapes: ``A`` is ``[..., N, N]`` (any number of leading batch dimensions). The Cholesky factor
``L`` (lower triangular, ``A = L L^T``) is the one canonical factor: solves reuse it
(``torch.cholesky_solve``) instead of inverting ``A``.
"""

from __future__ import annotations

import torch

__all__ = ["safe_cholesky", "symmetrize"]

_JITTERS = (1e-6, 1e-5, 1e-4, 1e-3)


def symmetrize(A: torch.Tensor) -> torch.Tensor:
    """Return ``(A + A^T) / 2`` for ``A [..., N, N]``."""
    return 0.5 * (A + A.transpose(-1, -2))


def safe_cholesky(A: torch.Tensor) -> torch.Tensor:
    """Cholesky factor ``L [..., N, N]`` of an SPD matrix ``A [..., N, N]``.

    Tries the plain factorisation in ``A``'s dtype first. When rounding makes a matrix
    numerically indefinite (float32 after many updates), it retries in float64, then adds
    a growing jitter ``eps * mean(diag(A)) * I`` to the failed matrices only. The result has
    ``A``'s dtype.

    :raises ValueError: if ``A`` holds NaN/inf, or stays indefinite with the largest jitter.
    """
    L, info = torch.linalg.cholesky_ex(A)
    if not bool(info.any()):
        return L
    if not bool(torch.isfinite(A).all()):
        raise ValueError("safe_cholesky: the matrix holds NaN or inf values")
    A64 = A.to(torch.float64)
    L64, info = torch.linalg.cholesky_ex(A64)
    eye = torch.eye(A.shape[-1], dtype=torch.float64, device=A.device)
    scale = A64.diagonal(dim1=-2, dim2=-1).abs().mean(-1, keepdim=True).clamp_min(1e-12)
    for eps in _JITTERS:
        if not bool(info.any()):
            return L64.to(A.dtype)
        failed = (info > 0)[..., None, None]
        jittered = A64 + (eps * scale)[..., None] * eye
        L_retry, info_retry = torch.linalg.cholesky_ex(jittered)
        L64 = torch.where(failed, L_retry, L64)
        info = torch.where(info > 0, info_retry, info)
    if bool(info.any()):
        raise ValueError(
            f"safe_cholesky: the matrix is not positive definite even with a jitter of {_JITTERS[-1]} times its mean diagonal"
        )
    return L64.to(A.dtype)
