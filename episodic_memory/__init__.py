"""Episodic memory for reinforcement-learning agents: Kanerva Machine and Dynamic Kanerva Machine.

Public API::

    from episodic_memory import MemoryState, KanervaMemory, DynamicKanervaMachine, KanervaMachine
    from episodic_memory import EpisodicMemoryWrapper, EpisodicMemoryVectorWrapper, ObservationEncoding

(the SB3 wrapper is ``episodic_memory.vec_env.VecEpisodicMemory``.)
"""

from episodic_memory.dkm import DynamicKanervaMachine
from episodic_memory.km import KanervaMachine
from episodic_memory.machine import GenerativeMemory, MemoryMachine, load_machine, read_checkpoint_header
from episodic_memory.memory import KanervaMemory, MemoryState
from episodic_memory.observations import ObservationEncoding
from episodic_memory.online import OnlineMemory, StepReadout
from episodic_memory.vae import VariationalAutoencoder
from episodic_memory.wrappers import EpisodicMemoryVectorWrapper, EpisodicMemoryWrapper

__all__ = [
    "DynamicKanervaMachine",
    "EpisodicMemoryVectorWrapper",
    "EpisodicMemoryWrapper",
    "GenerativeMemory",
    "KanervaMachine",
    "KanervaMemory",
    "MemoryMachine",
    "MemoryState",
    "ObservationEncoding",
    "OnlineMemory",
    "StepReadout",
    "VariationalAutoencoder",
    "load_machine",
    "read_checkpoint_header",
]
