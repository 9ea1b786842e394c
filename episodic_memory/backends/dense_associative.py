"""A dense associative memory (modern Hopfield network) that stores every code of the episode.

Shapes: ``B`` memories, ``C`` code size, ``N_b`` codes stored in memory ``b`` (as many as it was
written since its reset), kept as rows of ``X [B, capacity, C]`` (rows from ``N_b`` on are unused;
the capacity doubles when a memory fills it); queries ``ξ [B, Q, C]``.

Ramsauer et al., *Hopfield Networks is All You Need* (ICLR 2021), for patterns ``x_1 … x_N``:

- update rule ``ξ <- Xᵀ softmax(β X ξ)`` (the stored codes as rows of X here), run ``steps`` times;
  one step is the attention read of a transformer, and of an episodic buffer of keys such as NGU's;
- energy ``E(ξ) = −β⁻¹ log Σ_i exp(β x_iᵀξ) + ½ ξᵀξ + β⁻¹ log N + ½ M²``, ``M = max_i |x_i|``:
  near 0 for a stored code well apart from the others, about ``|ξ|²`` for a new one orthogonal to
  codes of its norm.

This is the "store everything" baseline a compressing memory is measured against: it forgets
nothing, and a read costs ``O(N C)`` and a memory holds ``N C`` numbers, both growing with the
episode. Our choices where the paper has nothing to say: ``β`` defaults to ``1/√C`` (the
transformer's scale); an empty memory returns the query unchanged and gives the energy ``|ξ|²``,
the value for a code unlike everything stored.
"""

from __future__ import annotations

import math

import torch

from episodic_memory.backends.base import MemoryBackend, ReadoutSpec

__all__ = ["DenseAssociativeMemory"]


class DenseAssociativeMemory(MemoryBackend):
    """B modern Hopfield memories, each keeping every code written since its reset.

    Read-outs of :meth:`step`: ``retrieval [C]`` (code), ``steps`` updates from the code;
    ``novelty [1]`` (energy), ``E`` of the code (module docstring).

    :param beta: inverse temperature β of the softmax; None gives ``1/√C``.
    :param steps: update steps per retrieval (1: one attention read).
    :param capacity: rows allocated per memory at the start (more are added as needed).
    """

    nonnegative_novelty = True  # E >= 0 (Ramsauer et al.), |ξ|² for an empty memory

    def __init__(
        self,
        batch_size: int,
        code_size: int,
        beta: float | None = None,
        steps: int = 1,
        capacity: int = 64,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(batch_size, code_size, dtype, device)
        beta = 1.0 / math.sqrt(code_size) if beta is None else beta
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be a finite number > 0, actual value: {beta!r}")
        for name, value in (("steps", steps), ("capacity", capacity)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, actual value: {value!r}")
        self.beta = float(beta)
        self.steps = steps
        self.patterns = torch.zeros(batch_size, capacity, code_size, dtype=dtype, device=self.device)  # X [B, capacity, C]
        self.counts = torch.zeros(batch_size, dtype=torch.long, device=self.device)  # N_b [B]

    @property
    def readout_specs(self) -> dict[str, ReadoutSpec]:
        return {"retrieval": ReadoutSpec((self.code_size,), "code"), "novelty": ReadoutSpec((1,), "energy")}

    @property
    def state_floats(self) -> int:
        """Numbers the fullest memory holds now, ``max_b N_b · C``."""
        return int(self.counts.max()) * self.code_size

    def reset(self, mask: torch.Tensor | None = None) -> None:
        if mask is None:
            self.counts.zero_()
            return
        self.counts[self._check_mask(mask)] = 0

    @torch.no_grad()
    def write(self, z: torch.Tensor) -> None:
        """Append codes ``z [B, C]``, one to each memory."""
        if int(self.counts.max()) == self.patterns.shape[1]:
            self.patterns = torch.cat([self.patterns, torch.zeros_like(self.patterns)], dim=1)  # [B, 2 capacity, C]
        self.patterns[torch.arange(self.batch_size, device=self.device), self.counts] = z
        self.counts += 1

    def _used(self) -> torch.Tensor:
        """``[B, capacity]`` bool: the rows that hold a stored code."""
        return torch.arange(self.patterns.shape[1], device=self.device)[None, :] < self.counts[:, None]

    def _scores(self, xi: torch.Tensor) -> torch.Tensor:
        """``β x_iᵀξ [B, Q, capacity]``, −inf for the unused rows."""
        scores = self.beta * (xi @ self.patterns.transpose(-1, -2))  # [B, Q, capacity]
        return scores.masked_fill(~self._used()[:, None, :], -math.inf)

    @torch.no_grad()
    def retrieve(self, xi: torch.Tensor) -> torch.Tensor:
        """``steps`` updates ``ξ <- Xᵀ softmax(β X ξ)`` from queries ``ξ [B, Q, C]``; returns ``[B, Q, C]``."""
        empty = (self.counts == 0)[:, None, None]  # [B, 1, 1]
        out = xi
        for _ in range(self.steps):
            p = torch.softmax(self._scores(out), dim=-1).nan_to_num(0.0)  # an empty memory's row is all −inf [B, Q, capacity]
            out = torch.where(empty, xi, p @ self.patterns)
        return out

    @torch.no_grad()
    def energy(self, xi: torch.Tensor) -> torch.Tensor:
        """``E(ξ) [B, Q]`` of queries ``ξ [B, Q, C]`` (module docstring)."""
        n = self.counts.clamp_min(1).to(self.dtype)  # [B]
        norms_sq = (self.patterns * self.patterns).sum(-1)  # [B, capacity]
        max_norm_sq = norms_sq.masked_fill(~self._used(), 0.0).amax(-1)  # M² [B]
        half_sq = 0.5 * (xi * xi).sum(-1)  # ½ ξᵀξ [B, Q]
        lse = torch.logsumexp(self._scores(xi), dim=-1) / self.beta  # [B, Q]
        energy = -lse + half_sq + (torch.log(n) / self.beta + 0.5 * max_norm_sq)[:, None]
        return torch.where((self.counts == 0)[:, None], 2.0 * half_sq, energy)

    def _step(self, z: torch.Tensor, write: bool, wanted: frozenset[str]) -> dict[str, torch.Tensor]:
        out = {"novelty": self.energy(z[:, None])}  # [B, 1]
        if "retrieval" in wanted:
            out["retrieval"] = self.retrieve(z[:, None])[:, 0]  # [B, C]
        if write:
            self.write(z)
        return out
