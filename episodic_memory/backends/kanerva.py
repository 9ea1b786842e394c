"""The Bayesian Kanerva memory as a backend: the DKM's (dynamic addressing) and the KM's (learned addresses).

Shapes: ``B`` memories, ``K`` slots, ``C`` code size; codes ``z [B, C]``, weights ``w [B, K]``,
the posterior mean ``R [B, K, C]``. Both backends run :class:`~episodic_memory.kanerva.online.OnlineMemory`
(KM eq. 9-11, one rank-one write a step) from the prior of a :class:`KanervaMemory`.

Read-outs, all from the memory before the step's write:

- ``retrieval [C]`` (code). Dynamic addressing: ``attractor_steps`` code-space iterations
  ``z <- read(address(z))`` (DKM §3.5), the first address ``μw`` solved against the memory (eq. 6).
  Learned addresses: the read ``wᵀR``, the mean of ``p(z | y, M)`` (KM eq. 6); the weights come
  from the frame, so there is nothing to iterate.
- ``novelty [1]`` (energy), the surprise of the code. Dynamic addressing: the addressing objective of
  DKM eq. 5 at its minimum, ``½|z − μwᵀR|²/σξ² + ½|μw|²/σw0²``. Learned addresses: ``½|z − wᵀR|²/σξ²``,
  ``−ln p(z | y, M)`` up to a constant (w is not a latent there). Both are >= 0.
- ``memory [K, C]`` (rows): the posterior mean R, a fixed-size summary of the episode so far.

A KM addresses by weights that its encoder computes from the frame (``w = A f(ȳ)``, KM eq. 5), not
from the code, so :class:`LearnedAddressKanervaMemory` takes each step's code and weights together,
as one input ``[z, w]`` of size ``C + K``.
"""

from __future__ import annotations

import torch

from episodic_memory.backends.base import MemoryBackend, ReadoutSpec
from episodic_memory.kanerva.memory import KanervaMemory
from episodic_memory.kanerva.online import OnlineMemory, StepReadout

__all__ = ["DynamicKanervaMemory", "LearnedAddressKanervaMemory"]


class _KanervaBackend(MemoryBackend):
    """What the two addressings share: the online memory, its read-outs' declaration, reset."""

    nonnegative_novelty = True

    def __init__(self, memory: KanervaMemory, batch_size: int, input_size: int) -> None:
        prior_mean = memory.prior(1)[0]
        super().__init__(batch_size, input_size, prior_mean.dtype, prior_mean.device)
        self.memory = memory
        self.online = OnlineMemory(memory, batch_size)

    @property
    def readout_specs(self) -> dict[str, ReadoutSpec]:
        K, C = self.online.num_slots, self.online.code_size
        return {
            "retrieval": ReadoutSpec((C,), "code"),
            "novelty": ReadoutSpec((1,), "energy"),
            "memory": ReadoutSpec((K, C), "rows"),
        }

    @property
    def state_floats(self) -> int:
        K, C = self.online.num_slots, self.online.code_size
        return K * C + K * (K + 1) // 2  # R and the symmetric U

    def reset(self, mask: torch.Tensor | None = None) -> None:
        self.online.reset(None if mask is None else self._check_mask(mask))

    def _readouts(
        self, z: torch.Tensor, readout: StepReadout, R: torch.Tensor | None, weight_term: bool
    ) -> dict[str, torch.Tensor]:
        novelty = ((z - readout.read) ** 2).sum(-1) / (2 * self.memory.obs_noise_var)  # [B]
        if weight_term:
            novelty = novelty + (readout.weights**2).sum(-1) / (2 * self.memory.w_prior_std**2)
        out = {"retrieval": readout.retrieval, "novelty": novelty[:, None]}
        return out if R is None else {**out, "memory": R}

    def _snapshot(self, wanted: frozenset[str]) -> torch.Tensor | None:
        """R before the write ``[B, K, C]`` when the ``memory`` read-out is asked for (the write is in place)."""
        return self.online.R.clone() if "memory" in wanted else None


class DynamicKanervaMemory(_KanervaBackend):
    """B Kanerva memories addressed by their content, as the DKM reads them (DKM eq. 6 and §3.5).

    :param memory: supplies the prior ``MN(R0, U0, I)``, σξ and σw0 (read once, at construction).
    :param attractor_steps: code-space attractor iterations of the ``retrieval`` read-out (at least 1).
    """

    def __init__(self, memory: KanervaMemory, batch_size: int, attractor_steps: int = 5) -> None:
        if isinstance(attractor_steps, bool) or not isinstance(attractor_steps, int) or attractor_steps < 1:
            raise ValueError(f"attractor_steps must be a positive int, actual value: {attractor_steps!r}")
        super().__init__(memory, batch_size, memory.code_size)
        self.attractor_steps = attractor_steps

    def _step(self, z: torch.Tensor, write: bool, wanted: frozenset[str]) -> dict[str, torch.Tensor]:
        R = self._snapshot(wanted)
        steps = self.attractor_steps if "retrieval" in wanted else 1  # the novelty needs only the first address
        readout = (self.online.step if write else self.online.peek)(z, steps)
        return self._readouts(z, readout, R, weight_term=True)


class LearnedAddressKanervaMemory(_KanervaBackend):
    """B Kanerva memories read and written at weights given with each code, as the KM does (KM eq. 5-6).

    Input ``[z, w] [B, C + K]``: the code and its addressing weights (e.g. a KM's ``A f(ȳ)``).

    :param memory: supplies the prior ``MN(R0, U0, I)`` and σξ (read once, at construction).
    """

    def __init__(self, memory: KanervaMemory, batch_size: int) -> None:
        super().__init__(memory, batch_size, memory.code_size + memory.num_slots)

    def _step(self, z: torch.Tensor, write: bool, wanted: frozenset[str]) -> dict[str, torch.Tensor]:
        z, w = z.split([self.online.code_size, self.online.num_slots], dim=-1)  # [B, C], [B, K]
        R = self._snapshot(wanted)
        read = torch.einsum("bk,bkc->bc", w, self.online.R)  # KM eq. 6, before the write [B, C]
        if write:
            self.online.write(z.contiguous(), w.contiguous())
        return self._readouts(z, StepReadout(w, read, read), R, weight_term=False)
