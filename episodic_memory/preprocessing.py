"""Input layout of a generative memory: what the user feeds, what the networks see.

Users give episodes ``x [B, T, *input_shape]``: flat vectors ``[D]``, or images channels-last
``[H, W, C]`` (Gymnasium's convention) or channels-first ``[C, H, W]`` (PyTorch's). uint8 images
are scaled to ``[0, 1]``; floating inputs are taken as they are. The networks always see float
``[N, C, H, W]`` images or ``[N, D]`` vectors (``model_shape``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["ChannelOrder", "InputSpec"]

ChannelOrder = Literal["auto", "hwc", "chw"]
_CHANNEL_COUNTS = (1, 2, 3, 4)


@dataclass(frozen=True)
class InputSpec:
    """The shape and layout of one input frame.

    :param shape: one frame as the user gives it, ``(D,)``, ``(H, W, C)`` or ``(C, H, W)``.
    :param channels_last: True for ``(H, W, C)``, False for ``(C, H, W)``, None for flat vectors.
    """

    shape: tuple[int, ...]
    channels_last: bool | None

    @classmethod
    def from_shape(cls, shape: tuple[int, ...] | list[int], channel_order: ChannelOrder = "auto") -> InputSpec:
        """Build the spec of frames of ``shape``; ``channel_order="auto"`` takes the end of size <= 4 as channels.

        :raises ValueError: for a rank other than 1 or 3, non-positive sizes, or an image shape whose
            channel axis cannot be told apart (pass ``channel_order="hwc"`` or ``"chw"``).
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (1, 3) or any(s < 1 for s in shape):
            raise ValueError(f"input_shape must be (D,) for vectors or (H, W, C) / (C, H, W) for images, got {shape!r}")
        if channel_order not in ("auto", "hwc", "chw"):
            raise ValueError(f"channel_order must be 'auto', 'hwc' or 'chw', got {channel_order!r}")
        if len(shape) == 1:
            return cls(shape, None)
        if channel_order != "auto":
            return cls(shape, channel_order == "hwc")
        first, last = shape[0] in _CHANNEL_COUNTS, shape[-1] in _CHANNEL_COUNTS
        if first == last:
            raise ValueError(f"cannot tell the channel axis of input_shape {shape!r}: pass channel_order='hwc' or 'chw'")
        return cls(shape, last)

    @property
    def is_image(self) -> bool:
        return self.channels_last is not None

    @property
    def model_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` for images, ``(D,)`` for vectors."""
        if self.channels_last:
            H, W, C = self.shape
            return (C, H, W)
        return self.shape

    @property
    def channel_order(self) -> ChannelOrder:
        return "auto" if self.channels_last is None else ("hwc" if self.channels_last else "chw")

    def to_model(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``[N, *shape]`` (uint8 or float) -> float ``[N, *model_shape]`` of ``dtype``."""
        x = x.to(dtype) / 255.0 if x.dtype == torch.uint8 else x.to(dtype)
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)  # [N, H, W, C] -> [N, C, H, W]
        return x

    def from_model(self, x: torch.Tensor) -> torch.Tensor:
        """float ``[N, *model_shape]`` -> float ``[N, *shape]``."""
        if self.channels_last:
            x = x.permute(0, 2, 3, 1)  # [N, C, H, W] -> [N, H, W, C]
        return x
