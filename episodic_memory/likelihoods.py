"""Observation models ``p(x | z)``: the decoder outputs their parameters, one per input element.

``params`` and ``x`` are ``[N, *event_shape]``; ``log_prob`` sums over the event dimensions and
returns ``[N]`` in nats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Likelihood", "BernoulliLikelihood", "GaussianLikelihood", "make_likelihood", "LIKELIHOODS"]


class Likelihood(nn.Module):
    """A factorised likelihood over the elements of one frame."""

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``ln p(x | params)`` summed over each frame: ``[N, ...] -> [N]``."""
        raise NotImplementedError

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        """The most probable frame, ``[N, ...]`` (used by the attractor dynamics, DKM §3.5)."""
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The expected frame, ``[N, ...]`` (used for pictures of reconstructions)."""
        raise NotImplementedError


class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli pixels parametrised by logits, for binary (or [0, 1]) frames."""

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none").flatten(1).sum(1)

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        return (params > 0).to(params.dtype)  # rounded sigmoid

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


class GaussianLikelihood(Likelihood):
    """Independent Gaussian elements with the decoder's output as mean and one learned std.

    ``std = min_std + softplus(s)``: the floor keeps the density from collapsing on quantised data
    (the DKM paper adds uniform noise to frames for the same reason).
    """

    def __init__(self, init_std: float = 0.1, min_std: float = 1.0 / 256) -> None:
        super().__init__()
        if not 0 < min_std < init_std:
            raise ValueError(f"need 0 < min_std < init_std, got min_std={min_std}, init_std={init_std}")
        self.min_std = min_std
        self.raw_std = nn.Parameter(torch.tensor(math.log(math.expm1(init_std - min_std))))

    @property
    def std(self) -> torch.Tensor:
        return self.min_std + F.softplus(self.raw_std)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        std = self.std
        log_density = -0.5 * ((x - params) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)
        return log_density.flatten(1).sum(1)

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        return params

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params


LIKELIHOODS: dict[str, type[Likelihood]] = {"bernoulli": BernoulliLikelihood, "gaussian": GaussianLikelihood}


def make_likelihood(name: str) -> Likelihood:
    """The likelihood called ``name`` (``"bernoulli"`` or ``"gaussian"``)."""
    if name not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {sorted(LIKELIHOODS)}, got {name!r}")
    return LIKELIHOODS[name]()
