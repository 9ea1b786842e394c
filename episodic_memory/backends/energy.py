"""EBMM as a backend: B energy-based memories (Bartunov et al., ICLR 2020), one code written per env step.

Shapes: ``B`` memories of codes of size ``C``, writable layers ``θ = (W [B, H, C], b [B, H])``
(:mod:`episodic_memory.energy`); codes ``z [B, C]``.

EBMM writes a set at once (eq. 4: T gradient steps from θ̄ on the set's writing loss); its authors
name writing online as its open limitation. Two online forms (``write=``):

- ``incremental``: each code is written by T gradient steps on its own writing loss (eq. 3, still
  anchored at θ̄ by the β term), from the θ the codes before it left; a step costs T second-order
  gradients of one code, whatever the episode's length. This is :meth:`EnergyMemory.write_online`,
  and a memory meta-trained with ``online=True`` has learned its step sizes for it.
- ``rewrite``: the episode's codes are kept, and every ``rewrite_every`` codes the memory is rewritten
  from θ̄ with the batch write of all of them (the paper's write of the set); the codes since the last
  rewrite wait for the next. With ``rewrite_every=1`` the memory is at every step exactly the batch write
  of the episode so far. It keeps the codes (``N C`` more numbers, counted in :attr:`state_floats`), and
  a rewrite costs T gradients over the N codes.

``benchmarks/energy_online.py`` measures both against the batch write. On random 128-bit codes the
incremental write loses almost everything (29-31 of 64 corrupted bits wrong at 32 codes, against 2.1
for the batch write), whether its rules were meta-trained for it or for the batch write: written one at
a time, many codes end up on the same rows (80% of 32 codes share their best-answering row, against about
15% after the batch write). Rewriting loses nothing but the codes that wait.

Read-outs, from the memories as they are (before the step's write):

- ``retrieval [C]`` (code): the read (eq. 1) from the code, K projected Nesterov steps on the energy;
- ``novelty [1]`` (energy): ``E(z; θ)``, EBMM's own surprise: low for what was written (of either sign);
- ``memory [H, C]`` (rows): the writable weights W, the memory's whole summary of the episode but b.
"""

from __future__ import annotations

from typing import Literal

import torch

from episodic_memory.backends.base import MemoryBackend, ReadoutSpec
from episodic_memory.energy import EnergyMemory

__all__ = ["ONLINE_WRITES", "OnlineEnergyMemory", "OnlineWrite"]

OnlineWrite = Literal["incremental", "rewrite"]
ONLINE_WRITES: tuple[OnlineWrite, ...] = ("incremental", "rewrite")


class OnlineEnergyMemory(MemoryBackend):
    """B EBMM memories of codes, written one code per :meth:`step`.

    :param memory: the meta-trained rules and θ̄ (read at every step; not changed).
    :param write: ``incremental`` or ``rewrite`` (module docstring).
    :param rewrite_every: codes between rewrites (``rewrite`` only); above 1 the codes in between are not yet
        in the memory, so the backend no longer holds every code it was given (the registry's ``ebmm`` uses 1).
    """

    def __init__(self, memory: EnergyMemory, batch_size: int, write: OnlineWrite = "rewrite", rewrite_every: int = 1) -> None:
        if write not in ONLINE_WRITES:
            raise ValueError(f"write must be one of {list(ONLINE_WRITES)}, actual value: {write!r}")
        if isinstance(rewrite_every, bool) or not isinstance(rewrite_every, int) or rewrite_every < 1:
            raise ValueError(f"rewrite_every must be a positive int, actual value: {rewrite_every!r}")
        initial = memory.initial(1)[0]
        super().__init__(batch_size, memory.input_size, initial.dtype, initial.device)
        self.memory, self.write_mode, self.rewrite_every = memory, write, rewrite_every
        with torch.no_grad():
            self.theta = tuple(t.clone() for t in memory.initial(batch_size))  # θ̄ [B, H, C], [B, H]
        self.codes = torch.zeros(batch_size, 0, self.code_size, dtype=self.dtype, device=self.device)  # [B, L, C]
        self.counts = torch.zeros(batch_size, dtype=torch.long, device=self.device)  # codes written this episode

    @property
    def readout_specs(self) -> dict[str, ReadoutSpec]:
        return {
            "retrieval": ReadoutSpec((self.code_size,), "code"),
            "novelty": ReadoutSpec((1,), "energy"),
            "memory": ReadoutSpec(tuple(self.theta[0].shape[1:]), "rows"),  # W [H, F]: F = C unless the energy has features
        }

    @property
    def state_floats(self) -> int:
        kept = int(self.counts.max()) * self.code_size if self.write_mode == "rewrite" else 0
        return self.memory.state_floats + kept

    def reset(self, mask: torch.Tensor | None = None) -> None:
        mask = torch.ones(self.batch_size, dtype=torch.bool, device=self.device) if mask is None else self._check_mask(mask)
        with torch.no_grad():
            W0, b0 = self.memory.initial(self.batch_size)
            self.theta = (torch.where(mask[:, None, None], W0, self.theta[0]), torch.where(mask[:, None], b0, self.theta[1]))
        self.counts = torch.where(mask, 0, self.counts)
        if not bool(self.counts.any()):
            self.codes = self.codes[:, :0]

    def _step(self, z: torch.Tensor, write: bool, wanted: frozenset[str]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        queries = z[:, None]  # [B, 1, C]
        if "retrieval" in wanted:
            out["retrieval"] = self.memory.read(queries, self.theta)[:, 0]
        if "novelty" in wanted:
            out["novelty"] = self.memory.energy(queries, self.theta)
        if "memory" in wanted:
            out["memory"] = self.theta[0].clone()
        if write:
            if self.write_mode == "rewrite":
                self._keep_and_rewrite(z)
            else:
                self.theta = self.memory.write(queries, start=self.theta)
        return out

    def _keep_and_rewrite(self, z: torch.Tensor) -> None:
        """Append the codes to each episode's list, then rewrite the memories whose episodes reached a multiple of
        ``rewrite_every`` codes with the batch write of all their codes (eq. 4 from θ̄)."""
        if int(self.counts.max()) == self.codes.shape[1]:  # full: double the list's length
            grown = torch.zeros(self.batch_size, max(2 * self.codes.shape[1], self.rewrite_every), self.code_size)
            grown = grown.to(self.codes)
            grown[:, : self.codes.shape[1]] = self.codes
            self.codes = grown
        self.codes[torch.arange(self.batch_size, device=self.device), self.counts] = z
        self.counts = self.counts + 1
        due = (self.counts % self.rewrite_every == 0).nonzero()[:, 0]  # the memories to rewrite [R]
        if len(due):
            counts = self.counts[due]  # [R]
            length = int(counts.max())
            kept = torch.arange(length, device=self.device)[None] < counts[:, None]  # [R, L]
            W, b = self.memory.write(self.codes[due, :length], mask=kept)
            self.theta = (self.theta[0].index_put((due,), W), self.theta[1].index_put((due,), b))
