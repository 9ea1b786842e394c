"""A product of small Kanerva memories: the memory of the Product Kanerva Machine (Marblestone, Wu and Wayne 2020).

Shapes: ``B`` product memories, each of ``M`` sub-memories with ``K`` slots of ``C`` columns;
codes ``z [B, T, C]``, selection weights ``α [B, T, M]`` (each item's weights sum to 1), the
sub-memories' addressing weights ``w [B*M, T, K]``. The state of B product memories is one
:class:`~episodic_memory.kanerva.memory.MemoryState` of ``B*M`` small memories (``mean [B*M, K, C]``,
``cov [B*M, K, K]``), sub-memory m of product memory b at row ``b*M + m``: every kernel of
:class:`~episodic_memory.kanerva.memory.KanervaMemory` then runs on all of them at once, and a
step costs ``O(M (K² + K C))``, the small memories' size, not the ``O((M K)² + M K C)`` of one
memory with as many slots.

Our copy of the paper is its abstract ("dynamically combines many smaller Kanerva Machines"); the
method is our reconstruction, every part of it our choice:

- **Experts.** Sub-memory m reads a code as the Gaussian ``N(w_mᵀM_m, σξ²/α_m I)``: a Kanerva read
  whose noise grows as the item's selection weight α_m falls. The item's read is their product of
  experts, a Gaussian with precision ``Σ_m α_m/σξ² = 1/σξ²`` and mean ``Σ_m α_m w_mᵀM_m``
  (:meth:`ProductKanervaMemory.read`).
- **Writing.** Each sub-memory conditions on the item as its own expert does, with noise
  ``σξ²/α_m``: the sub-memories stay independent, each posterior exact (KM eq. 9-11). The noise
  scaling equals scaling the item by √α_m (``z, w -> √α z, √α w`` with noise σξ², what
  :meth:`ProductKanervaMemory.write` does), so each sub-memory's write is the KM's own rule, and an
  item with ``α_m = 0`` leaves sub-memory m as it was. (The normalised product would couple the
  sub-memories' posteriors through its normaliser; the factorised form is what keeps a write at
  the small memories' cost.)
- **Addressing.** Each sub-memory addresses the code by content, as the DKM does (eq. 6, its own
  ridge solve); the selection weights come from the model (a learned function of the code).
"""

from __future__ import annotations

import torch
from torch import nn

from episodic_memory.kanerva.memory import KanervaMemory, MemoryState, matrix_normal_kl

__all__ = ["ProductKanervaMemory"]


