"""Input layout of a generative memory: what the user feeds, what the networks see.

Users give episodes ``x [B, T, *input_shape]``: flat vectors ``[D]``, or images channels-last
``[H, W, C]`` (Gymnasium's convention) or channels-first ``[C, H, W]`` (PyTorch's). uint8 images
are scaled to ``[0, 1]``; floating inputs are taken as they are. The networks always see float
``[N, C, H, W]`` images or ``[N, D]`` vectors (``model_shape``).

Images of another height and width (same channel count, same channel order) are resized to the
machine's ``H x W`` after scaling, by the machine's ``resize`` mode (saved in its config):

- ``"area"`` (default): ``F.interpolate(x, (H, W), mode="area")``, each output pixel the mean of
  the input pixels under it (exact block means for integer factors; the resize :mod:`episodic_memory.envs.mazes`
  makes its frames with, less its rounding to uint8); enlarging gives a blocky image;
- ``"bilinear"``: ``F.interpolate(x, (H, W), mode="bilinear", align_corners=False, antialias=True)``,
  a triangle filter as wide as the scale factor when shrinking, bilinear when enlarging;
- ``"none"``: frames must have the machine's size exactly.

Both modes average pixels with non-negative weights, so resized frames stay in the input's range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["ChannelOrder", "InputSpec", "RESIZE_MODES", "ResizeMode"]

ChannelOrder = Literal["auto", "hwc", "chw"]
ResizeMode = Literal["area", "bilinear", "none"]
RESIZE_MODES: tuple[ResizeMode, ...] = ("area", "bilinear", "none")
_CHANNEL_COUNTS = (1, 2, 3, 4)


@dataclass(frozen=True)
class InputSpec:
    """The shape and layout of one input frame.

    :param shape: one frame as the model reads it, ``(D,)``, ``(H, W, C)`` or ``(C, H, W)``.
    :param channels_last: True for ``(H, W, C)``, False for ``(C, H, W)``, None for flat vectors.
    :param resize: how image frames of another height and width are brought to ``H x W``
        (see the module docstring); vectors are never resized.
    """

    shape: tuple[int, ...]
    channels_last: bool | None
    resize: ResizeMode = "area"

    @classmethod
    def from_shape(
        cls, shape: tuple[int, ...] | list[int], channel_order: ChannelOrder = "auto", resize: ResizeMode = "area"
    ) -> InputSpec:
        """Build the spec of frames of ``shape``; ``channel_order="auto"`` takes the end of size <= 4 as channels.

        :raises ValueError: for a rank other than 1 or 3, non-positive sizes, an image shape whose
            channel axis cannot be told apart (pass ``channel_order="hwc"`` or ``"chw"``), or an
            unknown ``resize`` mode.
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (1, 3) or any(s < 1 for s in shape):
            raise ValueError(f"input_shape must be (D,) for vectors or (H, W, C) / (C, H, W) for images, got {shape!r}")
        if channel_order not in ("auto", "hwc", "chw"):
            raise ValueError(f"channel_order must be 'auto', 'hwc' or 'chw', got {channel_order!r}")
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {list(RESIZE_MODES)}, got {resize!r}")
        if len(shape) == 1:
            return cls(shape, None, resize)
        if channel_order != "auto":
            return cls(shape, channel_order == "hwc", resize)
        first, last = shape[0] in _CHANNEL_COUNTS, shape[-1] in _CHANNEL_COUNTS
        if first == last:
            raise ValueError(f"cannot tell the channel axis of input_shape {shape!r}: pass channel_order='hwc' or 'chw'")
        return cls(shape, last, resize)

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

    @property
    def accepted_shape(self) -> str:
        """The frame shapes this spec reads, as text: ``"12"``, ``"16, 16, 3"`` or ``"H, W, 3"`` when it resizes."""
        if not self.is_image or self.resize == "none":
            return ", ".join(map(str, self.shape))
        C = self.model_shape[0]
        return f"H, W, {C}" if self.channels_last else f"{C}, H, W"

    def mismatch(self, frame_shape: tuple[int, ...]) -> str | None:
        """Why frames of ``frame_shape`` cannot be read (None when they can: the same shape, or resizable).

        Image frames of another height and width can be read unless ``resize="none"``; their rank,
        channel count and channel order must be the machine's.
        """
        frame_shape = tuple(int(s) for s in frame_shape)
        if frame_shape == self.shape:
            return None
        if not self.is_image:
            return f"frames of shape {frame_shape} are not the machine's vectors of shape {self.shape} (vectors never resize)"
        if len(frame_shape) != 3 or min(frame_shape) < 1:
            return f"frames of shape {frame_shape} are not images like the machine's frames of shape {self.shape}"
        C = self.model_shape[0]
        channels = frame_shape[-1] if self.channels_last else frame_shape[0]
        order = "last" if self.channels_last else "first"
        if channels != C:
            return (
                f"frames of shape {frame_shape} have {channels} channels (channels {order}), "
                f"the machine's frames of shape {self.shape} have {C}"
            )
        if self.resize == "none":
            return f"frames of shape {frame_shape} are not the machine's {self.shape}, and it does not resize (resize='none')"
        return None

    def to_model(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``[N, *frame_shape]`` (uint8 or float) -> float ``[N, *model_shape]`` of ``dtype``.

        Frames are scaled (uint8 to ``[0, 1]``), put channels first, then resized to the
        machine's height and width when theirs differ (the caller checks :meth:`mismatch` first).
        """
        x = x.to(dtype) / 255.0 if x.dtype == torch.uint8 else x.to(dtype)
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)  # [N, h, w, C] -> [N, C, h, w]
        if self.is_image and tuple(x.shape[-2:]) != self.model_shape[-2:]:
            x = self._resize(x)  # [N, C, h, w] -> [N, C, H, W]
        return x

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """Model-layout frames ``[N, C, h, w]`` -> ``[N, C, H, W]`` by the ``resize`` mode."""
        size = self.model_shape[-2:]
        if self.resize == "bilinear":
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        if self.resize == "area":
            return F.interpolate(x, size=size, mode="area")
        raise ValueError(f"frames of height and width {tuple(x.shape[-2:])} are not {size} and resize='none'")

    def from_model(self, x: torch.Tensor) -> torch.Tensor:
        """float ``[N, *model_shape]`` -> float ``[N, *shape]``."""
        if self.channels_last:
            x = x.permute(0, 2, 3, 1)  # [N, C, H, W] -> [N, H, W, C]
        return x
