"""The Kanerva++ memory: a latent grid written as the mean of per-item terms, read through key-addressed windows.

Shapes: ``B`` memories ``M [B, D, H, W]`` (D channels on an H x W grid), codes ``z [B, T, C]``, read
keys ``Y [B, T, 3]``, read windows ``[B*T, D, h, w]``. The model around it, and which of its parts are
the paper's and which ours: :mod:`episodic_memory.models.kpp`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LatentBlockMemory", "LatentMemoryState", "read_window"]

_MIN_STD = 1e-4


class LatentMemoryState(NamedTuple):
    """B written memories: ``memory [B, D, H, W]`` and how many frames each holds, ``count [B]``."""

    memory: torch.Tensor
    count: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.memory.shape[0]


def read_window(memory: torch.Tensor, key: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear read of the block a key points at: ``memory [B, D, H, W]``, ``key [B, T, 3] -> [B*T, D, h, w]``.

    ``key = (t_x, t_y, s)``: centre ``(tanh t_x, tanh t_y)`` in ``[−1, 1]²`` (``align_corners=True``: −1 and 1
    are the centres of the corner cells) and side ``sigmoid(s)`` of the memory's.
    """
    B, T = key.shape[:2]
    scale = torch.sigmoid(key[..., 2])  # [B, T]
    zero = torch.zeros_like(scale)
    theta = torch.stack(
        [torch.stack([scale, zero, torch.tanh(key[..., 0])], -1), torch.stack([zero, scale, torch.tanh(key[..., 1])], -1)], -2
    ).flatten(0, 1)  # [B*T, 2, 3]
    D = memory.shape[1]
    grid = F.affine_grid(theta, [B * T, D, *size], align_corners=True)  # [B*T, h, w, 2]
    source = memory.repeat_interleave(T, dim=0)  # [B*T, D, H, W]
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True)


class LatentBlockMemory(nn.Module):
    """The K++ memory: written as the mean of ``g(z)`` over the episode, read through key windows into ``p(Z | M, Y)``.

    :param code_size: C; :param channels: D; :param grid: ``(H, W)``, the memory grid;
    :param window: h = w, the read window's grid; :param hidden_size: width of g and of the prior's MLP.
    """

    def __init__(self, code_size: int, channels: int, grid: tuple[int, int], window: int, hidden_size: int) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("height", grid[0]), ("width", grid[1]), ("window", window)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.code_size, self.channels, self.grid, self.window = code_size, channels, tuple(grid), window
        self.writer = nn.Sequential(
            nn.Linear(code_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, channels * grid[0] * grid[1])
        )  # g
        self.prior_net = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * window * window, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 2 * code_size)
        )  # p(Z | M, Y)

    @property
    def num_slots(self) -> int:
        """H W, the memory's cells."""
        return self.grid[0] * self.grid[1]

    @property
    def floats(self) -> int:
        """D H W, the numbers one memory holds."""
        return self.channels * self.num_slots

    def contributions(self, z: torch.Tensor) -> torch.Tensor:
        """``g(z)``: codes ``[..., C]`` -> memory-shaped terms ``[..., D, H, W]``."""
        return self.writer(z).unflatten(-1, (self.channels, *self.grid))

    def write(self, z: torch.Tensor) -> LatentMemoryState:
        """Fresh memories of episodes of codes ``z [B, T, C]``: ``M = mean_t g(z_t)``."""
        count = torch.full((z.shape[0],), z.shape[1], dtype=z.dtype, device=z.device)
        return LatentMemoryState(self.contributions(z).mean(1), count)

    def prior(self, state: LatentMemoryState, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``p(Z | M, Y)`` at keys ``[B, T, 3]``: mean and std ``[B, T, C]``."""
        B, T = key.shape[:2]
        window = read_window(state.memory, key, (self.window, self.window))  # [B*T, D, h, w]
        mean, raw_std = self.prior_net(window).view(B, T, 2 * self.code_size).chunk(2, -1)
        return mean, _MIN_STD + F.softplus(raw_std)
