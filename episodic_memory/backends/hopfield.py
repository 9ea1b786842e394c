"""Hopfield networks of ±1 patterns with the Hebb, Storkey and pseudo-inverse learning rules.

Shapes: ``B`` networks, ``C`` units (the code size), weights ``W [B, C, C]`` (symmetric, zero
diagonal), patterns ``x [B, C]`` or ``[B, N, C]`` with entries ±1 (0 for an erased entry of a query).

Energy ``E(x) = −½ xᵀ W x`` (Hopfield 1982). Retrieval runs the network's dynamics from the query,
``x_i <- sign(Σ_j W_ij x_j)``, unit by unit in a random order (``update="async"``, which never
raises the energy and so ends at a fixed point) or all units at once (``"sync"``), until a sweep
changes nothing or ``max_sweeps`` sweeps. A field of exactly 0 gives +1.

Learning rules, each applied one pattern at a time (an online memory), ``C`` the number of units:

- ``hebb``: ``W += (x xᵀ − I) / C`` (Hopfield 1982);
- ``storkey``: ``W += (x xᵀ − x hᵀ − h xᵀ) / C`` with the local field ``h = W x`` before the write,
  then the diagonal set to zero (Storkey 1997, in the local-field form ``h_i = Σ_{k≠i} W_ik x_k``);
- ``pseudo-inverse``: ``W = P − diag(P)``, ``P = X (XᵀX)⁻¹ Xᵀ`` the projection onto the span of the
  stored patterns (Personnaz, Guyon and Dreyfus 1985), with the diagonal removed (Kanter and
  Sompolinsky 1987). ``P`` is kept and grown by one Gram-Schmidt step per pattern,
  ``P += e eᵀ / |e|²`` with ``e = x − P x``, exact and ``O(C²)`` a write; a pattern already in the
  span changes nothing.

Which Storkey form: the EBMM paper (Bartunov et al., ICLR 2020, Table 1) does not say. With the
protocol of ``benchmarks/binary_recall.py`` the local-field form reproduces its row (error bits
0.0/1.3/6.6/11.6/17.5 at 16-96 patterns against the paper's 0.0/0.9/6.3/11.3/17.1, 100 sets),
while the form with ``h_ij = Σ_{k≠i,j} W_ik x_k`` stores more (0.0/0.0/3.0/9.7/19.1 in a numpy sketch, 6 sets): our
choice is the one that matches the baseline the paper measured.

A network holds ``C(C − 1)/2`` numbers (``C(C + 1)/2`` for the pseudo-inverse rule, which keeps
the diagonal of ``P``): 8,128 and 8,256 for ``C = 128``, the EBMM budget.
"""

from __future__ import annotations

from typing import Literal

import torch

from episodic_memory.backends.base import MemoryBackend, ReadoutSpec, binary_patterns

__all__ = ["HOPFIELD_RULES", "HopfieldMemory", "HopfieldRule"]

HopfieldRule = Literal["hebb", "storkey", "pseudo-inverse"]
HOPFIELD_RULES: tuple[HopfieldRule, ...] = ("hebb", "storkey", "pseudo-inverse")


