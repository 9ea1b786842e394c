"""Observation models ``p(x | z)``: the decoder outputs their parameters, one per input element.

``params`` and ``x`` are ``[N, *event_shape]``; ``log_prob`` sums over the event dimensions and
returns ``[N]`` in nats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Likelihood",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "DiscretisedLogisticLikelihood",
    "make_likelihood",
    "LIKELIHOODS",
]


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


class DiscretisedLogisticLikelihood(Likelihood):
    """8-bit frames: each element is one of 256 levels ``k / 255`` of ``[0, 1]``.

    The probability of a level is the mass of a logistic with the decoder's output as location
    ``μ`` and one learned scale ``s`` over the level's bin of width ``1/255``; the two end bins
    reach to ``±∞``, so the 256 masses sum to 1 (as in PixelCNN++, with one scale). Unlike a
    density, it cannot collapse on quantised data: ``ln p <= 0`` and bits/dim are comparable
    across models.
    """

    levels = 256

    def __init__(self, init_scale: float = 0.05) -> None:
        super().__init__()
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    @property
    def scale(self) -> torch.Tensor:
        return torch.exp(self.log_scale)

    def _log_masses(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``ln P(x)`` per element, for ``x`` on the grid ``k / 255``."""
        half_bin = 0.5 / (self.levels - 1)
        inv_scale = torch.exp(-self.log_scale)
        upper = (x + half_bin - params) * inv_scale  # logistic CDF arguments at the bin's edges
        lower = (x - half_bin - params) * inv_scale
        # σ(u) − σ(l) = σ(u) (1 − σ(l)) (1 − e^(l−u)); l − u = −(1/255)/s is the same for every bin.
        log_width = torch.log(-torch.expm1(-2 * half_bin * inv_scale))
        interior = F.logsigmoid(upper) - F.softplus(lower) + log_width
        first = F.logsigmoid(upper)  # P(x <= 0.5/255)
        last = -F.softplus(lower)  # P(x > 1 - 0.5/255)
        return torch.where(x < half_bin, first, torch.where(x > 1 - half_bin, last, interior))

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self._log_masses(params, x).flatten(1).sum(1)

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        """The level nearest the location ``μ`` (clamped to ``[0, 1]``): the most probable of the 254
        interior levels, whose bins all have width 1/255.

        The two end bins also collect the logistic's tails, so with a wide scale they can hold more
        mass than the level at ``μ``; taking them would push attractor iterates (DKM §3.5) towards
        black and white frames, which is why the mode used here is that of the logistic itself.
        """
        top = self.levels - 1
        return torch.round(params.clamp(0, 1) * top) / top

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """``E[x] = Σ_k P(x >= k/255) / 255`` (exact, one pass per level: meant for pictures)."""
        top = self.levels - 1
        half_bin = 0.5 / top
        inv_scale = torch.exp(-self.log_scale)
        total = torch.zeros_like(params)
        for k in range(1, self.levels):
            total = total + torch.sigmoid((params - (k / top - half_bin)) * inv_scale)
        return total / top


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "logistic": DiscretisedLogisticLikelihood,
}


def make_likelihood(name: str) -> Likelihood:
    """The likelihood called ``name``: ``"bernoulli"``, ``"gaussian"`` or ``"logistic"`` (discretised, 8-bit frames)."""
    if name not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {sorted(LIKELIHOODS)}, got {name!r}")
    return LIKELIHOODS[name]()
