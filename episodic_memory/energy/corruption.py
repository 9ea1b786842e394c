"""Distortion models x -> x̃ for meta-training and testing an energy-based memory (EBMM eq. 2's ``x̃``).

Shapes: patterns ``x [B, N, D]`` (vectors) or frames ``[B, N, C, H, W]``; every corruption returns the
distorted copy (same shape and dtype) and a bool mask of the entries it left as they were, or None where
it does not know which (noise on every entry). A read may hold the known entries (:meth:`EnergyMemory.read`).

- ``entries``: ``amount`` entries of each pattern (a random subset of its last axis) replaced by fresh
  values drawn uniformly from ``{low, high}`` (±1 patterns: about half of them end up flipped);
- ``block``: frames only, a random ``amount x amount`` square of each frame set to ``fill`` (the EBMM
  paper's 16 x 16 blocks on 32 x 32 images); vectors of a square number of entries are laid out as squares;
- ``salt-and-pepper``: each entry independently, with probability ``amount``, set to ``low`` or ``high``;
- ``gaussian``: ``N(0, amount²)`` noise added to every entry, then clipped to ``[low, high]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["CORRUPTION_KINDS", "Corrupter", "CorruptionKind"]

CorruptionKind = Literal["entries", "block", "salt-and-pepper", "gaussian"]
CORRUPTION_KINDS: tuple[CorruptionKind, ...] = ("entries", "block", "salt-and-pepper", "gaussian")


@dataclass(frozen=True)
class Corrupter:
    """One distortion model, callable on a batch: ``corrupter(x) -> (x̃, known or None)``.

    :param kind: one of :data:`CORRUPTION_KINDS` (module docstring).
    :param amount: entries (``entries``), block side (``block``), probability (``salt-and-pepper``) or
        noise standard deviation (``gaussian``).
    :param low: the smallest value of an entry (``-1`` for ±1 patterns, ``0`` for pixels in [0, 1]).
    :param high: the largest.
    :param fill: the value of a block's entries (``block``).
    :param generator: the random numbers' source; None uses torch's global one.
    """

    kind: CorruptionKind
    amount: float
    low: float = -1.0
    high: float = 1.0
    fill: float = 0.0
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.kind not in CORRUPTION_KINDS:
            raise ValueError(f"kind must be one of {list(CORRUPTION_KINDS)}, actual value: {self.kind!r}")
        if not (isinstance(self.amount, (int, float)) and math.isfinite(self.amount) and self.amount >= 0):
            raise ValueError(f"amount must be a finite number >= 0, actual value: {self.amount!r}")
        if self.kind in ("entries", "block") and float(self.amount) != int(self.amount):
            raise ValueError(f"a {self.kind} corruption's amount is a whole number of entries, actual value: {self.amount!r}")
        if self.kind == "salt-and-pepper" and self.amount > 1:
            raise ValueError(f"a salt-and-pepper probability lies in [0, 1], actual value: {self.amount!r}")
        if not self.low < self.high:
            raise ValueError(f"low must be below high, actual values: {self.low!r}, {self.high!r}")

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x [B, N, D]`` or ``[B, N, C, H, W]`` -> (x̃ of the same shape, known entries (bool) or None)."""
        if not isinstance(x, torch.Tensor) or x.dim() not in (3, 5) or not x.dtype.is_floating_point:
            raise ValueError(f"x must be a float tensor [B, N, D] or [B, N, C, H, W], actual: {getattr(x, 'shape', type(x))}")
        if self.kind == "entries":
            return self._entries(x)
        if self.kind == "block":
            return self._block(x)
        if self.kind == "salt-and-pepper":
            hit = self._uniform(x.shape, x.device) < self.amount
            value = torch.where(self._uniform(x.shape, x.device) < 0.5, self.low, self.high).to(x.dtype)
            return torch.where(hit, value, x), None
        noise = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype) * self.amount
        return (x + noise).clamp(self.low, self.high), None

    def _uniform(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=device)

    def _entries(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = int(self.amount)
        flat = x.flatten(2)  # [B, N, D]
        if count > flat.shape[-1]:
            raise ValueError(f"cannot corrupt {count} entries of patterns of {flat.shape[-1]}")
        order = self._uniform(flat.shape, x.device).argsort(-1)  # a random permutation of the entries per pattern
        known = order >= count  # [B, N, D]
        coin = torch.randint(0, 2, flat.shape, generator=self.generator).to(x.device)  # [B, N, D]
        value = torch.where(coin == 1, self.high, self.low).to(x.dtype)
        return torch.where(known, flat, value).view_as(x), known.view(x.shape)

    def _block(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = x
        if x.dim() == 3:
            side = math.isqrt(x.shape[-1])
            if side * side != x.shape[-1]:
                raise ValueError(f"a block corruption needs frames or square vectors, actual pattern size {x.shape[-1]}")
            frames = x.view(*x.shape[:2], 1, side, side)  # [B, N, 1, side, side]
        B, N, _, H, W = frames.shape
        size = int(self.amount)
        if size > min(H, W):
            raise ValueError(f"a {size} x {size} block does not fit frames of {H} x {W}")
        top = torch.randint(0, H - size + 1, (B, N), generator=self.generator).to(x.device)  # [B, N]
        left = torch.randint(0, W - size + 1, (B, N), generator=self.generator).to(x.device)
        rows = torch.arange(H, device=x.device).view(1, 1, H, 1)
        cols = torch.arange(W, device=x.device).view(1, 1, 1, W)
        inside = (rows >= top[..., None, None]) & (rows < top[..., None, None] + size)
        inside = inside & (cols >= left[..., None, None]) & (cols < left[..., None, None] + size)  # [B, N, H, W]
        known = ~inside[:, :, None].expand_as(frames)  # [B, N, C, H, W]
        distorted = torch.where(known, frames, torch.full_like(frames, self.fill))
        return distorted.view_as(x), known.reshape(x.shape)