class ProductKanervaMemory(nn.Module):
    """M Kanerva memories of K slots, each with its own learned prior ``MN(R0_m, U0_m, I)``, written and read as one.

    :param num_memories: M, the sub-memories.
    :param slots_per_memory: K, the slots of each.
    :param code_size: C.
    :param obs_noise_std: σξ (shared); :param w_prior_std: σw0 of each sub-memory's ``p(w)`` (shared).

    Example::

        pm = ProductKanervaMemory(num_memories=4, slots_per_memory=8, code_size=100)
        state = pm.prior(batch_size=2)                  # mean [8, 8, 100]: 2 memories x 4 sub-memories
        state = pm.write_sequential(state, z, alpha)    # z [2, T, 100], alpha [2, T, 4]
        z_hat = pm.read(state, pm.address(state, z), alpha)
    """

    def __init__(
        self,
        num_memories: int,
        slots_per_memory: int,
        code_size: int,
        obs_noise_std: float = 1.0,
        w_prior_std: float = 1.0,
    ) -> None:
        super().__init__()
        if isinstance(num_memories, bool) or not isinstance(num_memories, int) or num_memories < 1:
            raise ValueError(f"num_memories must be a positive int, got {num_memories!r}")
        self.subs = nn.ModuleList(
            KanervaMemory(slots_per_memory, code_size, obs_noise_std=obs_noise_std, w_prior_std=w_prior_std)
            for _ in range(num_memories)
        )
        self.num_memories = num_memories
        self.slots_per_memory = slots_per_memory
        self.code_size = code_size
        self.obs_noise_std = float(obs_noise_std)
        self.w_prior_std = float(w_prior_std)

    @property
    def kernel(self) -> KanervaMemory:
        """The sub-memories share K, C, σξ and σw0, so one's kernels serve them all (its prior is not used)."""
        return self.subs[0]

    @property
    def num_slots(self) -> int:
        """M K, the slots of all sub-memories together."""
        return self.num_memories * self.slots_per_memory

    @property
    def obs_noise_var(self) -> float:
        return self.obs_noise_std**2

    @property
    def ridge(self) -> float:
        return self.kernel.ridge

    def prior(self, batch_size: int) -> MemoryState:
        """The prior of B product memories: ``mean [B*M, K, C]``, ``cov [B*M, K, K]`` (row ``b*M + m``)."""
        priors = [sub.prior(batch_size) for sub in self.subs]  # M x ([B, K, C], [B, K, K])
        mean = torch.stack([p.mean for p in priors], 1).flatten(0, 1)  # [B, M, K, C] -> [B*M, K, C]
        cov = torch.stack([p.cov for p in priors], 1).flatten(0, 1)  # [B*M, K, K]
        return MemoryState(mean, cov)

    def kl(self, state: MemoryState) -> torch.Tensor:
        """``KL(q(M) || p(M))`` of each product memory, the sum over its independent sub-memories: ``[B]``."""
        B = self._batch(state)
        return matrix_normal_kl(state, self.prior(B)).view(B, self.num_memories).sum(1)

    def address(self, state: MemoryState, z: torch.Tensor) -> torch.Tensor:
        """Each sub-memory's MAP weights of codes ``z [B, T, C]`` (DKM eq. 6): ``μw [B*M, T, K]``."""
        return self.kernel.address(state, self._per_memory(z, state))

    def read(self, state: MemoryState, w: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The product of the experts' reads: ``Σ_m α_m w_mᵀR_m``, ``w [B*M, T, K]``, ``α [B, T, M] -> [B, T, C]``."""
        B = self._batch(state)
        self._check_alpha(alpha, B, w.shape[1])
        reads = self.kernel.read(state, w).view(B, self.num_memories, -1, self.code_size)  # [B, M, T, C]
        return torch.einsum("btm,bmtc->btc", alpha, reads)

    def write(self, state: MemoryState, z: torch.Tensor, w: torch.Tensor, alpha: torch.Tensor) -> MemoryState:
        """Exact posterior of every sub-memory given items ``z [B, T, C]`` at ``w [B*M, T, K]`` with noise ``σξ²/α``."""
        B = self._batch(state)
        self._check_alpha(alpha, B, z.shape[1])
        scale = alpha.clamp_min(0.0).sqrt().transpose(1, 2).reshape(B * self.num_memories, -1, 1)  # √α [B*M, T, 1]
        return self.kernel.write(state, scale * self._per_memory(z, state), scale * w)

    def write_sequential(self, state: MemoryState, z: torch.Tensor, alpha: torch.Tensor) -> MemoryState:
        """DKM-style writing (Algorithm 1) in every sub-memory: item t is addressed against the memories after item t−1."""
        for t in range(z.shape[1]):
            z_t = z[:, t : t + 1]  # [B, 1, C]
            state = self.write(state, z_t, self.address(state, z_t), alpha[:, t : t + 1])
        return state

    def _per_memory(self, z: torch.Tensor, state: MemoryState) -> torch.Tensor:
        """Codes ``[B, T, C]`` repeated for each sub-memory: ``[B*M, T, C]``."""
        if not isinstance(z, torch.Tensor) or z.dim() != 3 or z.shape[0] * self.num_memories != state.batch_size:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must have shape [B={state.batch_size // self.num_memories}, T, C], got {shape}")
        return z.repeat_interleave(self.num_memories, dim=0)

    def _batch(self, state: MemoryState) -> int:
        if not isinstance(state, MemoryState):
            raise TypeError(f"state must be a MemoryState, got {type(state).__name__}")
        if state.batch_size % self.num_memories:
            M = self.num_memories
            raise ValueError(f"a state of product memories holds a multiple of M={M} memories, got {state.batch_size}")
        return state.batch_size // self.num_memories

    def _check_alpha(self, alpha: torch.Tensor, B: int, T: int) -> None:
        if not isinstance(alpha, torch.Tensor) or alpha.shape != (B, T, self.num_memories):
            shape = tuple(alpha.shape) if isinstance(alpha, torch.Tensor) else type(alpha).__name__
            raise ValueError(f"alpha must have shape [B={B}, T={T}, M={self.num_memories}], got {shape}")
        if not bool(torch.isfinite(alpha).all()):
            raise ValueError("alpha holds NaN or inf values")
