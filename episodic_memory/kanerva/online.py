"""B memories advanced one code per step: the hot path of the RL wrappers.

Shapes: ``B`` memories, ``K`` slots, ``C`` code size; codes ``z [B, C]``, weights ``w [B, K]``.

Every step addresses a code against each memory (DKM eq. 6), runs code-space attractor reads,
then writes the code (KM eq. 9-11, rank one). Factorising ``A = R Rᵀ + λI`` each step costs
``O(K²C + K³)`` per memory. But a rank-one write changes R by ``a Δ`` (``a [K]``, ``Δ [C]``), so A
changes by rank two,

    A' = A + V N Vᵀ,  V = [a, R Δᵀ] [K, 2],  N = [[|Δ|², 1], [1, 0]],

and this class keeps ``A⁻¹`` in step with the Woodbury identity at ``O(K² + KC)`` per memory,
recomputing it from a Cholesky factor every ``refresh_every`` writes so that float32 rounding
cannot accumulate. Products are taken row-vector-first (``w A⁻¹``, ``w R``): on CPU these batched
row products are several times faster than matrix-times-column ones.

No autograd: memory writes never carry gradients during RL.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from episodic_memory.kanerva.memory import KanervaMemory, MemoryState, addressing_factor

__all__ = ["OnlineMemory", "StepReadout"]


class StepReadout(NamedTuple):
    """What one :meth:`OnlineMemory.step` read before writing.

    :param weights: ``μw [B, K]``, the addressing weights of the code (also used for the write).
    :param read: ``μwᵀ R [B, C]``, the one-step reconstruction of the code.
    :param retrieval: the code after the attractor iterations, ``[B, C]``.
    """

    weights: torch.Tensor
    read: torch.Tensor
    retrieval: torch.Tensor


class OnlineMemory:
    """A batch of B memories, each started at the prior of ``memory`` and written one code per step.

    :param memory: supplies the prior ``MN(R0, U0, I)``, σξ and σw0. The prior is read once, at
        construction: build a new OnlineMemory after changing the model.
    :param batch_size: B, e.g. the number of environments.
    :param refresh_every: writes between exact recomputations of ``(R Rᵀ + λI)⁻¹``.
    :param prior: the B memories' own priors (``mean [B, K, C]``, ``cov [B, K, K]``) where they differ,
        e.g. the sub-memories of a product memory; None: every memory starts at ``memory``'s prior.

    Example::

        online = OnlineMemory(dkm.memory, batch_size=8)
        readout = online.step(z, attractor_steps=5)   # z [8, C]: read-outs, then write
        online.reset(done)                            # done [8] bool: those memories back to the prior
    """

    def __init__(
        self, memory: KanervaMemory, batch_size: int, refresh_every: int = 256, prior: MemoryState | None = None
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(refresh_every, int) or refresh_every < 1:
            raise ValueError(f"refresh_every must be a positive int, got {refresh_every!r}")
        self.batch_size = batch_size
        self.refresh_every = refresh_every
        self.num_slots = memory.num_slots
        self.code_size = memory.code_size
        self.ridge = memory.ridge
        self.obs_noise_var = memory.obs_noise_var
        if prior is not None and (prior.mean.shape[0] != batch_size or prior.mean.shape[1:] != (self.num_slots, self.code_size)):
            raise ValueError(
                f"prior must hold {batch_size} memories of [{self.num_slots}, {self.code_size}], got {tuple(prior.mean.shape)}"
            )
        with torch.no_grad():
            R0, U0 = memory.prior(1) if prior is None else prior
            self._R0 = R0.detach().clone()  # [1 or B, K, C]
            self._U0 = U0.detach().clone()  # [1 or B, K, K]
            self._A0_inv = self._addressing_inverse(self._R0)  # [1 or B, K, K]
        self.R = self._R0.expand(batch_size, -1, -1).clone()  # [B, K, C]: expand from 1 or keep B
        self.U = self._U0.expand(batch_size, -1, -1).clone()  # [B, K, K]
        self.A_inv = self._A0_inv.expand(batch_size, -1, -1).clone()  # (R Rᵀ + λI)⁻¹ [B, K, K]
        self._writes_since_refresh = 0

    @property
    def state(self) -> MemoryState:
        """The current memories as a :class:`MemoryState` (``mean [B, K, C]``, ``cov [B, K, K]``).

        These are the live tensors, updated in place by later writes: clone them to keep a snapshot.
        """
        return MemoryState(self.R, self.U)

    @property
    def dtype(self) -> torch.dtype:
        return self.R.dtype

    @property
    def device(self) -> torch.device:
        return self.R.device

    # ----------------------------------------------------------------------------------------
    # Public steps
    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Return the memories where ``mask [B]`` (bool) is True to the prior; all of them if ``mask`` is None."""
        if mask is None:
            self.R.copy_(self._R0.expand_as(self.R))
            self.U.copy_(self._U0.expand_as(self.U))
            self.A_inv.copy_(self._A0_inv.expand_as(self.A_inv))
            return
        if mask.shape != (self.batch_size,) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape [{self.batch_size}], got {mask.dtype} {tuple(mask.shape)}")
        m = mask.to(self.device)[:, None, None]  # [B, 1, 1]
        self.R = torch.where(m, self._R0, self.R)
        self.U = torch.where(m, self._U0, self.U)
        self.A_inv = torch.where(m, self._A0_inv, self.A_inv)

    @torch.no_grad()
    def address(self, z: torch.Tensor) -> torch.Tensor:
        """``μw = (R Rᵀ + λI)⁻¹ R z`` (DKM eq. 6) for codes ``z [B, C]``; returns ``[B, K]``."""
        self._check_codes(z)
        return self._address(z[:, None])[:, 0]

    @torch.no_grad()
    def retrieve(self, z: torch.Tensor, steps: int) -> torch.Tensor:
        """Code-space attractor: ``z <- read(address(z))`` ``steps`` times, ``[B, C] -> [B, C]``."""
        self._check_codes(z)
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        if steps == 0:
            return z
        w = self._iterate(self._address(z[:, None]), steps - 1)  # [B, 1, K]
        return (w @ self.R)[:, 0]

    @torch.no_grad()
    def write(self, z: torch.Tensor, w: torch.Tensor | None = None) -> None:
        """Write codes ``z [B, C]`` with weights ``w [B, K]`` (default: address ``z``), KM eq. 9-11."""
        self._check_codes(z)
        if w is None:
            w = self._address(z[:, None])
        elif w.shape != (self.batch_size, self.num_slots):
            raise ValueError(f"w must have shape [{self.batch_size}, {self.num_slots}], got {tuple(w.shape)}")
        else:
            w = w[:, None]
        self._write(z[:, None], w)

    @torch.no_grad()
    def peek(self, z: torch.Tensor, attractor_steps: int) -> StepReadout:
        """Read-outs of codes ``z [B, C]`` from the memories as they are, without writing."""
        self._check_codes(z)
        if not isinstance(attractor_steps, int) or attractor_steps < 1:
            raise ValueError(f"attractor_steps must be a positive int, got {attractor_steps!r}")
        w = self._address(z[:, None])  # DKM eq. 6 [B, 1, K]
        read = w @ self.R  # [B, 1, C]
        retrieval = read if attractor_steps == 1 else self._iterate(w, attractor_steps - 1) @ self.R
        return StepReadout(w[:, 0], read[:, 0], retrieval[:, 0])

    @torch.no_grad()
    def step(self, z: torch.Tensor, attractor_steps: int) -> StepReadout:
        """Read-outs of codes ``z [B, C]`` from the memories as they are (:meth:`peek`), then write them.

        One address serves both the first attractor iteration and the write.
        """
        readout = self.peek(z, attractor_steps)
        self._write(z[:, None], readout.weights[:, None], readout.read[:, None])
        return readout

    def refresh(self) -> None:
        """Recompute ``(R Rᵀ + λI)⁻¹`` exactly (done automatically every ``refresh_every`` writes)."""
        with torch.no_grad():
            self.A_inv = self._addressing_inverse(self.R)
        self._writes_since_refresh = 0

    # ----------------------------------------------------------------------------------------
    # Kernels
    # ----------------------------------------------------------------------------------------
    def _addressing_inverse(self, R: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_inverse(addressing_factor(R, self.ridge))

    def _address(self, z: torch.Tensor) -> torch.Tensor:
        """``z [B, T, C] -> μw [B, T, K]`` as rows: ``μwᵀ = (z Rᵀ) A⁻¹`` (A⁻¹ is symmetric)."""
        return (z @ self.R.transpose(-1, -2)) @ self.A_inv  # DKM eq. 6

    def _iterate(self, w: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` attractor iterations in weight space, ``[B, T, K] -> [B, T, K]``.

        ``address(read(w)) = A⁻¹ R Rᵀ w = A⁻¹ (A − λI) w = w − λ A⁻¹ w``: one product with A⁻¹ per
        iteration instead of three (with Rᵀ, A⁻¹ and R).
        """
        for _ in range(steps):
            w = w - self.ridge * (w @ self.A_inv)
        return w

    def _write(self, z: torch.Tensor, w: torch.Tensor, read: torch.Tensor | None = None) -> None:
        """Rank-one write of ``z [B, 1, C]`` at ``w [B, 1, K]``, in place, with the Woodbury update of A⁻¹.

        ``read`` is ``w R [B, 1, C]`` when the caller has it already.
        """
        R, U, A_inv = self.R, self.U, self.A_inv
        Delta = z - (w @ R if read is None else read)  # KM eq. 9 [B, 1, C]
        Sigma_c = w @ U  # KM eq. 9 [B, 1, K]
        Sigma_z = (Sigma_c * w).sum(-1, keepdim=True).clamp_min(0.0) + self.obs_noise_var  # KM eq. 10 [B, 1, 1]
        a = Sigma_c / Sigma_z  # gain as a row [B, 1, K]
        v = Sigma_c * Sigma_z.rsqrt()  # [B, 1, K]

        # A' = A + V N Vᵀ with V = [aᵀ, R Δᵀ]; Woodbury: A'⁻¹ = A⁻¹ − A⁻¹V (N⁻¹ + VᵀA⁻¹V)⁻¹ VᵀA⁻¹.
        Vt = torch.cat([a, Delta @ R.transpose(-1, -2)], dim=1)  # Vᵀ as rows, with R before the write [B, 2, K]
        AVt = Vt @ A_inv  # (A⁻¹V)ᵀ [B, 2, K]
        G = AVt @ Vt.transpose(-1, -2)  # VᵀA⁻¹V [B, 2, 2]
        delta_sq = (Delta * Delta).sum(-1)[:, 0]  # |Δ|² [B]
        s11, s12, s22 = G[:, 0, 0], G[:, 0, 1] + 1.0, G[:, 1, 1] - delta_sq  # S = N⁻¹ + VᵀA⁻¹V, N⁻¹ = [[0, 1], [1, −|Δ|²]]
        det = s11 * s22 - s12 * s12  # < 0: det S = −det A' / det A
        S_inv = torch.stack([torch.stack([s22, -s12], -1), torch.stack([-s12, s11], -1)], -2) / det[:, None, None]  # [B, 2, 2]

        R.addcmul_(a.transpose(-1, -2), Delta)  # KM eq. 9, R += aᵀΔ [B, K, C]
        U.addcmul_(v.transpose(-1, -2), v, value=-1.0)  # KM eq. 11, U −= vᵀv, exactly symmetric [B, K, K]
        U.diagonal(dim1=-2, dim2=-1).clamp_(min=torch.finfo(U.dtype).eps)
        SAVt = S_inv @ AVt  # [B, 2, K]
        # A⁻¹ −= (A⁻¹V) S⁻¹ (A⁻¹V)ᵀ as two broadcast outer products (a batched bmm with an inner size
        # of 2 runs one small GEMM per memory on CPU).
        A_inv.addcmul_(AVt[:, 0:1].transpose(-1, -2), SAVt[:, 0:1], value=-1.0)
        A_inv.addcmul_(AVt[:, 1:2].transpose(-1, -2), SAVt[:, 1:2], value=-1.0)  # [B, K, K]

        self._writes_since_refresh += 1
        if self._writes_since_refresh >= self.refresh_every:
            self.refresh()

    def _check_codes(self, z: torch.Tensor) -> None:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
        if z.shape != (self.batch_size, self.code_size):
            raise ValueError(f"z must have shape [B={self.batch_size}, C={self.code_size}], got {tuple(z.shape)}")
        if z.dtype != self.dtype:
            raise ValueError(f"z must have the memory's dtype {self.dtype}, got {z.dtype}")
        if not bool(torch.isfinite(z).all()):
            raise ValueError("z holds NaN or inf values")
