"""A Kanerva memory addressed by time: every code written at its step's address, read back by step.

Shapes: ``B`` memories, ``K`` slots, ``C`` code size, ``L`` queries; codes ``z [B, C]``, addresses
``p(t) [K]``, the posterior mean ``R [B, K, C]`` and row covariance ``U [B, K, K]``; the read-outs
``recall [B, L, C]`` and ``recall_sum [B, C]``.

A memory addressed by content (the DKM's, a Hopfield network) keeps what an episode showed, not
when: its posterior does not depend on the order of the writes. This one keeps the order. It is
the Kanerva Machine's memory with its addresses given rather than computed from the frame: the code
``z_t`` of step ``t`` is written at the fixed address ``w = p(t)`` (KM eq. 9-11, one rank-one
Bayesian update), and the read at ``w = p(τ)`` (KM eq. 6, ``wᵀR``) is the posterior mean of the
code written at step ``τ``. A step is queried by its lag (``τ = t − ℓ``, ``t`` the step being read,
so lag 1 is the previous observation) or by its position in the episode (``τ`` fixed, 0 the first
observation). A step not written yet (``τ < 0`` or ``τ >= t``) reads as zeros.

The read at the sum of the written steps' addresses, ``(Σ_{τ<t} p(τ))ᵀR``, is by linearity the sum of
their recalls: ``recall_sum``, what the episode has shown so far, summed (of one-hot observations, how
often each value came up; a memory of sets, which needs no order, answers it as well).

Our choices, where the Kanerva Machine has addresses learned from frames:

- prior ``MN(0, I, I)`` (``R0 = 0``, ``U0 = I``) and read noise ``σ``;
- addresses: ``p(t)`` is row ``t mod K`` of ``Q_⌊t/K⌋``, independent random orthogonal ``K x K``
  matrices drawn once from a fixed seed, for ``t < horizon``, and ``p(t mod horizon)`` beyond. The
  first K steps of an episode therefore have orthonormal addresses and are recalled exactly, up to
  the shrinkage ``1/(1 + σ²)``. Later steps' addresses overlap the earlier ones', and the posterior
  mean is the ridge regression of the codes on their addresses: every recall then mixes in the other
  steps' codes, more as the episode grows (a fixed-size memory of K x C numbers cannot hold more
  than K codes exactly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from episodic_memory.backends.base import MemoryBackend, ReadoutSpec
from episodic_memory.kanerva.memory import MemoryState, write_one

__all__ = ["TimeAddressedMemory", "time_addresses"]


def time_addresses(num_slots: int, horizon: int, seed: int = 0) -> torch.Tensor:
    """The addresses ``p(t)`` of steps ``t < horizon`` as rows, ``[horizon, K]`` float64 (module docstring).

    Row ``t`` is row ``t mod K`` of the ``⌊t/K⌋``-th of independent random orthogonal matrices, drawn
    from ``seed`` by a generator of its own (the global random state is left alone).
    """
    generator = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(math.ceil(horizon / num_slots)):
        q, r = torch.linalg.qr(torch.randn(num_slots, num_slots, generator=generator, dtype=torch.float64))
        blocks.append(q * torch.sign(torch.diagonal(r))[None])  # sign fix: Haar-distributed Q
    return torch.cat(blocks)[:horizon]


class TimeAddressedMemory(MemoryBackend):
    """B Kanerva memories, each written one code per step at the step's address and read at chosen steps.

    Read-outs of :meth:`step`, from the memory before the step's write:

    - ``recall [L, C]`` (kind ``sequence``; when there are lags or positions), the posterior means of the
      codes of the queried steps, lags first, then positions, in the order given; zeros for a step not
      written yet;
    - ``recall_sum [C]`` (kind ``total``, or ``count`` with ``counts``), the read at the sum of the written steps'
      addresses: the sum of every written step's recall, zeros before the first write.

    :param lags: steps back from the one being read (each >= 1).
    :param positions: steps from the start of the episode (each >= 0).
    :param num_slots: K, rows of each memory.
    :param obs_noise_std: σ, the std of the read noise.
    :param horizon: steps with addresses of their own; step t uses the address of ``t mod horizon``.
    :param counts: the codes written are entries in [0, 1] (one-hot observations, kept as they are), so that
        ``recall_sum`` counts how many times each entry was on: it is declared a ``count``, not a ``total``.
    """

    def __init__(
        self,
        batch_size: int,
        code_size: int,
        lags: Sequence[int] = (),
        positions: Sequence[int] = (),
        num_slots: int = 64,
        obs_noise_std: float = 0.1,
        horizon: int = 4096,
        counts: bool = False,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(batch_size, code_size, dtype, device)
        lags, positions = tuple(lags), tuple(positions)
        for name, values, low in (("lags", lags, 1), ("positions", positions, 0)):
            if any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in values):
                raise ValueError(f"{name} must be ints >= {low}, actual value: {values!r}")
        for name, value in (("num_slots", num_slots), ("horizon", horizon)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, actual value: {value!r}")
        if (
            isinstance(obs_noise_std, bool)
            or not isinstance(obs_noise_std, (int, float))
            or not (math.isfinite(obs_noise_std) and obs_noise_std > 0)
        ):
            raise ValueError(f"obs_noise_std must be a finite number > 0, actual value: {obs_noise_std!r}")
        self.lags, self.positions = lags, positions
        self.num_slots = num_slots
        self.obs_noise_var = float(obs_noise_std) ** 2
        self.horizon = horizon
        self.counts = counts
        self.addresses = time_addresses(num_slots, horizon).to(self.device, dtype)  # p(t) [horizon, K]
        self._lags = torch.tensor(lags, dtype=torch.long, device=self.device)  # [L_lags]
        self._positions = torch.tensor(positions, dtype=torch.long, device=self.device)  # [L_positions]
        B, K, C = batch_size, num_slots, code_size
        self.R = torch.zeros(B, K, C, dtype=dtype, device=self.device)  # prior mean R0 = 0
        self.U = torch.eye(K, dtype=dtype, device=self.device).expand(B, K, K).clone()  # prior row covariance U0 = I
        self.t = torch.zeros(B, dtype=torch.long, device=self.device)  # steps written since the reset
        # Σ_{τ<t} p(τ) for t <= horizon, so that recall_sum needs no state of its own [horizon + 1, K]
        self._address_sums = torch.cat([self.addresses.new_zeros(1, K), self.addresses.cumsum(0)])

    @property
    def readout_specs(self) -> dict[str, ReadoutSpec]:
        num_steps = len(self.lags) + len(self.positions)
        recall = {"recall": ReadoutSpec((num_steps, self.code_size), "sequence")} if num_steps else {}
        return {**recall, "recall_sum": ReadoutSpec((self.code_size,), "count" if self.counts else "total")}

    @property
    def state_floats(self) -> int:
        K = self.num_slots
        return K * self.code_size + K * (K + 1) // 2  # R and the symmetric U

    def reset(self, mask: torch.Tensor | None = None) -> None:
        if mask is None:
            self.R.zero_()
            self.U.copy_(torch.eye(self.num_slots, dtype=self.dtype, device=self.device))
            self.t.zero_()
            return
        mask = self._check_mask(mask)
        self.R[mask] = 0.0
        self.U[mask] = torch.eye(self.num_slots, dtype=self.dtype, device=self.device)
        self.t[mask] = 0

    def _step(self, z: torch.Tensor, write: bool, wanted: frozenset[str]) -> dict[str, torch.Tensor]:
        out = {"recall": self._recall()} if "recall" in wanted else {}
        if "recall_sum" in wanted:
            out["recall_sum"] = (self._address_sum()[:, None] @ self.R)[:, 0]  # KM eq. 6 at Σ p(τ) [B, C]
        if write:
            self._write(z)
        return out

    def _recall(self) -> torch.Tensor:
        """``p(τ)ᵀ R`` at every queried step τ (KM eq. 6), zeros where τ is not written yet, ``[B, L, C]``."""
        t = self.t[:, None]  # [B, 1]
        tau = torch.cat([t - self._lags, self._positions.expand(self.batch_size, -1)], dim=1)  # [B, L]
        written = (tau >= 0) & (tau < t)  # [B, L]
        w = self.addresses[tau.clamp_min(0) % self.horizon] * written[..., None]  # [B, L, K]
        return w @ self.R  # [B, L, C]

    def _write(self, z: torch.Tensor) -> None:
        """Rank-one Bayesian write of ``z [B, C]`` at ``w = p(t)`` (KM eq. 9-11); then ``t += 1``."""
        w = self.addresses[self.t % self.horizon]  # [B, K]
        self.R, self.U = write_one(MemoryState(self.R, self.U), z[:, None], w[:, None], self.obs_noise_var)
        self.t += 1

    def _address_sum(self) -> torch.Tensor:
        """``Σ_{τ<t} p(τ)`` ``[B, K]``: whole cycles of the ``horizon`` addresses, then the steps of the current one."""
        cycles, rest = self.t // self.horizon, self.t % self.horizon  # [B]
        return cycles[:, None].to(self.dtype) * self._address_sums[self.horizon] + self._address_sums[rest]
