"""Collect frames of maze layouts (or any Gymnasium env's observations) into a resumable dataset directory.

Shape convention (every array in this module; format: :mod:`episodic_memory.envs.shards`):

- ``T``: frames per layout (``steps_per_layout``);
- ``S``: frame side in pixels (``frame_size``);
- the frames of one layout are ``uint8 [T, S, S, 3]``, a shard of N layouts ``uint8 [N, T, S, S, 3]``;
  for other envs ``[T, *frame_shape]`` of the observations as the memory reads them
  (:class:`~episodic_memory.models.observations.ObservationEncoding`): images as they are, anything else
  one-hot encoded and flattened into float32 vectors ``[T, D]``.

Any registered Gymnasium id works (:func:`~episodic_memory.envs.gym_envs.make_env`): MiniGrid ids
give egocentric (or top-down) frames and walk as below; other ids take uniformly random actions
(their action space seeded from the env id and the reset seed) and record their own observations.
The manifest keeps the observation encoding, so a machine pretrained on the dataset reads that
env's observations as they are.

Layout j of env id e is the maze of ``reset(seed=layout_seed(config.seed, j))``, named
``layout_id(e, seed)``. Its T frames are the observations of one walk in it: the reset frame,
then one frame per step; when an episode ends the env is reset with the *same* seed, and that
reset frame counts as the next one, so every frame comes from the layout. The walk is a random
walk over the navigation actions (turns and forward; a forward into a closed door opens it) or
the sampled actions of an SB3 policy (MiniGrid ids only), seeded from the env id and the reset
seed, so one config always gives the same frames.

Example::

    manifest = collect(CollectConfig(out="data/frames", layouts_per_env=100))
    dataset = FrameDataset(manifest.parent)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium
import numpy as np
import torch
from minigrid.core.actions import Actions
from minigrid.core.world_object import Door
from minigrid.minigrid_env import MiniGridEnv
from tqdm import tqdm

from episodic_memory.envs.gym_envs import make_env
from episodic_memory.envs.mazes import DEFAULT_MAZES, VIEWS, layout_id
from episodic_memory.envs.shards import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    TMP_SUFFIX,
    load_shard,
    read_manifest,
    shard_name,
    write_json_atomic,
    write_shard,
)
from episodic_memory.models.observations import ObservationEncoding
from episodic_memory.wrappers.env import batch_of_one

if TYPE_CHECKING:
    from stable_baselines3 import PPO

__all__ = ["MAX_LAYOUTS_PER_ENV", "NAVIGATION_ACTIONS", "CollectConfig", "collect", "layout_seed"]

NAVIGATION_ACTIONS: tuple[int, int, int] = (int(Actions.left), int(Actions.right), int(Actions.forward))
"""The MiniGrid actions a random walk draws: turn left, turn right, move forward (toggle only opens a door it walks into)."""

MAX_LAYOUTS_PER_ENV = 1_000_000
"""Layouts per env id and seed; :func:`layout_seed` keeps the reset seeds of different ``seed`` values apart below it."""


def layout_seed(seed: int, index: int) -> int:
    """Reset seed of layout ``index`` of any env id for the collection seed ``seed``: ``seed * 1_000_000 + index``."""
    return seed * MAX_LAYOUTS_PER_ENV + index


@dataclass
class CollectConfig:
    """Settings of :func:`collect`; each field carries its command-line help in ``metadata["help"]``."""

    out: str = field(metadata={"help": "dataset directory; created if missing, extended (resumed) if it holds a dataset"})
    envs: tuple[str, ...] = field(
        default=DEFAULT_MAZES,
        metadata={
            "help": "Gymnasium ids to collect from (default: the maze suite, envs.DEFAULT_MAZES); MiniGrid ids give frames, "
            "other ids their own observations, all ids of one dataset the same observation space"
        },
    )
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "keyword arguments of gymnasium.make"})
    imports: tuple[str, ...] = field(
        default=(),
        metadata={"help": "modules to import first, for ids of third-party packages (e.g. popgym)", "aliases": ("--import",)},
    )
    obs_key: tuple[str, ...] | None = field(
        default=None, metadata={"help": "for Dict observations, the key(s) to record (default: every non-text key)"}
    )
    layouts_per_env: int = field(default=50, metadata={"help": "distinct layouts (reset seeds) per env id"})
    steps_per_layout: int = field(
        default=64,
        metadata={"help": "frames per layout: one walk in it, reset with the same seed when an episode ends"},
    )
    frame_size: int = field(default=32, metadata={"help": "side of the square RGB frames in pixels"})
    view: str = field(
        default="egocentric",
        metadata={"help": "'egocentric' (what the agent sees) or 'topdown' (the whole grid from above)"},
    )
    forward_bias: float = field(
        default=0.6,
        metadata={"help": "probability of 'forward' in the random walk; 'left' and 'right' share the rest"},
    )
    policy: str | None = field(
        default=None,
        metadata={
            "help": "path to a Stable-Baselines3 PPO zip whose actions (sampled, not greedy) replace the random walk; "
            "it must take the frames of this config as observations"
        },
    )
    shard_size: int = field(default=100, metadata={"help": "layouts per shard file"})
    seed: int = field(default=0, metadata={"help": "collection seed: it fixes the layouts and the walks"})

    def __post_init__(self) -> None:
        self.out = os.fspath(self.out)
        if isinstance(self.envs, str):
            raise ValueError(f"envs must be a sequence of env ids, not one string, actual value: {self.envs!r}")
        self.envs = tuple(self.envs)
        if not self.envs or not all(isinstance(env_id, str) for env_id in self.envs):
            raise ValueError(f"envs must be a non-empty sequence of env id strings, actual value: {self.envs!r}")
        if len(set(self.envs)) != len(self.envs):
            raise ValueError(f"envs must not repeat an env id, actual value: {self.envs!r}")
        for name in ("layouts_per_env", "steps_per_layout", "frame_size", "shard_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, actual value: {value!r}")
        if self.layouts_per_env > MAX_LAYOUTS_PER_ENV:
            raise ValueError(f"layouts_per_env must be at most {MAX_LAYOUTS_PER_ENV}, actual value: {self.layouts_per_env!r}")
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, actual value: {self.view!r}")
        if not isinstance(self.forward_bias, (int, float)) or not 0.0 <= self.forward_bias <= 1.0:
            raise ValueError(f"forward_bias must be a probability in [0, 1], actual value: {self.forward_bias!r}")
        if self.policy is not None:
            self.policy = os.fspath(self.policy)
        self.imports = tuple(self.imports)
        if self.obs_key is not None:
            self.obs_key = (self.obs_key,) if isinstance(self.obs_key, str) else tuple(self.obs_key)
        if not isinstance(self.env_kwargs, dict):
            raise ValueError(f"env_kwargs must map gymnasium.make keyword arguments to values, actual value: {self.env_kwargs!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, actual value: {self.seed!r}")

    @property
    def obs_keys(self) -> str | tuple[str, ...] | None:
        """``obs_key`` as :class:`ObservationEncoding` takes it: one key as a string (an image key is read as an image)."""
        if self.obs_key is None:
            return None
        return self.obs_key[0] if len(self.obs_key) == 1 else self.obs_key


def _load_policy(path: str, env: gymnasium.Env) -> PPO:
    """Load an SB3 PPO policy and check that it takes the frames of ``env`` and acts in its action space."""
    from stable_baselines3 import PPO

    if not Path(path).is_file():
        raise ValueError(f"policy file {path!r} does not exist; pass the path of a Stable-Baselines3 PPO zip")
    model = PPO.load(path, device="cpu")
    frames = env.observation_space
    space = model.observation_space
    shapes = {frames.shape, (frames.shape[2], frames.shape[0], frames.shape[1])}  # HWC, or CHW after VecTransposeImage
    if not (isinstance(space, gymnasium.spaces.Box) and space.dtype == frames.dtype and space.shape in shapes):
        raise ValueError(
            f"policy {path!r} expects observations {space}, but the frame envs give {frames}; "
            "set frame_size and view to those the policy was trained on"
        )
    if model.action_space != env.action_space:
        raise ValueError(f"policy {path!r} acts in {model.action_space}, but the envs expect {env.action_space}")
    return model


def _faces_closed_door(env: gymnasium.Env) -> bool:
    """Whether the agent of a MiniGrid env faces a closed door it can open (an unlocked one)."""
    base = env.unwrapped
    front = base.grid.get(*base.front_pos)
    return isinstance(front, Door) and not front.is_open and not front.is_locked


def _walk(
    env: gymnasium.Env,
    seed: int,
    rng: np.random.Generator,
    config: CollectConfig,
    model: PPO | None,
    encoding: ObservationEncoding,
) -> np.ndarray:
    """The frames ``[T, *frame_shape]`` of one walk in the layout of ``env.reset(seed=seed)``.

    Actions come from ``model`` (sampled) when given, else from ``rng``: forward with
    probability ``forward_bias``, left or right with ``(1 - forward_bias) / 2`` each; a forward
    into a closed, unlocked door opens it instead (toggle), so walks leave the first room of
    MultiRoom mazes. Envs that are not MiniGrid take uniformly random actions from their action
    space, seeded from ``rng``.
    """
    steps = config.steps_per_layout
    minigrid = isinstance(env.unwrapped, MiniGridEnv)
    turn = (1.0 - config.forward_bias) / 2
    actions = rng.choice(NAVIGATION_ACTIONS, size=steps, p=(turn, turn, config.forward_bias))  # [T]
    if not minigrid:
        env.action_space.seed(int(rng.integers(2**31)))
    frames = np.empty((steps, *encoding.frame_shape), dtype=_dtype(encoding))  # [T, *frame_shape]
    observation, _ = env.reset(seed=seed)
    frames[0] = encoding.encode(batch_of_one(observation), 1)[0]
    done = False
    for t in range(1, steps):
        if done:
            observation, _ = env.reset(seed=seed)
            done = False
        else:
            if not minigrid:
                action = env.action_space.sample()
            elif model is not None:
                action = int(model.predict(observation, deterministic=False)[0])
            elif actions[t] == Actions.forward and _faces_closed_door(env):
                action = int(Actions.toggle)
            else:
                action = int(actions[t])
            observation, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        frames[t] = encoding.encode(batch_of_one(observation), 1)[0]
    return frames


def _dtype(encoding: ObservationEncoding) -> np.dtype:
    """The dtype frames are stored in: an image's own (uint8 or float32), float32 for encoded vectors."""
    return np.dtype(encoding.read_space.dtype) if encoding.image else np.dtype(np.float32)


