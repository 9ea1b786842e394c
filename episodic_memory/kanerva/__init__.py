"""The Bayesian Kanerva memory: the matrix-normal memory math (KM eq. 9-11, DKM eq. 6) and its online, one-code-a-step form."""

from episodic_memory.kanerva.memory import KanervaMemory, MemoryState
from episodic_memory.kanerva.online import OnlineMemory, StepReadout

__all__ = ["KanervaMemory", "MemoryState", "OnlineMemory", "StepReadout"]
