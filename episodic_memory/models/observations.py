"""How observations of any Gymnasium space become a machine's input frames.

Shape convention: ``B`` observations in a batch; a machine reads frames ``[B, *frame_shape]``,
images ``(H, W, C)`` / ``(C, H, W)`` or flat vectors ``(D,)``.

An :class:`ObservationEncoding` is chosen once for an observation space (and, for ``Dict``
spaces, the keys to read) and is saved in the machine's config, so a machine built for a space
(``DynamicKanervaMachine.for_space``) or pretrained on an env's collected observations reads that
env's observations as they are. The rules:

- an image ``Box`` (rank 3, one end of size <= 4 holding the channels), alone or as the one key
  read of a ``Dict``: passed through unchanged (uint8 or float), so the machine's own
  preprocessing scales, transposes and resizes it (:mod:`episodic_memory.models.preprocessing`);
- everything else is flattened into one float32 vector, parts concatenated in the space's order:
  ``Discrete(n)`` one-hot (n entries), ``MultiDiscrete(nvec)`` one one-hot per entry
  (``sum(nvec)``), ``MultiBinary(n)`` its 0/1 bits, a float ``Box`` its values as they are, an
  integer ``Box`` with finite bounds its values scaled to ``[0, 1]`` by ``(x - low) / (high - low)``
  (without finite bounds: as they are); ``Tuple`` and ``Dict`` the concatenation of their parts;
- ``Text`` keys of a ``Dict`` (and other spaces of strings, such as MiniGrid's ``mission``) are
  never read (they have no numeric encoding, and SB3's vectorised environments cannot hold them);
  other spaces (``Graph``, ``Sequence``, ``OneOf``, ``Text`` elsewhere) are refused with a
  message naming them.

The encoding records the space as JSON (:func:`describe_space`); two encodings are the same
when their descriptions are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from episodic_memory.models.preprocessing import InputSpec

__all__ = ["ObservationEncoding", "batch_of_one", "describe_space", "image_space", "is_text", "readable_keys"]


def _bound(values: np.ndarray) -> float | list:
    """A Box bound as JSON: one number when all entries agree (images: one low and one high), else the nested list.

    Infinite bounds stay infinite (``json`` writes them as ``Infinity``)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size and np.all(values == values.flat[0]):
        return float(values.flat[0])
    return values.tolist()


def batch_of_one(obs: Any) -> Any:
    """One observation as a batch of one: arrays gain a leading axis, tuples and dicts are batched part by part."""
    if isinstance(obs, tuple):
        return tuple(batch_of_one(part) for part in obs)
    if isinstance(obs, dict):
        return {key: batch_of_one(part) for key, part in obs.items()}
    return np.asarray(obs)[None]


def describe_space(space: gymnasium.Space) -> dict[str, Any]:
    """A JSON-serialisable description of ``space`` that tells encodings apart (kind, shapes, sizes, dtype, bounds).

    :raises ValueError: for spaces the encoding cannot read (Graph, Sequence, OneOf, Text).
    """
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _bound(space.low),
            "high": _bound(space.high),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "start": space.start.tolist()}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": list(np.atleast_1d(space.n).tolist())}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [describe_space(s) for s in space.spaces]}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: describe_space(s) for k, s in space.spaces.items()}}
    raise ValueError(
        f"the memory cannot read observations of {space}: it encodes Box, Discrete, MultiDiscrete, MultiBinary, "
        "Tuple and Dict spaces (Text keys of a Dict are skipped); wrap the env to give one of those"
    )


def image_space(space: gymnasium.Space) -> bool:
    """Whether ``space`` is read as an image: a uint8 or float Box of rank 3 whose channel axis can be told apart."""
    if not isinstance(space, spaces.Box) or len(space.shape) != 3:
        return False
    if space.dtype != np.uint8 and not np.issubdtype(space.dtype, np.floating):
        return False
    try:
        InputSpec.from_shape(space.shape)
    except ValueError:
        return False
    return True


def is_text(space: gymnasium.Space) -> bool:
    """Whether observations of ``space`` are strings: ``Text``, or a space of str dtype such as MiniGrid's ``MissionSpace``."""
    return isinstance(space, spaces.Text) or (space.dtype is not None and np.dtype(space.dtype).kind == "U")


def readable_keys(space: spaces.Dict) -> tuple[str, ...]:
    """The keys of a Dict space that the memory can read: all but the text ones (:func:`is_text`), in the space's order."""
    return tuple(k for k, s in space.spaces.items() if not is_text(s))


def _flat_size(space: gymnasium.Space) -> int:
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(space.nvec.sum())
    if isinstance(space, spaces.MultiBinary):
        return int(np.prod(space.n))
    if isinstance(space, spaces.Tuple):
        return sum(_flat_size(s) for s in space.spaces)
    if isinstance(space, spaces.Dict):
        return sum(_flat_size(s) for s in space.spaces.values())
    raise ValueError(f"the memory cannot read observations of {space}")


