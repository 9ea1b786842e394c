"""Frames collected by :func:`episodic_memory.envs.collect.collect`, loaded in memory, and episodes sampled from them.

Shape convention (every tensor in this module):

- ``L``: layouts (mazes) in the split; ``S``: frames collected per layout (``steps_per_layout``);
- ``B``: episodes in a batch; ``T``: frames per episode (``episode_length``);
- ``H, W``: frame height and width in pixels; frames are RGB ``uint8 [H, W, 3]`` (maze frames), or
  of the ``frame_shape`` and dtype in the manifest for other envs' observations (e.g. float32 ``[D]``).

The train/test split is by layout, so test mazes are never seen in training. It depends only
on the layout id, not on the order of collection: a layout is in ``test`` iff
``zlib.crc32(layout_id.encode()) % 10_000 < test_fraction * 10_000``.

Example::

    dataset = FrameDataset("data/frames", split="train")
    x = dataset.sample(batch_size=16, episode_length=32, mode="layouts=2")   # uint8 [16, 32, H, W, 3]
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from episodic_memory.envs.shards import COLLECT_HINT, load_shard, read_manifest

__all__ = ["SPLITS", "FrameDataset", "is_test_layout", "parse_mode"]

SPLITS: tuple[str, ...] = ("train", "test", "all")
"""Valid values of the ``split`` argument of :class:`FrameDataset`."""

_LAYOUTS_MODE = re.compile(r"layouts=([0-9]+)")


def is_test_layout(layout_id: str, test_fraction: float) -> bool:
    """Whether the layout ``layout_id`` is in the test split: ``crc32(layout_id) % 10_000 < test_fraction * 10_000``."""
    return zlib.crc32(layout_id.encode()) % 10_000 < test_fraction * 10_000


def parse_mode(mode: str) -> int | None:
    """The number of layouts per episode of a sampling ``mode``: ``None`` for ``"mixed"``, n for ``"layouts=n"``.

    :raises ValueError: ``mode`` is neither ``"mixed"`` nor ``"layouts=n"`` with n a positive int.
    """
    if mode == "mixed":
        return None
    match = _LAYOUTS_MODE.fullmatch(mode) if isinstance(mode, str) else None
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"mode must be 'mixed' or 'layouts=n' with n a positive int (e.g. 'layouts=2'), actual value: {mode!r}")
    return int(match.group(1))


class FrameDataset:
    """The frames of one split of a dataset directory, all in memory as ``frames uint8 [L, S, H, W, 3]``.

    :param root: a directory written by :func:`episodic_memory.envs.collect.collect`.
    :param split: ``"train"``, ``"test"`` or ``"all"`` (see the module docstring for the rule).
    :param test_fraction: expected fraction of layouts in ``test``, in ``[0, 1]``.
    :raises FileNotFoundError: ``root`` does not exist.
    :raises ValueError: ``root`` has no manifest or no shards, a listed shard is missing or
        corrupted, or the split has no layout.

    Attributes: ``root``, ``split``, ``test_fraction``, ``view``, ``frame_shape`` ``(H, W, 3)`` (or the
    observations' ``(D,)``), ``dtype`` (``"uint8"``, or ``"float32"`` for encoded observations),
    ``observation_encoding`` (the manifest's :class:`~episodic_memory.models.observations.ObservationEncoding`
    config, None for datasets collected before it was recorded),
    ``steps_per_layout`` S, ``layout_ids`` (L ids, in the order of ``frames``), ``num_layouts`` L,
    ``num_frames`` ``L * S`` and ``frames`` ``uint8 [L, S, H, W, 3]``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: Literal["train", "test", "all"] = "train",
        test_fraction: float = 0.1,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, actual value: {split!r}")
        if not isinstance(test_fraction, (int, float)) or not 0.0 <= test_fraction <= 1.0:
            raise ValueError(f"test_fraction must be in [0, 1], actual value: {test_fraction!r}")
        self.root = Path(root)
        self.split = split
        self.test_fraction = float(test_fraction)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"no frame dataset at {self.root}: the directory does not exist; collect one with `{COLLECT_HINT}`"
            )
        manifest = read_manifest(self.root)
        if manifest is None or not manifest.get("shards"):
            missing = "no manifest.json" if manifest is None else "no shards"
            raise ValueError(f"{self.root} is not a frame dataset ({missing}); collect one with `{COLLECT_HINT}`")
        self.view: str = manifest["view"]
        self.frame_shape: tuple[int, ...] = tuple(manifest["frame_shape"])
        self.dtype: str = manifest.get("dtype", "uint8")
        self.observation_encoding: dict | None = manifest.get("observation_encoding")
        self.steps_per_layout: int = manifest["steps_per_layout"]
        chunks: list[np.ndarray] = []
        self.layout_ids: list[str] = []
        for shard in manifest["shards"]:
            ids = shard["layout_ids"]
            frames = load_shard(self.root / shard["file"], ids, (self.steps_per_layout, *self.frame_shape), self.dtype)
            keep = [k for k, lid in enumerate(ids) if split == "all" or is_test_layout(lid, test_fraction) == (split == "test")]
            chunks.append(frames[keep])  # [n, S, H, W, 3]
            self.layout_ids.extend(ids[k] for k in keep)
        if not self.layout_ids:
            total = sum(len(shard["layout_ids"]) for shard in manifest["shards"])
            raise ValueError(
                f"the {split!r} split of {self.root} is empty: none of its {total} layouts falls in it with "
                f"test_fraction={test_fraction!r}; change test_fraction or collect more layouts"
            )
        self.frames: torch.Tensor = torch.from_numpy(np.concatenate(chunks))  # [L, S, H, W, 3]
        self.num_layouts: int = len(self.layout_ids)
        self.num_frames: int = self.num_layouts * self.steps_per_layout

    def sample(
        self,
        batch_size: int,
        episode_length: int,
        mode: str = "mixed",
        rng: np.random.Generator | None = None,
    ) -> torch.Tensor:
        """Sample B episodes of T frames each, ``uint8 [B, T, H, W, 3]``; frames are in no particular order.

        - ``mode="mixed"``: each frame from a layout drawn uniformly at random (and a frame of it
          drawn uniformly), so an episode rarely repeats a maze: the least redundant case.
        - ``mode="layouts=n"``: each episode first draws n distinct layouts, then its T frames
          uniformly from their ``n * S`` frames, without replacement unless ``T > n * S``.

        :param batch_size: B, a positive int.
        :param episode_length: T, a positive int.
        :param mode: ``"mixed"`` or ``"layouts=n"``, n a positive int at most :attr:`num_layouts`.
        :param rng: the source of randomness; ``None`` means a fresh ``numpy.random.default_rng()``.
            The same seeded generator gives the same episodes.
        """
        for name, value in (("batch_size", batch_size), ("episode_length", episode_length)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, actual value: {value!r}")
        n = parse_mode(mode)
        if rng is None:
            rng = np.random.default_rng()
        L, S = self.num_layouts, self.steps_per_layout
        if n is None:
            layouts = rng.integers(L, size=(batch_size, episode_length))  # [B, T]
            steps = rng.integers(S, size=(batch_size, episode_length))  # [B, T]
        else:
            if n > L:
                raise ValueError(f"mode {mode!r} asks for {n} layouts per episode, but the {self.split!r} split has only {L}")
            layouts = np.empty((batch_size, episode_length), dtype=np.int64)  # [B, T]
            steps = np.empty((batch_size, episode_length), dtype=np.int64)  # [B, T]
            for b in range(batch_size):
                chosen = rng.choice(L, size=n, replace=False)  # [n]
                picks = rng.choice(n * S, size=episode_length, replace=episode_length > n * S)  # [T], into the n*S frames
                layouts[b] = chosen[picks // S]
                steps[b] = picks % S
        return self.frames[torch.from_numpy(layouts), torch.from_numpy(steps)]  # [B, T, H, W, 3]
