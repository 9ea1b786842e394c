"""Energy-based memory (EBMM, Bartunov et al., ICLR 2020): patterns stored in the weights of an energy network.

- :class:`EnergyNetwork`: ``E(x; θ)`` with one writable fully connected layer θ, on the patterns or on fixed
  features of them (:class:`ConvolutionalFeatures` for frames);
- :class:`EnergyMemory`: reading (eq. 1), writing (eq. 3-4) and the meta-objective (eq. 2, 5);
- :class:`Corrupter`: the distortion models x -> x̃ (entries, blocks, salt and pepper, Gaussian noise);
- :func:`meta_train`: Adam on the meta-objective over random pattern sets.
"""

from episodic_memory.energy.corruption import CORRUPTION_KINDS, Corrupter, CorruptionKind
from episodic_memory.energy.memory import Corruption, EnergyMemory
from episodic_memory.energy.meta_training import meta_train
from episodic_memory.energy.network import ConvolutionalFeatures, EnergyNetwork, WritableParameters

__all__ = [
    "CORRUPTION_KINDS",
    "Corrupter",
    "ConvolutionalFeatures",
    "Corruption",
    "CorruptionKind",
    "EnergyMemory",
    "EnergyNetwork",
    "WritableParameters",
    "meta_train",
]
