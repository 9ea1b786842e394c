"""The Kanerva++ memory as a backend: a latent grid written as a running mean, read through key windows.

Shapes: ``B`` memories ``M [B, D, H, W]``; each step's input ``[z, Y] [B, C + 3]``, the frame's code (the
mean of ``q(z | x)``) and read key (the mean of ``q(Y | x)``), as a K++ encoder gives them.

The batch write of K++ is ``M = (1/T) Σ_t g(z_t)`` (:mod:`episodic_memory.models.kpp`); this backend
keeps the sum and the count, so the memory after t steps is exactly the batch write of those t codes,
at ``O(D H W)`` a step. An empty memory is all zeros. Read-outs, from the memory before the write:

- ``retrieval [C]`` (code): the mean of ``p(Z | M, Y)``, what the memory holds at the frame's key;
- ``novelty [1]`` (energy, >= 0): ``½ Σ_c ((z − μ)/σ)²`` under that prior, the code's surprise;
- ``memory [H W, D]`` (rows): the memory grid, a cell a row.
"""

from __future__ import annotations

import torch

from episodic_memory.backends.base import MemoryBackend, ReadoutSpec
from episodic_memory.kanerva.latent_block import LatentBlockMemory, LatentMemoryState

__all__ = ["OnlineLatentBlockMemory"]


class OnlineLatentBlockMemory(MemoryBackend):
    """B Kanerva++ memories (:class:`~episodic_memory.kanerva.latent_block.LatentBlockMemory`), one code and key written per step.

    :param memory: the model's memory (its writer g and prior network; read at every step, not copied).
    """

    nonnegative_novelty = True

    def __init__(self, memory: LatentBlockMemory, batch_size: int) -> None:
        parameter = next(memory.parameters())
        super().__init__(batch_size, memory.code_size + 3, parameter.dtype, parameter.device)
        self.memory = memory
        self.total = torch.zeros(batch_size, memory.channels, *memory.grid, dtype=self.dtype, device=self.device)  # Σ_t terms
        counts = (batch_size,) if memory.write_mode == "pooled" else (batch_size, *memory.grid)  # frames, or cell weights
        self.count = torch.zeros(counts, dtype=self.dtype, device=self.device)

    @property
    def readout_specs(self) -> dict[str, ReadoutSpec]:
        return {
            "retrieval": ReadoutSpec((self.memory.code_size,), "code"),
            "novelty": ReadoutSpec((1,), "energy"),
            "memory": ReadoutSpec((self.memory.num_slots, self.memory.channels), "rows"),
        }

    @property
    def state_floats(self) -> int:
        return self.memory.floats + self.count[0].numel()  # the sum and the count(s)

    @property
    def state(self) -> LatentMemoryState:
        """The memories as the model's batch write gives them (zeros when empty)."""
        return self.memory.memory_of(self.total, self.count.clone())

    def reset(self, mask: torch.Tensor | None = None) -> None:
        if mask is None:
            self.total.zero_()
            self.count.zero_()
            return
        mask = self._check_mask(mask)
        self.total[mask] = 0.0
        self.count[mask] = 0.0

    def _step(self, z: torch.Tensor, write: bool, wanted: frozenset[str]) -> dict[str, torch.Tensor]:
        code, key = z.split([self.memory.code_size, 3], dim=-1)  # [B, C], [B, 3]
        state = self.memory.memory_of(self.total, self.count)  # read before the write below, so no copy is needed
        mean, std = self.memory.prior(state, key[:, None])  # p(Z | M, Y) [B, 1, C]
        out = {
            "retrieval": mean[:, 0],
            "novelty": (0.5 * ((code - mean[:, 0]) / std[:, 0]) ** 2).sum(-1, keepdim=True),
        }
        if "memory" in wanted:
            out["memory"] = state.memory.flatten(2).transpose(1, 2)  # [B, H W, D]
        if write:
            total, count = self.memory.contributions(code[:, None], key[:, None])
            self.total += total
            self.count += count
        return out
