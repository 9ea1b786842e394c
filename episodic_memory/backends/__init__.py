"""Memory backends: B online memories behind one interface (:class:`MemoryBackend`).

The machines' own Kanerva memories:

- :class:`DynamicKanervaMemory`: addressed by content, as the DKM reads it;
- :class:`LearnedAddressKanervaMemory`: at the addresses a KM computes from each frame;
- :class:`OnlineProductKanervaMemory`: the Product Kanerva Machine's M small memories;
- :class:`OnlineLatentBlockMemory`: the latent memory grid of Kanerva++;
- :class:`OnlineEnergyMemory`: an EBMM's writable layer, written online.

The classical associative memories, for codes of any encoder or for raw ±1 patterns:

- :class:`HopfieldMemory`: Hopfield networks with the Hebb, Storkey and pseudo-inverse rules;
- :class:`SparseDistributedMemory`: Kanerva's sparse distributed memory;
- :class:`DenseAssociativeMemory`: a modern Hopfield network that stores every code of the episode.

Beside any of them, :class:`TimeAddressedMemory` keeps the order of the codes: a Kanerva memory
written at each step's address and read by lag or position.
"""

from episodic_memory.backends.base import MemoryBackend, ReadoutKind, ReadoutSpec, binary_patterns
from episodic_memory.backends.dense_associative import DenseAssociativeMemory
from episodic_memory.backends.energy import ONLINE_WRITES, OnlineEnergyMemory, OnlineWrite
from episodic_memory.backends.hopfield import HOPFIELD_RULES, HopfieldMemory, HopfieldRule
from episodic_memory.backends.kanerva import DynamicKanervaMemory, LearnedAddressKanervaMemory
from episodic_memory.backends.latent_block import OnlineLatentBlockMemory
from episodic_memory.backends.product_kanerva import OnlineProductKanervaMemory
from episodic_memory.backends.sparse_distributed import SparseDistributedMemory, radius_for_activation
from episodic_memory.backends.time_addressed import TimeAddressedMemory, time_addresses

__all__ = [
    "HOPFIELD_RULES",
    "ONLINE_WRITES",
    "DenseAssociativeMemory",
    "DynamicKanervaMemory",
    "HopfieldMemory",
    "HopfieldRule",
    "LearnedAddressKanervaMemory",
    "MemoryBackend",
    "OnlineEnergyMemory",
    "OnlineLatentBlockMemory",
    "OnlineProductKanervaMemory",
    "OnlineWrite",
    "ReadoutKind",
    "ReadoutSpec",
    "SparseDistributedMemory",
    "TimeAddressedMemory",
    "binary_patterns",
    "radius_for_activation",
    "time_addresses",
]
