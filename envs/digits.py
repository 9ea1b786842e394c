"""Binarized 8x8 digits as a frame dataset, so that results sit next to the papers' binarized MNIST and Omniglot.

The images are scikit-learn's ``load_digits`` (1,797 handwritten digits, 8x8 pixels of 0..16, part of the
package: no download). A pixel is on when its value is above 8 (half of 16), and frames are ``uint8
[8, 8, 1]`` of 0 or 255, which the models scale to {0, 1} for a Bernoulli likelihood.

The dataset has the format of :mod:`episodic_memory.envs.shards`, so everything that reads collected
maze frames reads it too (``pretrain``, ``evaluate``, the benchmarks). Its "layouts" are groups of
``group_size`` images of one digit, in the order ``load_digits`` lists them (the few images of each digit
left over after its last full group are left out): the train/test split by layout then holds out
whole groups of images, never seen in training, and ``mode="layouts=n"`` episodes draw their frames
from n groups, so from at most n digits. Episodes of T = 32 frames are what the issue asks for
(``pretrain --episode-length 32``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import gymnasium
import numpy as np

from episodic_memory.envs.shards import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    read_manifest,
    shard_name,
    write_json_atomic,
    write_shard,
)
from episodic_memory.models.observations import ObservationEncoding

__all__ = ["DigitsConfig", "binarized_digits", "write_digits"]

THRESHOLD = 8  # of 16: a pixel at least half on is on


@dataclass
class DigitsConfig:
    """Options of ``episodic-memory digits``."""

    out: str = field(default="data/digits", metadata={"help": "dataset directory to write"})
    group_size: int = field(default=16, metadata={"help": "images of one digit per layout (the unit of the train/test split)"})
    seed: int = field(default=0, metadata={"help": "for the common --seed flag: the images and groups are fixed"})

    def __post_init__(self) -> None:
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 1:
            raise ValueError(f"group_size must be a positive int, actual value: {self.group_size!r}")


def binarized_digits() -> tuple[np.ndarray, np.ndarray]:
    """``load_digits`` binarized: frames ``uint8 [N, 8, 8, 1]`` of 0 or 255, and their digits ``int [N]``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    frames = np.where(digits.images > THRESHOLD, 255, 0).astype(np.uint8)[..., None]  # [N, 8, 8, 1]
    return frames, digits.target.astype(np.int64)


def write_digits(config: DigitsConfig) -> Path:
    """Write the binarized digits to ``config.out`` (one shard and the manifest, both atomically); returns the manifest's path.

    Writing again gives the same frames and layouts; a directory that holds another dataset is refused.
    """
    root = Path(config.out)
    manifest_path = root / MANIFEST_NAME
    existing = read_manifest(root) if root.is_dir() else None
    if existing is not None and existing.get("view") != "digits":
        raise ValueError(f"{root} holds another dataset (view {existing.get('view')!r}); write the digits to an empty directory")
    frames, labels = binarized_digits()
    groups, ids = [], []
    for digit in range(10):
        images = frames[labels == digit]  # [n, 8, 8, 1]
        for k in range(len(images) // config.group_size):
            groups.append(images[k * config.group_size : (k + 1) * config.group_size])
            ids.append(f"digits/{digit}-{k:02d}")
    stacked = np.stack(groups)  # [L, group_size, 8, 8, 1]
    root.mkdir(parents=True, exist_ok=True)
    write_shard(root / shard_name(0), stacked, ids)
    encoding = ObservationEncoding.for_space(gymnasium.spaces.Box(0, 255, (8, 8, 1), np.uint8))
    write_json_atomic(
        manifest_path,
        {
            "format_version": FORMAT_VERSION,
            "frame_shape": [8, 8, 1],
            "dtype": "uint8",
            "observation_encoding": encoding.to_config(),
            "steps_per_layout": config.group_size,
            "view": "digits",
            "frame_size": 8,
            "envs": ["digits"],
            "num_layouts": len(ids),
            "num_frames": len(ids) * config.group_size,
            "shards": [
                {"file": shard_name(0), "num_layouts": len(ids), "num_frames": len(ids) * config.group_size, "layout_ids": ids}
            ],
            "config": asdict(config),
        },
    )
    return manifest_path