def _value_range(space: gymnasium.Space) -> tuple[float, float]:
    """Lowest and highest value of the flat encoding of ``space`` (infinite when unbounded)."""
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        return (0.0, 1.0)
    if isinstance(space, spaces.Box):
        if np.issubdtype(space.dtype, np.integer) and space.is_bounded():
            return (0.0, 1.0)
        return (float(np.min(space.low)), float(np.max(space.high)))
    parts = [_value_range(s) for s in (space.spaces if isinstance(space, spaces.Tuple) else space.spaces.values())]
    return (min(p[0] for p in parts), max(p[1] for p in parts)) if parts else (0.0, 0.0)


def _flatten(space: gymnasium.Space, obs: Any, batch: int, what: str) -> np.ndarray:
    """Batched observations of ``space`` -> float32 ``[B, _flat_size(space)]`` (module docstring's rules).

    :raises ValueError: observations of the wrong shape, out of a discrete space's range, or NaN/inf.
    """
    if isinstance(space, spaces.Tuple):
        if not isinstance(obs, (tuple, list)) or len(obs) != len(space.spaces):
            raise ValueError(f"{what} must be a tuple of {len(space.spaces)} parts for {space}, got {type(obs).__name__}")
        parts = zip(space.spaces, obs, strict=True)
        return np.concatenate([_flatten(s, o, batch, f"{what}[{i}]") for i, (s, o) in enumerate(parts)], 1)
    if isinstance(space, spaces.Dict):
        if not isinstance(obs, dict) or not set(space.spaces) <= set(obs):
            keys = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
            raise ValueError(f"{what} must be a dict with keys {list(space.spaces)}, got {keys}")
        return np.concatenate([_flatten(s, obs[k], batch, f"{what}[{k!r}]") for k, s in space.spaces.items()], 1)
    x = np.asarray(obs)
    expected = (batch, *space.shape)
    if x.shape != expected:
        raise ValueError(f"{what} must have shape {list(expected)} for {space} (a batch of {batch}), got {list(x.shape)}")
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        if isinstance(space, spaces.Discrete):
            n, start = np.array([space.n]), np.array([space.start])
        else:
            n, start = space.nvec, space.start
        index = x.reshape(batch, -1).astype(np.int64) - start.reshape(1, -1)  # [B, P]: P one-hots
        sizes = n.reshape(-1)  # [P]
        if np.any(index < 0) or np.any(index >= sizes):
            raise ValueError(f"{what} holds values outside {space}: {x.reshape(batch, -1).tolist()}")
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # [P]
        out = np.zeros((batch, int(sizes.sum())), np.float32)
        np.put_along_axis(out, index + offsets, 1.0, axis=1)
        return out
    if isinstance(space, spaces.MultiBinary):
        return x.reshape(batch, -1).astype(np.float32)
    flat = x.reshape(batch, -1)  # a Box [B, D]
    if np.issubdtype(space.dtype, np.integer) and space.is_bounded():
        low, high = space.low.reshape(1, -1).astype(np.float64), space.high.reshape(1, -1).astype(np.float64)
        return ((flat - low) / np.maximum(high - low, 1)).astype(np.float32)
    flat = flat.astype(np.float32)
    if not np.isfinite(flat).all():
        raise ValueError(f"{what} holds NaN or inf values")
    return flat


