"""The energy network of an EBMM: a scalar energy ``E(x; θ)`` whose writable part θ is one fully connected layer.

Bartunov, Rae, Osindero and Lillicrap, *Meta-Learning Deep Energy-Based Memory Models* (ICLR 2020),
§3: the memory is the parameters θ of an energy network differentiable in both x and θ and bounded
from below in x; writing changes θ, reading descends the energy in x.

Shapes: ``B`` memories, ``N`` patterns per memory, ``D`` the pattern size, ``F`` the features' size,
``H`` the writable layer's width. Patterns ``x [B, N, D]``; the writable parameters
``θ = (W [B, H, F], b [B, H])``, one copy per memory.

The network (our choice: the paper's architectures are in its Appendix B, not in our copy)::

    φ = f(x)                                             # [B, N, F]: fixed features (the identity by default)
    h = W φ + b                                          # [B, N, H]: the writable layer
    E(x; θ) = −(1/κ) log Σⱼ exp(κ hⱼ) + (λ/2)‖x − c‖²     # [B, N]: a soft maximum of h, and a well at c

κ and λ are meta-learned with the initial writable parameters θ̄ = (W̄, b̄) (and f's weights) and are the
same for every memory; c is the middle of the patterns' box (0 for ±1 patterns, ½ for pixels). E is
bounded from below (the paper's requirement) when f grows at most linearly: the soft maximum then grows
linearly in x, the well quadratically. Why this read-out: writing descends E at the stored patterns, whose
gradient in ``Wⱼ`` is ``−softmaxⱼ(κh) φᵀ``, so each pattern pulls the rows that answer it most towards its
features, and reading descends towards the patterns whose features match the rows a query matches (a dense
associative memory whose keys are written by gradient descent). An MLP read-out on ``tanh(Wx + b)``
learned about ten times slower in our trials (after 400 meta-training steps on 16 random 128-bit
patterns: 24.6 error bits against 1.4). A memory holds ``H·F + H`` numbers: ``H = 64`` on 128-bit
patterns is the paper's budget of 8,256.

**Frames** (the paper's convolutional variant, §4.2; the layers are ours): :class:`ConvolutionalFeatures`
is ``f``, a stack of stride-2 convolutions with SiLU (smooth, so the write's second-order and the
meta-gradient's third-order terms do not vanish as ReLU's would) that maps a frame to F features, so that
the read descends the frame's pixels through the convolutions.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ConvolutionalFeatures", "EnergyNetwork", "WritableParameters"]

WritableParameters = tuple[torch.Tensor, torch.Tensor]
"""θ = (W [B, H, F], b [B, H]): the writable layer of B memories."""


class ConvolutionalFeatures(nn.Module):
    """``f``: flattened frames ``[..., C·Hf·Wf]`` -> features ``[..., F]`` by ``layers`` stride-2 convolutions
    (kernel 4, padding 1, ``channels`` each, SiLU between them), flattened; ``F = channels·(Hf/2^layers)·(Wf/2^layers)``.

    :param frame_shape: ``(C, Hf, Wf)``, each side divisible by ``2**layers``.
    """

    def __init__(self, frame_shape: tuple[int, int, int], channels: int = 16, layers: int = 3) -> None:
        super().__init__()
        if len(frame_shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in frame_shape):
            raise ValueError(f"frame_shape must be (C, H, W) of positive ints, actual value: {frame_shape!r}")
        for name, value in (("channels", channels), ("layers", layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, actual value: {value!r}")
        if any(side % 2**layers for side in frame_shape[1:]):
            raise ValueError(f"the frame's sides {frame_shape[1:]} must be divisible by 2**layers = {2**layers}")
        self.frame_shape = tuple(frame_shape)
        convolutions: list[nn.Module] = []
        for i in range(layers):
            convolutions += [nn.Conv2d(frame_shape[0] if i == 0 else channels, channels, 4, stride=2, padding=1), nn.SiLU()]
        self.convolutions = nn.Sequential(*convolutions[:-1])  # no activation after the last: h = W φ + b follows
        self.output_size = channels * (frame_shape[1] >> layers) * (frame_shape[2] >> layers)

    @property
    def input_size(self) -> int:
        return math.prod(self.frame_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.reshape(-1, *self.frame_shape)  # [M, C, Hf, Wf]
        return self.convolutions(frames).flatten(1).view(*x.shape[:-1], self.output_size)  # [..., F]


class EnergyNetwork(nn.Module):
    """``E(x; θ)`` for B memories at once; holds θ̄ (the meta-learned initial θ), κ, λ and the features ``f``.

    :param input_size: D.
    :param writable_size: H, the writable layer's width (a memory holds ``H·F + H`` numbers).
    :param sharpness: initial κ; :param well: initial λ (both meta-learned).
    :param features: ``f`` with an ``output_size`` F (e.g. :class:`ConvolutionalFeatures` for frames); None: the
        identity (F = D).
    :param centre: c, the well's centre.
    """

    def __init__(
        self,
        input_size: int,
        writable_size: int,
        sharpness: float = 1.0,
        well: float = 0.1,
        features: nn.Module | None = None,
        centre: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("writable_size", writable_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, actual value: {value!r}")
        for name, value in (("sharpness", sharpness), ("well", well)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, actual value: {value!r}")
        if features is not None and getattr(features, "input_size", input_size) != input_size:
            raise ValueError(f"the features read patterns of {features.input_size}, not of input_size {input_size}")
        self.input_size, self.writable_size, self.centre = input_size, writable_size, float(centre)
        self.features = features
        feature_size = input_size if features is None else features.output_size
        self.initial_weight = nn.Parameter(torch.randn(writable_size, feature_size) / math.sqrt(feature_size))  # W̄ [H, F]
        self.initial_bias = nn.Parameter(torch.zeros(writable_size))  # b̄ [H]
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(sharpness)))  # log κ
        self.log_well = nn.Parameter(torch.tensor(math.log(well)))  # log λ

    @property
    def writable_floats(self) -> int:
        """Numbers one memory holds: ``H·F + H``."""
        return self.initial_weight.numel() + self.initial_bias.numel()

    def initial(self, batch_size: int) -> WritableParameters:
        """θ̄ for B memories: ``(W̄ [B, H, F], b̄ [B, H])``, expanded views (differentiable in θ̄)."""
        H, F = self.initial_weight.shape
        return self.initial_weight.expand(batch_size, H, F), self.initial_bias.expand(batch_size, H)

    def forward(self, x: torch.Tensor, theta: WritableParameters) -> torch.Tensor:
        """``E(x; θ)``: patterns ``x [B, N, D]`` under memories ``θ`` -> energies ``[B, N]``."""
        W, b = theta
        phi = x if self.features is None else self.features(x)  # [B, N, F]
        h = torch.einsum("bhf,bnf->bnh", W, phi) + b[:, None]  # [B, N, H]
        kappa = self.log_sharpness.exp()
        return -torch.logsumexp(kappa * h, dim=-1) / kappa + 0.5 * self.log_well.exp() * (x - self.centre).pow(2).sum(-1)