def _check_compatible(manifest: dict[str, Any], config: CollectConfig, root: Path, encoding: ObservationEncoding) -> None:
    """Raise ``ValueError`` when the dataset at ``root`` holds frames of another shape, dtype or view than ``config``."""
    wanted = {
        "frame_shape": list(encoding.frame_shape),
        "dtype": str(_dtype(encoding)),
        "steps_per_layout": config.steps_per_layout,
        "view": config.view,
    }
    found = {key: manifest.get(key, "uint8" if key == "dtype" else None) for key in wanted}
    saved = manifest.get("observation_encoding")
    if found == wanted and saved is not None and not ObservationEncoding.from_config(saved).same_observations(encoding):
        found["observations"], wanted["observations"] = saved["description"], encoding.description
    if found != wanted:
        raise ValueError(
            f"{root} holds frames with {found}, but the config asks for {wanted}: frame shape, dtype, view or "
            "observations differ; "
            "collect into another directory (existing data is never overwritten)"
        )


def _remove_strays(root: Path, manifest: dict[str, Any]) -> None:
    """Warn about and delete temporary files and shard files that the manifest does not list (an interrupted run)."""
    listed = {shard["file"] for shard in manifest["shards"]}
    for path in sorted(root.iterdir()):
        stray = path.name.endswith(TMP_SUFFIX) or (fnmatch.fnmatch(path.name, "shard-*.npz") and path.name not in listed)
        if stray and path.is_file():
            warnings.warn(f"removing {path}: left by an interrupted collection, not listed in {MANIFEST_NAME}", stacklevel=3)
            path.unlink()