class HopfieldMemory(MemoryBackend):
    """B Hopfield networks of C units, written one ±1 pattern per step (codes are binarised by sign).

    Read-outs of :meth:`step`: ``retrieval [C]`` (code), the fixed point reached from the code's
    pattern; ``novelty [1]`` (energy), ``E(x)`` of that pattern: about ``−C/2`` for a stored pattern
    under the Hebb rule, near 0 for one unlike the stored ones; ``memory [C, C]`` (rows), the weights
    W, the network's whole summary of the episode, as the Kanerva memories hand over their R.

    :param rule: ``hebb``, ``storkey`` or ``pseudo-inverse`` (module docstring).
    :param update: ``async`` (one unit at a time, random order) or ``sync`` (all units at once).
    :param max_sweeps: most sweeps of the dynamics per retrieval.
    :param seed: seed of the asynchronous update orders: one random order of the units per sweep, drawn once,
        so a retrieval is a function of the weights and the query alone.
    """

    def __init__(
        self,
        batch_size: int,
        code_size: int,
        rule: HopfieldRule = "hebb",
        update: Literal["async", "sync"] = "async",
        max_sweeps: int = 20,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(batch_size, code_size, dtype, device)
        if rule not in HOPFIELD_RULES:
            raise ValueError(f"rule must be one of {list(HOPFIELD_RULES)}, actual value: {rule!r}")
        if update not in ("async", "sync"):
            raise ValueError(f"update must be 'async' or 'sync', actual value: {update!r}")
        if isinstance(max_sweeps, bool) or not isinstance(max_sweeps, int) or max_sweeps < 1:
            raise ValueError(f"max_sweeps must be a positive int, actual value: {max_sweeps!r}")
        self.rule = rule
        self.update = update
        self.max_sweeps = max_sweeps
        generator = torch.Generator().manual_seed(seed)
        self._orders = [torch.randperm(code_size, generator=generator).tolist() for _ in range(max_sweeps)]  # sweep k's order
        # The pseudo-inverse rule keeps the projection P; the others keep W itself.
        self._matrix = torch.zeros(batch_size, code_size, code_size, dtype=dtype, device=self.device)  # [B, C, C]

    @property
    def readout_specs(self) -> dict[str, ReadoutSpec]:
        C = self.code_size
        return {
            "retrieval": ReadoutSpec((C,), "code"),
            "novelty": ReadoutSpec((1,), "energy"),
            "memory": ReadoutSpec((C, C), "rows"),
        }

    @property
    def state_floats(self) -> int:
        C = self.code_size
        return C * (C + 1) // 2 if self.rule == "pseudo-inverse" else C * (C - 1) // 2

    @property
    def weights(self) -> torch.Tensor:
        """``W [B, C, C]``, symmetric with a zero diagonal."""
        if self.rule != "pseudo-inverse":
            return self._matrix
        return self._matrix - torch.diag_embed(self._matrix.diagonal(dim1=-2, dim2=-1))

    def reset(self, mask: torch.Tensor | None = None) -> None:
        if mask is None:
            self._matrix.zero_()
            return
        self._matrix[self._check_mask(mask)] = 0.0

    @torch.no_grad()
    def write(self, x: torch.Tensor) -> None:
        """Store patterns ``x [B, C]`` (entries ±1), one in each network."""
        C = self.code_size
        if self.rule == "hebb":
            self._matrix.add_(x[:, :, None] * x[:, None, :] / C)  # W += x xᵀ / C
            self._matrix.diagonal(dim1=-2, dim2=-1).zero_()
        elif self.rule == "storkey":
            h = torch.einsum("bij,bj->bi", self._matrix, x)  # local field before the write [B, C]
            outer = x[:, :, None] * x[:, None, :] - x[:, :, None] * h[:, None, :] - h[:, :, None] * x[:, None, :]  # [B, C, C]
            self._matrix.add_(outer / C)
            self._matrix.diagonal(dim1=-2, dim2=-1).zero_()
        else:
            e = x - torch.einsum("bij,bj->bi", self._matrix, x)  # the part of x outside the span [B, C]
            norm_sq = (e * e).sum(-1)  # [B]
            # A pattern already in the span (|e|² at rounding level) leaves P as it is.
            new = norm_sq > C * 1e3 * torch.finfo(self.dtype).eps
            scale = torch.where(new, 1.0 / norm_sq.clamp_min(torch.finfo(self.dtype).tiny), 0.0)  # [B]
            self._matrix.add_(scale[:, None, None] * e[:, :, None] * e[:, None, :])  # P += e eᵀ / |e|²

    @torch.no_grad()
    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``E(x) = −½ xᵀ W x`` of patterns ``x [B, N, C]``; returns ``[B, N]``."""
        return -0.5 * torch.einsum("bnc,bcd,bnd->bn", x, self.weights, x)

    @torch.no_grad()
    def retrieve(self, x: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
        """Run the dynamics from queries ``x [B, N, C]`` to a fixed point (or ``max_sweeps``); returns ``[B, N, C]``.

        :param known: ``[B, N, C]`` bool, entries held at the query's value (e.g. the bits of a
            partly erased pattern that were not erased); None lets every unit update.
        """
        W = self.weights  # [B, C, C]
        x = x.clone()
        for order in self._orders:
            before = x.clone()
            if self.update == "sync":
                field = torch.einsum("bnj,bij->bni", x, W)  # [B, N, C]
                x = torch.where(field >= 0, 1.0, -1.0).to(x.dtype)
                if known is not None:
                    x = torch.where(known, before, x)
            else:
                for i in order:
                    field = x @ W[:, i, :, None]  # [B, N, 1]
                    unit = torch.where(field[..., 0] >= 0, 1.0, -1.0).to(x.dtype)  # [B, N]
                    x[..., i] = unit if known is None else torch.where(known[..., i], x[..., i], unit)
            if torch.equal(x, before):
                break
        return x

    def _step(self, z: torch.Tensor, write: bool, wanted: frozenset[str]) -> dict[str, torch.Tensor]:
        x = binary_patterns(z)  # [B, C]
        out = {"novelty": self.energy(x[:, None])}  # [B, 1]
        if "retrieval" in wanted:
            out["retrieval"] = self.retrieve(x[:, None])[:, 0]  # [B, C]
        if "memory" in wanted:
            out["memory"] = self.weights.clone()  # before the write [B, C, C]
        if write:
            self.write(x)
        return out
