"""A Stable-Baselines3 features extractor for observations with episodic-memory read-outs.

Observations are ``Dict`` spaces as the episodic-memory wrappers make them: the environment's own
keys (images, vectors) plus the memory's read-outs (the Kanerva memories': ``retrieval [C]``,
``novelty [1]`` and ``memory [K, C]``). Shapes below
are per batch of N observations, after SB3's preprocessing (uint8 images scaled to [0, 1] and, for
image spaces, transposed to channels-first by ``VecTransposeImage``).
"""

from __future__ import annotations

import math
from typing import get_args

import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn
from torch.nn import functional as F

from episodic_memory.backends.base import ReadoutKind

__all__ = ["MemoryFeaturesExtractor", "SmallImageCNN", "MemoryAttention", "symlog", "thermometer"]

MEMORY_HEADS = ("attention", "linear")
# The kinds of the Kanerva read-outs, for agents saved before the extractor took the backend's declaration.
KANERVA_READOUT_KINDS = {"retrieval": "code", "code": "code", "novelty": "energy", "memory": "rows"}
KINDS = get_args(ReadoutKind)


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) ln(1 + |x|)``: compresses values spanning orders of magnitude, keeps sign and order."""
    return torch.sign(x) * torch.log1p(x.abs())


def thermometer(n: torch.Tensor, levels: int) -> torch.Tensor:
    """``[..., C] -> [..., C * levels]``: each entry ``n`` as ``clamp(n - k, 0, 1)`` for ``k = 0 .. levels - 1``.

    An integer count ``n`` turns on its first ``min(n, levels)`` features, so "n is exactly 7" is one
    feature minus the next, which a linear layer reads; counts past ``levels`` read as ``levels``.
    """
    k = torch.arange(levels, dtype=n.dtype, device=n.device)  # [levels]
    return (n.unsqueeze(-1) - k).clamp(0.0, 1.0).flatten(-2)


class SmallImageCNN(nn.Module):
    """``[N, C, H, W] -> [N, features_dim]`` for images of any size down to 3x3 (NatureCNN needs 36x36).

    3x3 convolutions; each halves the resolution with stride 2 while the map is at least 8 pixels
    wide, so 7x7 MiniGrid views keep their resolution and 64x64 frames are reduced to 8x8.
    """

    def __init__(
        self, channels: int, height: int, width: int, features_dim: int, hidden_channels: int = 32, num_layers: int = 3
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_layers):
            stride = 2 if min(height, width) >= 8 else 1
            layers += [
                nn.Conv2d(channels if i == 0 else hidden_channels, hidden_channels, 3, stride=stride, padding=1),
                nn.ReLU(),
            ]
            height, width = math.ceil(height / stride), math.ceil(width / stride)
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(hidden_channels * height * width, features_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MemoryAttention(nn.Module):
    """Attention over the K rows of a memory, queried by the current observation's features.

    ``query [N, Q]`` and ``memory [N, K, C]`` -> ``[N, attention_dim]``:
    ``softmax(q kᵀ / √d) v`` with ``q = W_q query``, ``k = W_k memory``, ``v = W_v memory``.
    """

    def __init__(self, query_dim: int, code_size: int, attention_dim: int = 64) -> None:
        super().__init__()
        self.query = nn.Linear(query_dim, attention_dim)
        self.key = nn.Linear(code_size, attention_dim)
        self.value = nn.Linear(code_size, attention_dim)
        self.scale = 1.0 / math.sqrt(attention_dim)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        q = self.query(query)[:, None]  # [N, 1, d]
        k, v = self.key(memory), self.value(memory)  # [N, K, d]
        weights = torch.softmax((q * k).sum(-1) * self.scale, dim=-1)  # [N, K]
        return (weights[..., None] * v).sum(1)  # [N, d]


class MemoryFeaturesExtractor(BaseFeaturesExtractor):
    """Features of episodic-memory observations for SB3 policies (``MultiInputPolicy``, ``MultiInputLstmPolicy``).

    Each read-out is treated by its declared kind (:class:`~episodic_memory.backends.ReadoutSpec`), whatever
    its name:

    - image keys (3-D boxes): :class:`SmallImageCNN`, ``cnn_features`` each;
    - other keys except the ``rows`` read-out (vectors such as codes and energies, discrete keys one-hot
      encoded by SB3): flattened, concatenated and passed through an MLP of ``mlp_features``;
    - a ``sequence`` read-out ``[L, C]`` (e.g. ``recall``, the codes of chosen earlier steps) joins them
      after one linear layer with a ReLU, shared by its L steps, ``[L, C] -> [L, sequence_dim]``: what
      a code means does not depend on when it was seen. Normalised, each of its codes is layer-normalised
      and divided by √C, so that it enters at unit norm, as a one-hot observation does (measured: at
      norm √C PPO learned POPGym's RepeatPrevious and RepeatFirst more slowly, README: the memory suite);
    - the ``rows`` read-out ``[K, C]`` (e.g. ``memory``), with ``memory_head="attention"``: :class:`MemoryAttention`
      queried by the features above, ``attention_dim``; with ``memory_head="linear"``: one linear layer of all
      ``K * C`` entries, ``attention_dim`` with a ReLU. What a memory holds about an episode is spread over all
      its rows (every write updates every row it addresses), and a linear probe of the whole matrix reads
      POPGym's answers (``benchmarks/popgym_probe.py``) where one attention query averages rows.

    ``features_dim`` is the sum of the parts.

    The read-outs come at the machine's scale: codes with norms near 100 and a novelty (an energy)
    of tens to thousands of nats for the maze machines. With ``normalise_readouts`` (default) each
    ``code`` read-out and every row of a ``rows`` one is layer-normalised (zero mean, unit variance over
    its C entries, no learned parameters) and an ``energy`` or a ``total`` (a sum that grows with the episode,
    e.g. of codes) enters as ``symlog(n) = sign(n) ln(1 + |n|)`` entrywise, so the policy sees inputs of order
    one whatever machine made them, and a total keeps its magnitude, which a layer norm would remove. A
    ``count`` (e.g. of one-hot observations) enters as a :func:`thermometer` of ``count_levels`` features per
    entry, where an answer such as "how many red cards so far" is one linear read (measured on POPGym's
    CountRecall, README: the memory suite: symlog'd counts learned it more slowly than raw ones, and both
    more slowly than the thermometer).

    :param observation_space: the (preprocessed, channels-first for images) Dict space.
    :param normalise_readouts: normalise the memory read-outs as above; False feeds them raw. The linear
        memory head normalises the whole ``[K, C]`` matrix at once, which keeps the rows' relative scales.
    :param memory_head: ``"attention"`` or ``"linear"``, how the ``rows`` read-out becomes features.
    :param sequence_dim: features per step of a ``sequence`` read-out.
    :param count_levels: thermometer features per entry of a ``count`` read-out.
    :param readout_kinds: ``{key: kind}``, a kind of ``KINDS`` for each read-out key (the memory's
        declaration, which :func:`~episodic_memory.agents.builder.build_agent` passes); keys not in it are the
        environment's own. None: the Kanerva read-outs by name (``retrieval``, ``code``, ``novelty``, ``memory``),
        as agents saved before this parameter read them.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        cnn_features: int = 128,
        cnn_channels: int = 32,
        mlp_features: int = 64,
        attention_dim: int = 64,
        normalise_readouts: bool = True,
        memory_head: str = "attention",
        readout_kinds: dict[str, str] | None = None,
        sequence_dim: int = 16,
        count_levels: int = 32,
    ) -> None:
        if memory_head not in MEMORY_HEADS:
            raise ValueError(f"memory_head must be one of {MEMORY_HEADS}, actual value: {memory_head!r}")
        if not isinstance(observation_space, spaces.Dict):
            raise ValueError(f"MemoryFeaturesExtractor needs Dict observations, got {observation_space}")
        if readout_kinds is None:
            readout_kinds = {k: kind for k, kind in KANERVA_READOUT_KINDS.items() if k in observation_space.spaces}
        unknown = {k: kind for k, kind in readout_kinds.items() if kind not in KINDS}
        if unknown:
            raise ValueError(f"readout_kinds must map keys to one of {KINDS}, actual value: {unknown!r}")
        if isinstance(count_levels, bool) or not isinstance(count_levels, int) or count_levels < 1:
            raise ValueError(f"count_levels must be a positive int, actual value: {count_levels!r}")
        rows = [k for k, kind in readout_kinds.items() if kind == "rows" and k in observation_space.spaces]
        if len(rows) > 1:
            raise ValueError(f"MemoryFeaturesExtractor reads one 'rows' read-out, got {rows}")
        memory_key = rows[0] if rows else None
        image_keys = [
            k for k, s in observation_space.spaces.items() if k != memory_key and isinstance(s, spaces.Box) and len(s.shape) == 3
        ]
        flat_keys = [k for k in observation_space.spaces if k != memory_key and k not in image_keys]
        sequence_keys = [k for k in flat_keys if readout_kinds.get(k) == "sequence"]
        memory_space = observation_space.spaces.get(memory_key) if memory_key else None
        if memory_space is not None and (not isinstance(memory_space, spaces.Box) or len(memory_space.shape) != 2):
            raise ValueError(f"the {memory_key!r} key must be a [K, C] Box, got {memory_space}")
        query_dim = cnn_features * len(image_keys) + (mlp_features if flat_keys else 0)
        if query_dim == 0:
            raise ValueError(
                f"MemoryFeaturesExtractor needs at least one key besides {memory_key!r}, got {list(observation_space.spaces)}"
            )
        features_dim = query_dim + (attention_dim if memory_space is not None else 0)
        super().__init__(observation_space, features_dim)
        self.image_keys, self.flat_keys = image_keys, flat_keys
        self.cnns = nn.ModuleDict(
            {k: SmallImageCNN(*observation_space.spaces[k].shape, cnn_features, cnn_channels) for k in image_keys}
        )
        # one linear map shared by every step of a sequence read-out [L, C] -> [L, sequence_dim]
        self.sequences = nn.ModuleDict(
            {k: nn.Sequential(nn.Linear(observation_space.spaces[k].shape[-1], sequence_dim), nn.ReLU()) for k in sequence_keys}
        )
        self.normalise_readouts = normalise_readouts
        self.count_levels = count_levels
        self.readout_kinds = dict(readout_kinds)
        flat_dim = sum(self._flat_dim(k, observation_space.spaces[k], sequence_dim) for k in flat_keys)
        self.mlp = (
            nn.Sequential(nn.Linear(flat_dim, mlp_features), nn.ReLU(), nn.Linear(mlp_features, mlp_features), nn.ReLU())
            if flat_keys
            else None
        )
        self.attention = self.memory_linear = None
        if memory_space is not None and memory_head == "attention":
            self.attention = MemoryAttention(query_dim, memory_space.shape[1], attention_dim)
        elif memory_space is not None:
            self.memory_linear = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(memory_space.shape), attention_dim), nn.ReLU())
        self.memory_key = memory_key

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.cnns[k](observations[k]) for k in self.image_keys]
        if self.mlp is not None:
            parts.append(self.mlp(torch.cat([self._flat(k, observations[k]) for k in self.flat_keys], dim=1)))
        query = torch.cat(parts, dim=1)  # [N, query_dim]
        memory = observations.get(self.memory_key) if self.memory_key else None  # [N, K, C]
        if self.memory_linear is not None:
            if self.normalise_readouts:
                memory = F.layer_norm(memory, memory.shape[-2:])
            return torch.cat([query, self.memory_linear(memory)], dim=1)
        if self.attention is None:
            return query
        if self.normalise_readouts:
            memory = F.layer_norm(memory, memory.shape[-1:])
        return torch.cat([query, self.attention(query, memory)], dim=1)

    def _flat_dim(self, key: str, space: spaces.Space, sequence_dim: int) -> int:
        """Features of one flat key as :meth:`_flat` makes them."""
        if key in self.sequences:
            return space.shape[0] * sequence_dim
        if self.normalise_readouts and self.readout_kinds.get(key) == "count":
            return get_flattened_obs_dim(space) * self.count_levels
        return get_flattened_obs_dim(space)

    def _flat(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """One flat key as ``[N, D]``, normalised when it is a read-out (see the class docstring)."""
        if key in self.sequences:  # [N, L, C]: each code normalised on its own, at unit norm, then the shared map
            if self.normalise_readouts:
                x = F.layer_norm(x, x.shape[-1:]) / math.sqrt(x.shape[-1])
            return self.sequences[key](x).flatten(1)
        kind = self.readout_kinds.get(key) if self.normalise_readouts else None
        x = x.flatten(1)
        if kind == "code":
            return F.layer_norm(x, x.shape[-1:])
        if kind in ("energy", "total"):
            return symlog(x)
        if kind == "count":
            return thermometer(x, self.count_levels)
        return x
