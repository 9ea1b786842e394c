"""The Bayesian Kanerva memory: the matrix-normal memory math (KM eq. 9-11, DKM eq. 6), its online,
one-code-a-step form, the product of small memories of the Product Kanerva Machine, and the latent
memory grid of Kanerva++."""

from episodic_memory.kanerva.latent_block import LatentBlockMemory, LatentMemoryState
from episodic_memory.kanerva.memory import KanervaMemory, MemoryState
from episodic_memory.kanerva.online import OnlineMemory, StepReadout
from episodic_memory.kanerva.product import ProductKanervaMemory

__all__ = [
    "KanervaMemory",
    "LatentBlockMemory",
    "LatentMemoryState",
    "MemoryState",
    "OnlineMemory",
    "ProductKanervaMemory",
    "StepReadout",
]