@dataclass(frozen=True)
class ObservationEncoding:
    """How the observations of one Gymnasium space become the frames a machine reads.

    :param description: :func:`describe_space` of the space (for a Dict, of the env's whole space).
    :param keys: the Dict keys read, in order; None for other spaces.
    :param image: True when the frames are the (single) image as it is, False for the flat vector.
    :param frame_shape: the shape of one frame: the image's, or ``(D,)``.
    :param value_range: lowest and highest value of the frames (for the likelihood's checks).

    Example::

        >>> encoding = ObservationEncoding.for_space(spaces.Tuple((spaces.Discrete(3), spaces.MultiBinary(2))))
        >>> encoding.frame_shape
        (5,)
        >>> encoding.encode(((np.array([2]), np.array([[1, 0]]))), batch=1)
        array([[0., 0., 1., 1., 0.]], dtype=float32)
    """

    description: dict[str, Any]
    keys: tuple[str, ...] | None
    image: bool
    frame_shape: tuple[int, ...]
    value_range: tuple[float, float]

    @classmethod
    def for_space(cls, space: gymnasium.Space, obs_key: str | Sequence[str] | None = None) -> ObservationEncoding:
        """The encoding of observations of ``space``.

        :param obs_key: for ``Dict`` spaces, the key to read (an image key is read as an image) or
            several keys (flattened together); None reads every key but the ``Text`` ones.
        :raises ValueError: ``obs_key`` for a space that is not a Dict, unknown or Text keys, or a
            space the encoding cannot read; the message names the space and what to do.
        """
        keys: tuple[str, ...] | None = None
        if isinstance(space, spaces.Dict):
            keys = readable_keys(space) if obs_key is None else ((obs_key,) if isinstance(obs_key, str) else tuple(obs_key))
            unknown = [k for k in keys if k not in space.spaces]
            text = [k for k in keys if k in space.spaces and is_text(space.spaces[k])]
            if not keys or unknown or text or len(set(keys)) != len(keys):
                problem = f"unknown keys {unknown}" if unknown else (f"Text keys {text}" if text else "no readable key")
                raise ValueError(
                    f"obs_key {obs_key!r} does not fit the Dict observations {space}: {problem}; "
                    f"pass one or several distinct keys of {list(readable_keys(space))} (Text keys cannot be read)"
                )
            read = space.spaces[keys[0]] if len(keys) == 1 else spaces.Dict({k: space.spaces[k] for k in keys})
        elif obs_key is not None:
            raise ValueError(f"obs_key={obs_key!r} is only for Dict observations, the observation space is {space}")
        else:
            read = space
        description = describe_space(space if keys is None else spaces.Dict({k: space.spaces[k] for k in keys}))
        if image_space(read):
            low, high = float(np.min(read.low)), float(np.max(read.high))
            value_range = (0.0, 1.0) if read.dtype == np.uint8 else (low, high)
            return cls(description, keys, True, tuple(read.shape), value_range)
        return cls(description, keys, False, (_flat_size(read),), _value_range(read))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ObservationEncoding:
        """The encoding saved by :meth:`to_config` (a machine's ``config["observation_encoding"]``)."""
        keys = config.get("keys")
        return cls(
            config["description"],
            None if keys is None else tuple(keys),
            bool(config["image"]),
            tuple(config["frame_shape"]),
            tuple(float(v) for v in config["value_range"]),
        )

    def to_config(self) -> dict[str, Any]:
        """JSON-serialisable form, saved in the machine's config."""
        return {
            "description": self.description,
            "keys": None if self.keys is None else list(self.keys),
            "image": self.image,
            "frame_shape": list(self.frame_shape),
            "value_range": [float(v) for v in self.value_range],
        }

    def encode(self, observations: Any, batch: int) -> np.ndarray:
        """A batch of observations (as a vectorised env returns them: arrays ``[B, ...]``, tuples and dicts of
        them) -> frames ``[B, *frame_shape]``: the image as it is, or a float32 vector.

        :raises ValueError: observations that do not fit the space (shape, keys, range, NaN/inf).
        """
        if self.keys is not None:
            if not isinstance(observations, dict):
                raise ValueError(f"observations must be dicts with keys {list(self.keys)}, got {type(observations).__name__}")
            missing = [k for k in self.keys if k not in observations]
            if missing:
                raise ValueError(f"observations lack the keys {missing} the memory reads")
            observations = observations[self.keys[0]] if len(self.keys) == 1 else {k: observations[k] for k in self.keys}
        space = self.read_space
        if self.image:
            frames = np.asarray(observations)
            if frames.shape[:1] != (batch,) or frames.ndim != 4:
                raise ValueError(f"observations must be a batch of {batch} images, got {frames.shape}")
            return frames
        return _flatten(space, observations, batch, "observations")

    @cached_property
    def read_space(self) -> gymnasium.Space:
        """The space of what is read: the one Dict key, the Dict of the keys, or the whole space."""
        space = _space_from_description(self.description)
        if self.keys is not None and len(self.keys) == 1:
            return space.spaces[self.keys[0]]
        return space

    def same_observations(self, other: ObservationEncoding) -> bool:
        """Whether ``other`` reads the same observations the same way (images: same rank and channels; the
        machine's preprocessing resizes them)."""
        if self.image and other.image:
            return True
        return self.description == other.description and self.keys == other.keys


def _space_from_description(d: dict[str, Any]) -> gymnasium.Space:
    """The space :func:`describe_space` described."""
    kind = d["type"]
    if kind == "Box":
        shape = tuple(d["shape"])
        dtype = np.dtype(d["dtype"])
        low, high = (np.broadcast_to(np.asarray(d[b], dtype=dtype), shape) for b in ("low", "high"))
        return spaces.Box(low, high, shape, dtype)
    if kind == "Discrete":
        return spaces.Discrete(d["n"], start=d["start"])
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.array(d["nvec"]), start=np.array(d["start"]))
    if kind == "MultiBinary":
        n = d["n"]
        return spaces.MultiBinary(n[0] if len(n) == 1 else n)
    if kind == "Tuple":
        return spaces.Tuple([_space_from_description(s) for s in d["spaces"]])
    if kind == "Dict":
        return spaces.Dict({k: _space_from_description(s) for k, s in d["spaces"].items()})
    raise ValueError(f"unknown space type {kind!r} in an observation encoding")
