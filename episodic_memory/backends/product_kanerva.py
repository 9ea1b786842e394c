"""The Product Kanerva Machine's memory as a backend: M small Kanerva memories per environment, one code a step.

Shapes: ``B`` product memories of ``M`` sub-memories with ``K`` slots of ``C``; codes ``z [B, C]``,
selection weights ``α [B, M]``; the sub-memories live in one
:class:`~episodic_memory.kanerva.online.OnlineMemory` of ``B*M`` memories (row ``b*M + m``), each
started at its own prior, so a step costs ``O(M (K² + K C))``.

Each step, from the memories as they are: every sub-memory addresses the code (DKM eq. 6); the
read is their product ``Σ_m α_m w_mᵀR_m`` (:mod:`episodic_memory.kanerva.product`); then every
sub-memory writes the code with noise ``σξ²/α_m`` (the KM's rank-one rule on ``√α_m z, √α_m w_m``),
which equals the model's batch write item by item. Read-outs:

- ``retrieval [C]`` (code): ``attractor_steps`` iterations ``z <- Σ_m α_m(z) w_m(z)ᵀR_m``;
- ``novelty [1]`` (energy, >= 0): ``½|z − Σ_m α_m w_mᵀR_m|²/σξ² + Σ_m ½|w_m|²/σw0²``, the
  addressing objective of DKM eq. 5 with the product read;
- ``memory [M K, C]`` (rows): every sub-memory's posterior mean R, stacked;
- ``allocation [M]`` (code): α, which sub-memories the code goes to.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from episodic_memory.backends.base import MemoryBackend, ReadoutSpec
from episodic_memory.kanerva.online import OnlineMemory
from episodic_memory.kanerva.product import ProductKanervaMemory

__all__ = ["OnlineProductKanervaMemory"]


class OnlineProductKanervaMemory(MemoryBackend):
    """B product memories (:class:`~episodic_memory.kanerva.product.ProductKanervaMemory`), written one code per step.

    :param memory: supplies the M priors, σξ and σw0 (read once, at construction).
    :param selection: codes ``[B, C]`` -> selection weights ``[B, M]`` (e.g. a PKM's :meth:`selection`).
    :param attractor_steps: iterations of the ``retrieval`` read-out (at least 1).
    """

    nonnegative_novelty = True

    def __init__(
        self,
        memory: ProductKanervaMemory,
        selection: Callable[[torch.Tensor], torch.Tensor],
        batch_size: int,
        attractor_steps: int = 5,
    ) -> None:
        if isinstance(attractor_steps, bool) or not isinstance(attractor_steps, int) or attractor_steps < 1:
            raise ValueError(f"attractor_steps must be a positive int, actual value: {attractor_steps!r}")
        with torch.no_grad():
            prior = memory.prior(batch_size)  # [B*M, K, C], [B*M, K, K]
        super().__init__(batch_size, memory.code_size, prior.mean.dtype, prior.mean.device)
        self.memory = memory
        self.selection = selection
        self.attractor_steps = attractor_steps
        self.num_memories = memory.num_memories
        self.online = OnlineMemory(memory.kernel, batch_size * memory.num_memories, prior=prior)

    @property
    def readout_specs(self) -> dict[str, ReadoutSpec]:
        M, C = self.num_memories, self.code_size
        return {
            "retrieval": ReadoutSpec((C,), "code"),
            "novelty": ReadoutSpec((1,), "energy"),
            "memory": ReadoutSpec((self.memory.num_slots, C), "rows"),
            "allocation": ReadoutSpec((M,), "code"),
        }

    @property
    def state_floats(self) -> int:
        K, C = self.memory.slots_per_memory, self.code_size
        return self.num_memories * (K * C + K * (K + 1) // 2)  # each sub-memory's R and symmetric U

    def reset(self, mask: torch.Tensor | None = None) -> None:
        if mask is None:
            self.online.reset(None)
        else:
            self.online.reset(self._check_mask(mask).repeat_interleave(self.num_memories))

    def _alpha(self, z: torch.Tensor) -> torch.Tensor:
        """Selection weights ``[B, M]`` of codes ``[B, C]``, checked."""
        alpha = self.selection(z)
        if alpha.shape != (self.batch_size, self.num_memories) or not bool(torch.isfinite(alpha).all()):
            expected = [self.batch_size, self.num_memories]
            raise ValueError(f"selection must give finite weights {expected}, got {tuple(alpha.shape)}")
        return alpha

    def _read(self, z: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sub-memory's weights ``[B*M, K]`` for codes ``z [B, C]`` and the product read ``[B, C]``."""
        B, M, K = self.batch_size, self.num_memories, self.memory.slots_per_memory
        R = self.online.R.view(B, M, K, -1)  # [B, M, K, C]
        A_inv = self.online.A_inv.view(B, M, K, K)  # (R Rᵀ + λI)⁻¹, symmetric
        w = (A_inv @ (R @ z[:, None, :, None]))[..., 0]  # DKM eq. 6 in every sub-memory [B, M, K]
        reads = (w[:, :, None, :] @ R)[:, :, 0]  # w_mᵀR_m [B, M, C]
        return w.reshape(B * M, K), (alpha[:, :, None] * reads).sum(1)

    def _step(self, z: torch.Tensor, write: bool, wanted: frozenset[str]) -> dict[str, torch.Tensor]:
        B, M = self.batch_size, self.num_memories
        alpha = self._alpha(z)  # [B, M]
        w, read = self._read(z, alpha)
        out: dict[str, torch.Tensor] = {"allocation": alpha}
        if "novelty" in wanted:
            surprise = ((z - read) ** 2).sum(-1) / (2 * self.memory.obs_noise_var)  # [B]
            weight_term = (w**2).sum(-1).view(B, M).sum(1) / (2 * self.memory.w_prior_std**2)  # [B]
            out["novelty"] = (surprise + weight_term)[:, None]
        if "retrieval" in wanted:
            retrieval = read
            for _ in range(self.attractor_steps - 1):
                retrieval = self._read(retrieval, self.selection(retrieval))[1]
            out["retrieval"] = retrieval
        if "memory" in wanted:
            out["memory"] = self.online.R.reshape(B, M * self.memory.slots_per_memory, self.code_size).clone()
        if write:
            scale = alpha.clamp_min(0.0).sqrt().reshape(B * M, 1)  # √α per sub-memory [B*M, 1]
            self.online.write(scale * z.repeat_interleave(M, dim=0), scale * w)  # noise σξ²/α_m, KM eq. 9-11
        return out
