"""safe_cholesky: plain path, float64/jitter fallback for numerically indefinite matrices, clear errors."""

from __future__ import annotations

import pytest
import torch

from episodic_memory.kanerva.linalg import safe_cholesky


def test_factor_of_spd_matrices():
    torch.manual_seed(0)
    A = torch.randn(3, 5, 5, dtype=torch.float64)
    A = A @ A.transpose(-1, -2) + torch.eye(5, dtype=torch.float64)
    L = safe_cholesky(A)
    torch.testing.assert_close(L @ L.transpose(-1, -2), A)


def test_numerically_indefinite_matrix_gets_jitter_only_where_needed():
    good = torch.eye(3)
    v = torch.tensor([1.0, 1.0, 0.0])
    bad = torch.outer(v, v) - 1e-7 * torch.eye(3)  # PSD up to rounding, Cholesky fails
    assert torch.linalg.cholesky_ex(bad)[1] > 0
    L = safe_cholesky(torch.stack([good, bad]))
    assert L.dtype == torch.float32 and torch.isfinite(L).all()
    torch.testing.assert_close(L[0], good)  # untouched
    torch.testing.assert_close(L[1] @ L[1].T, bad, atol=1e-2, rtol=0)


def test_non_finite_matrix():
    with pytest.raises(ValueError, match="NaN or inf"):
        safe_cholesky(torch.full((2, 2), float("nan")))


def test_clearly_indefinite_matrix():
    with pytest.raises(ValueError, match="not positive definite"):
        safe_cholesky(-torch.eye(3))