def _drop_bad_shards(root: Path, manifest: dict[str, Any], config: CollectConfig) -> bool:
    """Drop from ``manifest`` (and the disk) the listed shards that are missing or corrupted; return whether any was."""
    frames_shape = (config.steps_per_layout, *manifest["frame_shape"])
    good = []
    for shard in manifest["shards"]:
        path = root / shard["file"]
        try:
            load_shard(path, shard["layout_ids"], frames_shape, manifest.get("dtype", "uint8"))
        except ValueError as error:
            count = len(shard["layout_ids"])
            warnings.warn(f"dropping shard {path}; its {count} layouts are collected again ({error})", stacklevel=3)
            path.unlink(missing_ok=True)
        else:
            good.append(shard)
    dropped = len(good) != len(manifest["shards"])
    manifest["shards"] = good
    return dropped


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Recompute the totals of ``manifest`` from its shards and write it atomically."""
    ids = [lid for shard in manifest["shards"] for lid in shard["layout_ids"]]
    manifest["envs"] = list(dict.fromkeys(lid.rsplit("/", 1)[0] for lid in ids))
    manifest["num_layouts"] = len(ids)
    manifest["num_frames"] = sum(shard["num_frames"] for shard in manifest["shards"])
    write_json_atomic(root / MANIFEST_NAME, manifest)


def collect(config: CollectConfig, progress: bool = True) -> Path:
    """Collect the frames of ``config.layouts_per_env`` layouts of each env id into ``config.out``.

    Resumable: layouts already listed in the directory's manifest are skipped, so running again
    with the same config adds nothing, and with a larger ``layouts_per_env`` (or more env ids,
    or another ``seed``) adds only the new layouts. Every ``shard_size`` layouts a shard is
    written and the manifest rewritten, both atomically. On start, leftovers of an interrupted
    run (``*.tmp`` files, shard files the manifest does not list) are removed, and listed shards
    that are missing or corrupted are dropped and collected again, each with a warning.

    :param config: what to collect, and where.
    :param progress: show a tqdm progress bar (frames).
    :return: the path of ``manifest.json``.
    :raises ValueError: an unknown env id; env ids with different observation spaces; a policy for
        other envs than MiniGrid ones, or an incompatible one; a dataset at ``config.out`` with
        another frame shape, dtype or view (it is left untouched).
    """
    root = Path(config.out)
    envs: dict[str, gymnasium.Env] = {}
    try:
        for env_id in config.envs:
            envs[env_id] = make_env(env_id, config.frame_size, config.env_kwargs, config.imports, view=config.view)
        encodings = {name: ObservationEncoding.for_space(env.observation_space, config.obs_keys) for name, env in envs.items()}
        encoding = encodings[config.envs[0]]
        first = (encoding.frame_shape, encoding.description)
        differ = [name for name, e in encodings.items() if (e.frame_shape, e.description) != first]
        if differ:
            raise ValueError(
                f"the env ids of one dataset must give the same observations: {config.envs[0]} gives {encoding.description}, "
                f"{differ} give others; collect them into separate directories"
            )
        if config.policy is not None and not all(isinstance(env.unwrapped, MiniGridEnv) for env in envs.values()):
            raise ValueError("policy drives MiniGrid walks only; leave it out for other env ids (they take random actions)")
        model = None if config.policy is None else _load_policy(config.policy, envs[config.envs[0]])
        root.mkdir(parents=True, exist_ok=True)
        manifest = read_manifest(root)
        if manifest is None:
            manifest = {
                "format_version": FORMAT_VERSION,
                "frame_shape": list(encoding.frame_shape),
                "dtype": str(_dtype(encoding)),
                "observation_encoding": encoding.to_config(),
                "steps_per_layout": config.steps_per_layout,
                "view": config.view,
                "frame_size": config.frame_size,
                "envs": [],
                "num_layouts": 0,
                "num_frames": 0,
                "shards": [],
                "config": dataclasses.asdict(config),
            }
        _check_compatible(manifest, config, root, encoding)
        _remove_strays(root, manifest)
        if _drop_bad_shards(root, manifest, config):
            _write_manifest(root, manifest)

        done = {lid for shard in manifest["shards"] for lid in shard["layout_ids"]}
        todo = [
            (env_id, layout_seed(config.seed, j))
            for env_id in config.envs
            for j in range(config.layouts_per_env)
            if layout_id(env_id, layout_seed(config.seed, j)) not in done
        ]
        next_index = 1 + max((int(shard["file"][len("shard-") : -len(".npz")]) for shard in manifest["shards"]), default=-1)
        steps = config.steps_per_layout
        with tqdm(total=len(todo) * steps, unit="frame", desc=f"collect {root}", disable=not progress) as bar:
            for start in range(0, len(todo), config.shard_size):
                chunk = todo[start : start + config.shard_size]
                frames = np.empty((len(chunk), steps, *encoding.frame_shape), dtype=_dtype(encoding))  # [N, T, *frame_shape]
                for k, (env_id, seed) in enumerate(chunk):
                    rng = np.random.default_rng([seed, zlib.crc32(env_id.encode())])
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(seed)  # the policy's action sampling
                        frames[k] = _walk(envs[env_id], seed, rng, config, model, encoding)
                    bar.update(steps)
                name = shard_name(next_index)
                next_index += 1
                ids = [layout_id(env_id, seed) for env_id, seed in chunk]
                write_shard(root / name, frames, ids)
                manifest["shards"].append(
                    {
                        "file": name,
                        "num_layouts": len(chunk),
                        "num_frames": len(chunk) * steps,
                        "layout_ids": ids,
                        "walk": {"forward_bias": config.forward_bias, "policy": config.policy, "seed": config.seed},
                    }
                )
                manifest["config"] = dataclasses.asdict(config)
                _write_manifest(root, manifest)
    finally:
        for env in envs.values():
            env.close()
    return root / MANIFEST_NAME
