"""The generative models: the Dynamic Kanerva Machine, the Kanerva Machine, Kanerva++, the Product Kanerva
Machine, an EBMM on an autoencoder's codes and the memory-less VAE baseline.

Each is a :class:`MemoryMachine` (encoder, decoder, likelihood, one safetensors checkpoint); those with
Kanerva memories are :class:`GenerativeMemory`. How observations of any Gymnasium space become their
inputs is :class:`ObservationEncoding`; how image frames are resized and scaled, :class:`InputSpec`.
"""

from episodic_memory.models.dkm import DynamicKanervaMachine
from episodic_memory.models.ebmm import EnergyBasedMemoryMachine
from episodic_memory.models.km import KanervaMachine
from episodic_memory.models.kpp import KanervaPlusPlus
from episodic_memory.models.machine import GenerativeMemory, MemoryMachine, load_machine, read_checkpoint_header
from episodic_memory.models.observations import ObservationEncoding
from episodic_memory.models.pkm import ProductKanervaMachine
from episodic_memory.models.preprocessing import InputSpec
from episodic_memory.models.vae import VariationalAutoencoder

__all__ = [
    "DynamicKanervaMachine",
    "EnergyBasedMemoryMachine",
    "GenerativeMemory",
    "InputSpec",
    "KanervaMachine",
    "KanervaPlusPlus",
    "MemoryMachine",
    "ObservationEncoding",
    "ProductKanervaMachine",
    "VariationalAutoencoder",
    "load_machine",
    "read_checkpoint_header",
]
