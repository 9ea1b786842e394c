"""Kanerva's sparse distributed memory (SDM) of ±1 patterns.

Shapes: ``B`` memories, ``L`` hard locations, ``C`` bits (the code size); fixed addresses
``A [L, C]`` (uniform random ±1, shared by the B memories), contents ``M [B, L, C]`` (counters,
zero when empty), patterns ``x [B, C]`` or ``[B, N, C]`` (±1; 0 for an erased entry of a query).

Following the Kanerva Machine paper's review (Wu et al., ICLR 2018, App. B; Kanerva 1988):

- a pattern selects the locations within Hamming distance ``τ`` of it,
  ``w_l = 1`` if ``h(x, A_l) = ½(C − x·A_l) <= τ``, else 0 (KM App. B eq. 13). For a query with
  erased (0) bits, ``h`` is measured on the ``n`` known bits and scaled to C bits,
  ``½(n − x·A_l)·C/n`` (our choice: the estimate of the full distance);
- writing adds the pattern to every selected location, ``M_l += w_l x``;
- reading sums the selected locations and thresholds at 0, ``x' = sign(Σ_l w_l M_l)`` (eq. 14),
  iterated by feeding the output back in. A bit whose sum is exactly 0 (no location selected, or
  a tie) keeps its current value: our choice, where eq. 14 would set it to −1.

The radius: ``τ`` defaults to the largest distance at which a random pattern selects at most a
fraction ``activation`` of the locations, ``P(Binomial(C, ½) <= τ) <= activation``. A memory
holds ``L·C`` contents and ``L`` write counts (the addresses are fixed, not written): for ``L = 64``
and ``C = 128``, 8,256 numbers, the EBMM budget.
"""

from __future__ import annotations

import math

import torch

from episodic_memory.backends.base import MemoryBackend, ReadoutSpec, binary_patterns

__all__ = ["SparseDistributedMemory", "radius_for_activation"]


def radius_for_activation(code_size: int, activation: float) -> int:
    """The largest ``τ`` with ``P(Binomial(C, ½) <= τ) <= activation`` (at least 0)."""
    if not (isinstance(activation, (int, float)) and 0.0 < activation < 1.0):
        raise ValueError(f"activation must be in (0, 1), actual value: {activation!r}")
    cdf, tau = 0.0, -1
    for k in range(code_size + 1):
        cdf += math.comb(code_size, k) / 2.0**code_size
        if cdf > activation:
            break
        tau = k
    return max(tau, 0)


class SparseDistributedMemory(MemoryBackend):
    """B sparse distributed memories with L hard locations, written one ±1 pattern per step.

    Read-outs of :meth:`step`: ``retrieval [C]`` (code), the iterated read from the code's pattern;
    ``novelty [1]`` (energy), ``−x·s / n``, ``s = Σ_l w_l M_l`` the summed contents the pattern
    selects and ``n`` the number of patterns written there (1 where none): −C for a pattern the
    selected locations hold alone, near 0 for a new one (our choice of energy: SDM defines none).

    :param num_locations: L, the hard locations.
    :param radius: τ, the Hamming radius of selection; None derives it from ``activation``.
    :param activation: the fraction of locations a random pattern selects, when ``radius`` is None.
    :param read_iterations: reads per retrieval, each fed back as the next query.
    :param seed: seed of the addresses.
    """

    def __init__(
        self,
        batch_size: int,
        code_size: int,
        num_locations: int = 1024,
        radius: int | None = None,
        activation: float = 0.1,
        read_iterations: int = 5,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(batch_size, code_size, dtype, device)
        for name, value in (("num_locations", num_locations), ("read_iterations", read_iterations)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, actual value: {value!r}")
        if radius is None:
            radius = radius_for_activation(code_size, activation)
        elif isinstance(radius, bool) or not isinstance(radius, int) or not 0 <= radius <= code_size:
            raise ValueError(f"radius must be an int in [0, code_size={code_size}], actual value: {radius!r}")
        self.num_locations = num_locations
        self.radius = radius
        self.read_iterations = read_iterations
        generator = torch.Generator().manual_seed(seed)
        bits = torch.randint(0, 2, (num_locations, code_size), generator=generator)
        self.addresses = (2 * bits - 1).to(dtype=dtype, device=self.device)  # A [L, C]
        self.contents = torch.zeros(batch_size, num_locations, code_size, dtype=dtype, device=self.device)  # M [B, L, C]
        self.counts = torch.zeros(batch_size, num_locations, dtype=dtype, device=self.device)  # writes per location [B, L]

    @property
    def readout_specs(self) -> dict[str, ReadoutSpec]:
        return {"retrieval": ReadoutSpec((self.code_size,), "code"), "novelty": ReadoutSpec((1,), "energy")}

    @property
    def state_floats(self) -> int:
        return self.num_locations * (self.code_size + 1)

    def reset(self, mask: torch.Tensor | None = None) -> None:
        if mask is None:
            self.contents.zero_()
            self.counts.zero_()
            return
        mask = self._check_mask(mask)
        self.contents[mask] = 0.0
        self.counts[mask] = 0.0

    def select(self, x: torch.Tensor) -> torch.Tensor:
        """``w [B, N, L]`` (0/1) of patterns ``x [B, N, C]``: the locations within Hamming distance τ (KM App. B eq. 13)."""
        known = (x != 0).sum(-1, keepdim=True).clamp_min(1).to(x.dtype)  # bits that are not erased [B, N, 1]
        distance = 0.5 * (known - x @ self.addresses.T) * (self.code_size / known)  # h(x, A_l) [B, N, L]
        return (distance <= self.radius + 1e-6).to(x.dtype)

    @torch.no_grad()
    def write(self, x: torch.Tensor) -> None:
        """Store patterns ``x [B, C]`` (±1): ``M_l += w_l x`` at every selected location."""
        w = self.select(x[:, None])[:, 0]  # [B, L]
        self.contents.add_(w[:, :, None] * x[:, None, :])
        self.counts.add_(w)

    @torch.no_grad()
    def read(self, x: torch.Tensor) -> torch.Tensor:
        """``Σ_l w_l M_l [B, N, C]``, the summed contents that patterns ``x [B, N, C]`` select."""
        return self.select(x) @ self.contents

    @torch.no_grad()
    def retrieve(self, x: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
        """``read_iterations`` thresholded reads from queries ``x [B, N, C]`` (eq. 14); returns ``[B, N, C]``.

        :param known: ``[B, N, C]`` bool, entries held at the query's value; None lets every bit change.
        """
        query = x
        for _ in range(self.read_iterations):
            s = self.read(x)  # [B, N, C]
            new = torch.where(s > 0, 1.0, torch.where(s < 0, -1.0, x)).to(x.dtype)
            if known is not None:
                new = torch.where(known, query, new)
            if torch.equal(new, x):
                break
            x = new
        return x

    def _step(self, z: torch.Tensor, write: bool, wanted: frozenset[str]) -> dict[str, torch.Tensor]:
        x = binary_patterns(z)[:, None]  # [B, 1, C]
        w = self.select(x)  # [B, 1, L]
        stored = (w @ self.counts[:, :, None])[..., 0].clamp_min(1.0)  # patterns written at the selection [B, 1]
        novelty = -(x * (w @ self.contents)).sum(-1) / stored  # [B, 1]
        out = {"novelty": novelty, **({"retrieval": self.retrieve(x)[:, 0]} if "retrieval" in wanted else {})}
        if write:
            self.write(x[:, 0])
        return out
