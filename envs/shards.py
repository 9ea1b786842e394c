"""On-disk format of a frame dataset: a ``manifest.json`` and compressed shards of frames.

Shape convention (every array in this module):

- ``N``: layouts in one shard;
- ``T``: frames per layout (``steps_per_layout``);
- ``H, W``: frame height and width in pixels; frames are RGB ``uint8``.

A dataset directory holds ``shard-00000.npz``, ``shard-00001.npz``, … (``numpy.savez_compressed``
archives with ``frames uint8 [N, T, H, W, 3]`` and ``layout_ids str [N]``) and ``manifest.json``::

    {"format_version": 1, "frame_shape": [H, W, 3], "steps_per_layout": T, "view": "egocentric",
     "frame_size": H, "envs": [...], "num_layouts": ..., "num_frames": ...,
     "shards": [{"file": "shard-00000.npz", "num_layouts": N, "num_frames": N * T,
                 "layout_ids": [...], "walk": {...}}, ...],
     "config": {...}}

Only the shards listed in the manifest belong to the dataset. Every file is written to
``<name>.tmp`` in the same directory and renamed into place (``os.replace``), so a reader
never sees a half-written shard or manifest.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "COLLECT_HINT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "TMP_SUFFIX",
    "load_shard",
    "read_manifest",
    "shard_name",
    "write_json_atomic",
    "write_shard",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TMP_SUFFIX = ".tmp"
COLLECT_HINT = "episodic-memory collect --out DIR"
"""The command that (re)builds a dataset directory; error messages point to it."""


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-00000.npz`` for 0."""
    return f"shard-{index:05d}.npz"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` through ``path.tmp`` and an atomic rename."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_shard(path: Path, frames: np.ndarray, layout_ids: list[str]) -> None:
    """Write one shard atomically (``path.tmp``, then rename).

    :param path: the shard file, ``.../shard-XXXXX.npz``.
    :param frames: ``uint8 [N, T, H, W, 3]``.
    :param layout_ids: the N layout ids, in the order of ``frames``.
    """
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        np.savez_compressed(f, frames=frames, layout_ids=np.array(layout_ids, dtype=str))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of the dataset at ``root``, or ``None`` when it has none.

    :raises ValueError: the manifest is not valid JSON, or has another format version.
    """
    path = root / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not a valid manifest ({error}); move the directory away and run `{COLLECT_HINT}` again"
        ) from error
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise ValueError(
            f"{path} has format version {version!r}, expected {FORMAT_VERSION}; collect it again with `{COLLECT_HINT}`"
        )
    return manifest


def load_shard(path: Path, layout_ids: list[str], frames_shape: tuple[int, ...], dtype: str = "uint8") -> np.ndarray:
    """Load and check one shard listed in a manifest.

    :param path: the shard file.
    :param layout_ids: the N layout ids the manifest lists for it.
    :param frames_shape: ``(T, H, W, 3)`` (or ``(T, *frame_shape)``), the shape of the frames of one layout.
    :param dtype: the frames' dtype in the manifest (``uint8``; ``float32`` for encoded vectors).
    :return: ``frames [N, T, H, W, 3]`` of ``dtype``.
    :raises ValueError: the file is missing, not a readable archive, or its arrays do not match the manifest.
    """
    fix = f"re-run `{COLLECT_HINT}` with the same settings: it drops the bad shard and collects its layouts again"
    if not path.is_file():
        raise ValueError(f"shard {path.name} is listed in the manifest of {path.parent} but missing; {fix}")
    if not zipfile.is_zipfile(path):  # else numpy tries to unpickle it and suggests allow_pickle=True: never do that here
        raise ValueError(f"shard {path.name} in {path.parent} is corrupted (not an .npz archive); {fix}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            frames = archive["frames"]
            ids = archive["layout_ids"].tolist()
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"shard {path.name} in {path.parent} is corrupted ({error}); {fix}") from error
    expected = (len(layout_ids), *frames_shape)
    if frames.dtype != np.dtype(dtype) or frames.shape != expected or ids != layout_ids:
        raise ValueError(
            f"shard {path.name} in {path.parent} does not match the manifest: expected frames {dtype} {list(expected)} "
            f"of the listed layouts, actual value: frames {frames.dtype} {list(frames.shape)}; {fix}"
        )
    return frames
