"""Episodic memory for reinforcement-learning agents, on the Kanerva Machine family of generative memories.

The package, by concept (``README.md``, "How the package is laid out"):

- :mod:`episodic_memory.kanerva`: the Bayesian Kanerva memory (KM eq. 9-11, DKM eq. 6), batch and online;
- :mod:`episodic_memory.energy`: the meta-learned energy-based memory (EBMM eq. 1-5);
- :mod:`episodic_memory.models`: the generative models (DKM, KM, VAE) with their coders and likelihoods;
- :mod:`episodic_memory.backends`: memories behind one interface for the RL wrappers (the Kanerva memories
  and the classical ones: Hopfield, SDM, store-everything);
- :mod:`episodic_memory.registry`: every model and backend by name;
- :mod:`episodic_memory.wrappers`: Gymnasium and SB3 wrappers that read out a memory at every step;
- ``episodic_memory.agents``, ``.envs``, ``.evaluation``, ``.train``: SB3 agents, environments and frame
  data, evaluation of trained models, and the command line.

Public API::

    from episodic_memory import MemoryState, KanervaMemory, DynamicKanervaMachine, KanervaMachine
    from episodic_memory import EpisodicMemoryWrapper, EpisodicMemoryVectorWrapper, ObservationEncoding
    from episodic_memory import BACKENDS, MemoryBackend, HopfieldMemory

(the SB3 wrapper is ``episodic_memory.wrappers.vec_env.VecEpisodicMemory``.)
"""

from episodic_memory.backends import (
    DenseAssociativeMemory,
    DynamicKanervaMemory,
    HopfieldMemory,
    LearnedAddressKanervaMemory,
    MemoryBackend,
    OnlineEnergyMemory,
    OnlineLatentBlockMemory,
    OnlineProductKanervaMemory,
    ReadoutSpec,
    SparseDistributedMemory,
)
from episodic_memory.kanerva import KanervaMemory, MemoryState, OnlineMemory, ProductKanervaMemory, StepReadout
from episodic_memory.models import (
    DynamicKanervaMachine,
    EnergyBasedMemoryMachine,
    GenerativeMemory,
    KanervaMachine,
    KanervaPlusPlus,
    MemoryMachine,
    ObservationEncoding,
    ProductKanervaMachine,
    VariationalAutoencoder,
    load_machine,
    read_checkpoint_header,
)
from episodic_memory.registry import BACKENDS, MODELS
from episodic_memory.wrappers import EpisodicMemoryCore, EpisodicMemoryVectorWrapper, EpisodicMemoryWrapper

__all__ = [
    "BACKENDS",
    "MODELS",
    "DenseAssociativeMemory",
    "DynamicKanervaMachine",
    "DynamicKanervaMemory",
    "EnergyBasedMemoryMachine",
    "EpisodicMemoryCore",
    "EpisodicMemoryVectorWrapper",
    "EpisodicMemoryWrapper",
    "GenerativeMemory",
    "HopfieldMemory",
    "KanervaMachine",
    "KanervaMemory",
    "KanervaPlusPlus",
    "LearnedAddressKanervaMemory",
    "MemoryBackend",
    "MemoryMachine",
    "MemoryState",
    "ObservationEncoding",
    "OnlineEnergyMemory",
    "OnlineLatentBlockMemory",
    "OnlineMemory",
    "OnlineProductKanervaMemory",
    "ProductKanervaMachine",
    "ProductKanervaMemory",
    "ReadoutSpec",
    "SparseDistributedMemory",
    "StepReadout",
    "VariationalAutoencoder",
    "load_machine",
    "read_checkpoint_header",
]
