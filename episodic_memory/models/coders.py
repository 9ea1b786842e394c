"""Encoders ``x -> features`` and decoders ``z -> likelihood parameters``.

Images are ``[N, C, H, W]`` floats, vectors ``[N, D]``. The convolutional pair follows KM App. C:
blocks of a 4x4 stride-2 convolution followed by a basic ResNet block, all with the same number of
filters, then a linear projection; the decoder mirrors it with transposed convolutions. Blocks
stop halving once the feature map is smaller than 8 pixels (they use 3x3 stride-1 convolutions
instead), so 7x7 MiniGrid views work as well as 64x64 frames.
"""

from __future__ import annotations

import torch
from torch import nn

from episodic_memory.models.preprocessing import InputSpec

__all__ = ["ConvEncoder", "ConvDecoder", "MLPEncoder", "MLPDecoder", "build_coders", "conv_plan"]


def conv_plan(height: int, width: int, num_blocks: int) -> list[tuple[int, int, int]]:
    """Per block ``(stride, height_out, width_out)``: stride 2 while both sides are >= 8, else 1."""
    plan = []
    for _ in range(num_blocks):
        stride = 2 if min(height, width) >= 8 else 1
        height, width = (height // 2, width // 2) if stride == 2 else (height, width)
        plan.append((stride, height, width))
    return plan


class ResBlock(nn.Module):
    """Basic ResNet block without bottleneck: ``x + conv(relu(conv(relu(x))))``, shape-preserving."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _down(in_channels: int, out_channels: int, stride: int) -> nn.Conv2d:
    if stride == 2:
        return nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1)  # H -> floor(H / 2)
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


def _up(in_channels: int, out_channels: int, stride: int, out_size: tuple[int, int], in_size: tuple[int, int]) -> nn.Module:
    if stride == 2:
        padding = (out_size[0] - 2 * in_size[0], out_size[1] - 2 * in_size[1])  # 0 or 1: undoes the floor
        return nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, output_padding=padding)
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class ConvEncoder(nn.Module):
    """``[N, C, H, W] -> [N, out_features]``."""

    def __init__(
        self, in_channels: int, height: int, width: int, out_features: int, hidden_channels: int = 32, num_blocks: int = 3
    ) -> None:
        super().__init__()
        plan = conv_plan(height, width, num_blocks)
        layers: list[nn.Module] = []
        channels = in_channels
        for stride, _, _ in plan:
            layers += [_down(channels, hidden_channels, stride), ResBlock(hidden_channels)]
            channels = hidden_channels
        _, h, w = plan[-1]
        self.net = nn.Sequential(*layers, nn.ReLU(), nn.Flatten(), nn.Linear(hidden_channels * h * w, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """``[N, code_size] -> [N, out_channels, H, W]`` (likelihood parameters)."""

    def __init__(
        self, code_size: int, out_channels: int, height: int, width: int, hidden_channels: int = 32, num_blocks: int = 3
    ) -> None:
        super().__init__()
        plan = conv_plan(height, width, num_blocks)
        sizes = [(height, width)] + [(h, w) for _, h, w in plan]  # sizes[i] feeds block i
        _, h, w = plan[-1]
        self.project = nn.Linear(code_size, hidden_channels * h * w)
        self.first_shape = (hidden_channels, h, w)
        layers: list[nn.Module] = []
        for i in reversed(range(num_blocks)):
            stride = plan[i][0]
            out = out_channels if i == 0 else hidden_channels
            layers += [ResBlock(hidden_channels), nn.ReLU(), _up(hidden_channels, out, stride, sizes[i], sizes[i + 1])]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(z.shape[0], *self.first_shape)  # [N, hidden, h, w]
        return self.net(h)


class MLPEncoder(nn.Module):
    """``[N, D] -> [N, out_features]`` with two ReLU hidden layers."""

    def __init__(self, in_features: int, out_features: int, hidden_size: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPDecoder(MLPEncoder):
    """``[N, code_size] -> [N, D]`` (likelihood parameters)."""


def build_coders(
    spec: InputSpec, code_size: int, encoder_features: int, hidden_channels: int, hidden_size: int
) -> tuple[nn.Module, nn.Module]:
    """An encoder ``[N, *model_shape] -> [N, encoder_features]`` and a decoder ``[N, code_size] -> [N, *model_shape]``."""
    if spec.is_image:
        C, H, W = spec.model_shape
        return (
            ConvEncoder(C, H, W, encoder_features, hidden_channels),
            ConvDecoder(code_size, C, H, W, hidden_channels),
        )
    (D,) = spec.model_shape
    return MLPEncoder(D, encoder_features, hidden_size), MLPDecoder(code_size, D, hidden_size)
