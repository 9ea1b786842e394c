"""The memory-backend interface: B online memories that read out, then write, one code per step.

Shapes: ``B`` memories (one per environment, or per trial of a benchmark), ``C`` code size; codes
``z [B, C]``; every read-out ``[B, *spec.shape]`` for its :class:`ReadoutSpec`.

A backend is what the RL wrappers run between the encoder and the policy: it starts every memory
empty (or at its prior), and each :meth:`MemoryBackend.step` returns the read-outs of the codes from
the memories *as they are*, then writes the codes. A code therefore never retrieves itself, the
read-outs of a step depend only on the episode before it, and :meth:`MemoryBackend.reset` with a
mask empties the memories of the environments whose episodes ended.

Each read-out declares its kind, so that a policy's features extractor normalises it by what it is
rather than by its name:

- ``code``: a vector in code space ``[C]`` (e.g. the retrieval of the query);
- ``energy``: one scalar surprise ``[1]``, low for what the memory holds, high for what is new;
- ``rows``: a set of vectors ``[N, C]`` to attend over (e.g. a memory's slots);
- ``sequence``: codes ``[L, C]`` of L chosen steps of the episode, in order (e.g. the previous ones);
- ``total``: a sum over the episode's steps ``[C]``, which grows with it (e.g. of codes);
- ``count``: a total of entries in [0, 1] ``[C]``, 0 or more (e.g. of one-hot observations, how many times each
  value came up).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["MemoryBackend", "ReadoutKind", "ReadoutSpec", "binary_patterns"]

ReadoutKind = Literal["code", "energy", "rows", "sequence", "total", "count"]


@dataclass(frozen=True)
class ReadoutSpec:
    """What one read-out of a backend is.

    :param shape: its shape for one memory: ``(C,)`` for a code, a total or a count, ``(1,)`` for an energy, ``(N, C)`` for
        rows, ``(L, C)`` for a sequence.
    :param kind: ``code``, ``energy``, ``rows``, ``sequence``, ``total`` or ``count`` (module docstring).
    """

    shape: tuple[int, ...]
    kind: ReadoutKind

    def __post_init__(self) -> None:
        expected = {"code": 1, "energy": 1, "rows": 2, "sequence": 2, "total": 1, "count": 1}
        if self.kind not in expected:
            raise ValueError(f"kind must be one of {list(expected)}, actual value: {self.kind!r}")
        if len(self.shape) != expected[self.kind] or any(not isinstance(n, int) or n < 1 for n in self.shape):
            dims = expected[self.kind]
            raise ValueError(f"a {self.kind} read-out has {dims} positive dimension(s), actual shape: {self.shape!r}")
        if self.kind == "energy" and self.shape != (1,):
            raise ValueError(f"an energy read-out has shape (1,), actual shape: {self.shape!r}")


def binary_patterns(z: torch.Tensor) -> torch.Tensor:
    """``sign(z)`` with 0 mapped to +1: the ±1 pattern of a real code, ``[..., C] -> [..., C]``.

    The classical memories store ±1 patterns; codes from an encoder are binarised by their signs.
    """
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


class MemoryBackend(ABC):
    """B memories of codes of size C, each written one code per :meth:`step`.

    Subclasses implement :attr:`readout_specs`, :meth:`reset`, :meth:`_step` and :attr:`state_floats`;
    this class checks the codes (shape, dtype, NaN/inf) before :meth:`_step` sees them.

    :param batch_size: B.
    :param code_size: C.
    :param dtype: floating dtype of the memories and of the codes they take.
    :param device: where the memories live.
    """

    nonnegative_novelty: bool = False
    """True when the ``novelty`` read-out is a surprise >= 0, positive for an empty memory (the
    exploration bonus divides by it); an energy of either sign (e.g. a Hopfield network's) is not."""

    def __init__(
        self,
        batch_size: int,
        code_size: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        for name, value in (("batch_size", batch_size), ("code_size", code_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, actual value: {value!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch.dtype, actual value: {dtype!r}")
        self.batch_size = batch_size
        self.code_size = code_size
        self.dtype = dtype
        self.device = torch.device(device)

    @property
    @abstractmethod
    def readout_specs(self) -> dict[str, ReadoutSpec]:
        """Every read-out :meth:`step` returns, by name."""

    @property
    @abstractmethod
    def state_floats(self) -> int:
        """Numbers one memory holds now (what a memory budget counts; it may grow with the episode)."""

    @abstractmethod
    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Empty the memories where ``mask [B]`` (bool) is True; all of them if ``mask`` is None."""

    @abstractmethod
    def _step(self, z: torch.Tensor, write: bool, wanted: frozenset[str]) -> dict[str, torch.Tensor]:
        """:meth:`step` on checked codes: at least the read-outs in ``wanted`` (it may skip the others)."""

    @torch.no_grad()
    def step(self, z: torch.Tensor, write: bool = True, readouts: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """Read-outs of codes ``z [B, C]`` from the memories as they are, then (if ``write``) write the codes.

        :param readouts: the read-outs to compute, names of :attr:`readout_specs`; None computes them all. A
            backend skips the work of those not asked for (e.g. the copy of its memory that ``memory`` returns).
        :return: ``{name: [B, *readout_specs[name].shape]}`` for the read-outs asked for.
        """
        self.check_codes(z)
        names = tuple(self.readout_specs) if readouts is None else tuple(readouts)
        unknown = sorted(set(names) - set(self.readout_specs))
        if unknown:
            raise ValueError(f"unknown read-outs {unknown}; this backend has {list(self.readout_specs)}")
        out = self._step(z, write, frozenset(names))
        return {name: out[name] for name in names}

    def check_codes(self, z: torch.Tensor) -> None:
        """ValueError/TypeError unless ``z`` is a finite ``[B, C]`` tensor of the memories' dtype."""
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a torch.Tensor, actual type: {type(z).__name__}")
        if z.shape != (self.batch_size, self.code_size):
            raise ValueError(f"z must have shape [B={self.batch_size}, C={self.code_size}], actual shape: {tuple(z.shape)}")
        if z.dtype != self.dtype:
            raise ValueError(f"z must have the memories' dtype {self.dtype}, actual dtype: {z.dtype}")
        if not bool(torch.isfinite(z).all()):
            raise ValueError("z holds NaN or inf values")

    def _check_mask(self, mask: torch.Tensor) -> torch.Tensor:
        if not isinstance(mask, torch.Tensor) or mask.shape != (self.batch_size,) or mask.dtype != torch.bool:
            got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a bool tensor of shape [{self.batch_size}], actual: {got}")
        return mask.to(self.device)
