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

__all__ = ["LatentBlockMemory", "LatentMemoryState", "WRITE_MODES", "read_window", "window_weights"]

WRITE_MODES = ("pooled", "keyed")

_MIN_STD = 1e-4


class LatentMemoryState(NamedTuple):
    """B written memories: ``memory [B, D, H, W]`` and how much was written, ``count [B]`` frames (pooled writes)
    or ``[B, H, W]``, each cell's total write weight (keyed writes)."""

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


def window_weights(key: torch.Tensor, size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """The bilinear weights of :func:`read_window` as a matrix: keys ``[B, T, 3]`` -> ``A [B*T, h*w, H*W]``.

    Row p holds the weights of window point p over the memory's cells (at most 4 non-zero), so a read is
    ``A M`` and its adjoint ``Aᵀ c`` writes window contents c back onto the cells the window covers.
    """
    B, T = key.shape[:2]
    (h, w), (H, W) = size, grid
    scale = torch.sigmoid(key[..., 2]).reshape(-1, 1)  # [N, 1]

    def cells(centre: torch.Tensor, points: int, cells: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        base = torch.linspace(-1.0, 1.0, points, dtype=key.dtype, device=key.device) if points > 1 else key.new_zeros(1)
        position = ((centre.reshape(-1, 1) + scale * base + 1) / 2 * (cells - 1)).clamp(0, cells - 1)  # [N, points]
        low = position.floor().clamp(max=max(cells - 2, 0))
        return low.long(), (low + 1).clamp(max=cells - 1).long(), position - low  # indices and the upper weight

    r0, r1, fr = cells(torch.tanh(key[..., 1]), h, H)  # [N, h]
    c0, c1, fc = cells(torch.tanh(key[..., 0]), w, W)  # [N, w]
    N = B * T
    A = key.new_zeros(N, h, w, H * W)
    for rows, row_weight in ((r0, 1 - fr), (r1, fr)):
        for cols, col_weight in ((c0, 1 - fc), (c1, fc)):
            index = (rows[:, :, None] * W + cols[:, None, :])[..., None]  # [N, h, w, 1]
            A = A.scatter_add(-1, index, (row_weight[:, :, None] * col_weight[:, None, :])[..., None])
    return A.view(N, h * w, H * W)


class LatentBlockMemory(nn.Module):
    """The K++ memory: written as the mean of ``g(z)`` over the episode, read through key windows into ``p(Z | M, Y)``.

    :param code_size: C; :param channels: D; :param grid: ``(H, W)``, the memory grid;
    :param window: h = w, the read window's grid; :param hidden_size: width of g and of the prior's MLP.
    :param write_mode: ``pooled``: ``M = mean_t g(z_t)``, g giving the whole grid; ``keyed``: each item's
        window contents ``g(z_t) [D, h, w]`` are written where its key points, ``M = Σ_t A_tᵀ g(z_t) / max(Σ_t A_tᵀ 1, 1)``
        per cell (:func:`window_weights`: the adjoint of the read, so an item lands where a read at its key looks).
    """

    def __init__(
        self, code_size: int, channels: int, grid: tuple[int, int], window: int, hidden_size: int, write_mode: str = "pooled"
    ) -> None:
        super().__init__()
        if write_mode not in WRITE_MODES:
            raise ValueError(f"write_mode must be one of {list(WRITE_MODES)}, got {write_mode!r}")
        self.write_mode = write_mode
        for name, value in (("channels", channels), ("height", grid[0]), ("width", grid[1]), ("window", window)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.code_size, self.channels, self.grid, self.window = code_size, channels, tuple(grid), window
        cells = grid[0] * grid[1] if write_mode == "pooled" else window * window
        self.writer = nn.Sequential(nn.Linear(code_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, channels * cells))  # g
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

    def contributions(self, z: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What items ``z [B, T, C]`` with write keys ``[B, T, 3]`` add to a memory: summed over T, ``([B, D, H, W],
        count)`` with count ``[B]`` frames (pooled) or ``[B, H, W]`` cell weights (keyed)."""
        B, T = z.shape[:2]
        if self.write_mode == "pooled":
            terms = self.writer(z).unflatten(-1, (self.channels, *self.grid))  # g(z) [B, T, D, H, W]
            return terms.sum(1), torch.full((B,), float(T), dtype=z.dtype, device=z.device)
        A = window_weights(key, (self.window, self.window), self.grid).view(B, T, -1, self.num_slots)  # [B, T, h*w, H*W]
        content = self.writer(z).view(B, T, self.channels, -1)  # g(z) [B, T, D, h*w]
        total = torch.einsum("btdp,btpc->bdc", content, A).unflatten(-1, self.grid)  # Σ_t A_tᵀ g(z_t) [B, D, H, W]
        return total, A.sum((1, 2)).unflatten(-1, self.grid)  # Σ_t A_tᵀ 1 [B, H, W]

    def memory_of(self, total: torch.Tensor, count: torch.Tensor) -> LatentMemoryState:
        """The memories of written sums: the mean per frame (pooled) or per cell weight, at least 1 (keyed)."""
        scale = count.clamp_min(1.0)
        scale = scale[:, None, None, None] if self.write_mode == "pooled" else scale[:, None]
        return LatentMemoryState(total / scale, count)

    def write(self, z: torch.Tensor, key: torch.Tensor) -> LatentMemoryState:
        """Fresh memories of episodes of codes ``z [B, T, C]`` written at keys ``[B, T, 3]`` (unused when pooled)."""
        return self.memory_of(*self.contributions(z, key))

    def prior(self, state: LatentMemoryState, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``p(Z | M, Y)`` at keys ``[B, T, 3]``: mean and std ``[B, T, C]``."""
        B, T = key.shape[:2]
        window = read_window(state.memory, key, (self.window, self.window))  # [B*T, D, h, w]
        mean, raw_std = self.prior_net(window).view(B, T, 2 * self.code_size).chunk(2, -1)
        return mean, _MIN_STD + F.softplus(raw_std)
