"""The RL wrappers: every observation encoded, read out from a memory backend, then written.

- :class:`EpisodicMemoryCore` (``core``): B memories stepped together, the machine's encoder then a backend;
- :class:`EpisodicMemoryWrapper` and :class:`EpisodicMemoryVectorWrapper` (``env``): Gymnasium wrappers;
- ``VecEpisodicMemory`` (``episodic_memory.wrappers.vec_env``): the Stable-Baselines3 VecEnv wrapper, imported
  from its module so that this package needs no SB3.
"""

from episodic_memory.wrappers.core import DEFAULT_READOUTS, READOUTS, EpisodicMemoryCore, Readout
from episodic_memory.wrappers.env import EpisodicMemoryVectorWrapper, EpisodicMemoryWrapper, memory_observation_space

__all__ = [
    "DEFAULT_READOUTS",
    "READOUTS",
    "EpisodicMemoryCore",
    "EpisodicMemoryVectorWrapper",
    "EpisodicMemoryWrapper",
    "Readout",
    "memory_observation_space",
]
