"""Every model kind and memory backend by name: the one source of ``--model`` and ``--memory`` choices.

- :data:`MODELS`: the trainable models (``pretrain --model``), which are also what a checkpoint can
  hold (:func:`~episodic_memory.models.machine.load_machine` loads these and nothing else).
- :data:`BACKENDS`: the memories the RL wrappers can run (``train-agent --memory``). A backend runs on
  the codes of a machine's encoder; ``dkm``, ``km``, ``kpp``, ``pkm`` and ``ebmm`` are the machine's own memory and need
  that kind of machine, the classical memories take the codes of any machine.

Adding a backend is one entry here and a :class:`~episodic_memory.backends.MemoryBackend`: no wrapper
changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from episodic_memory.backends import (
    DenseAssociativeMemory,
    DynamicKanervaMemory,
    HopfieldMemory,
    LearnedAddressKanervaMemory,
    MemoryBackend,
    OnlineEnergyMemory,
    OnlineLatentBlockMemory,
    OnlineProductKanervaMemory,
    SparseDistributedMemory,
)
from episodic_memory.models.dkm import DynamicKanervaMachine
from episodic_memory.models.ebmm import EnergyBasedMemoryMachine
from episodic_memory.models.km import KanervaMachine
from episodic_memory.models.kpp import KanervaPlusPlus
from episodic_memory.models.machine import GenerativeMemory, MemoryMachine
from episodic_memory.models.pkm import ProductKanervaMachine
from episodic_memory.models.vae import VariationalAutoencoder

__all__ = ["BACKENDS", "MODELS", "BackendKind", "backend_kind", "check_backend_machine", "model_name", "own_backend"]

MODELS: dict[str, type[MemoryMachine]] = {
    "dkm": DynamicKanervaMachine,
    "ebmm": EnergyBasedMemoryMachine,
    "km": KanervaMachine,
    "kpp": KanervaPlusPlus,
    "pkm": ProductKanervaMachine,
    "vae": VariationalAutoencoder,
}
"""``pretrain --model`` names and their classes; a checkpoint's ``kind`` is the class's :attr:`~MemoryMachine.kind`."""


def _codes(machine: GenerativeMemory, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The machine's codes ``[B, C]`` of frames ``x [B, 1, ...]``, as the memory's input too."""
    z = machine.encode_and_address(x, "observations")[0][:, 0]  # [B, C]
    return z, z


def _codes_and_addresses(machine: GenerativeMemory, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``[B, C]``, and ``[z, w]`` with what the machine computes from the frame to address its own memory
    (the KM's weights ``[B, K]``, the read key of K++ ``[B, 3]``)."""
    z, w = machine.encode_and_address(x, "observations")  # [B, 1, C], [B, 1, K]
    return z[:, 0], torch.cat([z[:, 0], w[:, 0]], dim=-1)


@dataclass(frozen=True)
class BackendKind:
    """A memory backend the wrappers can run.

    :param description: one line for ``--help`` and the docs.
    :param build: ``(machine, batch_size, attractor_steps) -> MemoryBackend``; ``attractor_steps`` is the
        number of iterations of the backend's retrieval dynamics.
    :param inputs: ``(machine, frames [B, 1, ...]) -> (codes [B, C], backend input [B, D])``.
    :param readouts: the names of the read-outs the backend declares (its ``readout_specs``), known before
        one is built.
    :param machine: the machine class whose own memory this is; None: any machine's codes.
    """

    description: str
    build: Callable[[GenerativeMemory, int, int], MemoryBackend]
    readouts: tuple[str, ...] = ("retrieval", "novelty")
    inputs: Callable[[GenerativeMemory, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] = _codes
    machine: type[GenerativeMemory] | None = None


WITH_ROWS = ("retrieval", "novelty", "memory")  # the Kanerva memories' R, a Hopfield network's W


def _device_and_dtype(machine: GenerativeMemory) -> dict:
    return {"dtype": machine.dtype, "device": machine.device}


BACKENDS: dict[str, BackendKind] = {
    "dkm": BackendKind(
        "the DKM's Kanerva memory, addressed by content (DKM eq. 6), attractor retrieval",
        lambda m, B, steps: DynamicKanervaMemory(m.memory, B, steps),
        readouts=WITH_ROWS,
        machine=DynamicKanervaMachine,
    ),
    "km": BackendKind(
        "the KM's Kanerva memory, read and written at the KM's learned addresses (KM eq. 5-6)",
        lambda m, B, steps: LearnedAddressKanervaMemory(m.memory, B),
        readouts=WITH_ROWS,
        inputs=_codes_and_addresses,
        machine=KanervaMachine,
    ),
    "kpp": BackendKind(
        "the Kanerva++ latent memory grid, written as a running mean and read at each frame's key window",
        lambda m, B, steps: OnlineLatentBlockMemory(m.memory, B),
        readouts=WITH_ROWS,
        inputs=_codes_and_addresses,
        machine=KanervaPlusPlus,
    ),
    "pkm": BackendKind(
        "the Product Kanerva Machine's M small Kanerva memories, each item spread over them by its selection weights",
        lambda m, B, steps: OnlineProductKanervaMemory(m.memory, m.selection, B, steps),
        readouts=(*WITH_ROWS, "allocation"),
        machine=ProductKanervaMachine,
    ),
    "ebmm": BackendKind(
        "the EBMM's writable layer, rewritten from θ̄ every step with the batch write (EBMM eq. 4) of the episode's codes",
        lambda m, B, steps: OnlineEnergyMemory(m.memory, B, write="rewrite", rewrite_every=1),
        readouts=WITH_ROWS,
        machine=EnergyBasedMemoryMachine,
    ),
    "ebmm-incremental": BackendKind(
        "the EBMM's writable layer, each code written alone by T gradient steps on its writing loss (EBMM eq. 3)",
        lambda m, B, steps: OnlineEnergyMemory(m.memory, B, write="incremental"),
        readouts=WITH_ROWS,
        machine=EnergyBasedMemoryMachine,
    ),
    **{
        f"hopfield-{short}": BackendKind(
            f"Hopfield network of the codes' signs, {rule} rule",
            lambda m, B, steps, rule=rule: HopfieldMemory(B, m.code_size, rule, max_sweeps=steps, **_device_and_dtype(m)),
            readouts=WITH_ROWS,
        )
        for short, rule in (("hebb", "hebb"), ("storkey", "storkey"), ("pinv", "pseudo-inverse"))
    },
    "sdm": BackendKind(
        "Kanerva's sparse distributed memory of the codes' signs (1,024 locations)",
        lambda m, B, steps: SparseDistributedMemory(B, m.code_size, read_iterations=steps, **_device_and_dtype(m)),
    ),
    "store-everything": BackendKind(
        "modern Hopfield network that keeps every code of the episode (attention over all of them)",
        lambda m, B, steps: DenseAssociativeMemory(B, m.code_size, steps=steps, **_device_and_dtype(m)),
    ),
}
"""``train-agent --memory`` names (besides ``none``) and what they build."""


def backend_kind(name: str) -> BackendKind:
    """The backend called ``name``, or ValueError listing the choices."""
    if name not in BACKENDS:
        raise ValueError(f"unknown memory backend {name!r}; choose from {list(BACKENDS)}")
    return BACKENDS[name]


def model_name(machine: MemoryMachine | type[MemoryMachine] | str) -> str:
    """The ``--model`` name of a machine, its class or its checkpoint ``kind`` (e.g. ``"DynamicKanervaMachine"`` -> ``"dkm"``)."""
    kind = machine if isinstance(machine, str) else machine.kind
    for name, cls in MODELS.items():
        if cls.kind == kind:
            return name
    raise ValueError(f"unknown model kind {kind!r}; known: {[cls.kind for cls in MODELS.values()]}")


def own_backend(machine: GenerativeMemory) -> str:
    """The backend that is ``machine``'s own memory (``dkm`` for a DKM, ``km`` for a KM)."""
    for name, kind in BACKENDS.items():
        if kind.machine is not None and isinstance(machine, kind.machine):
            return name
    raise ValueError(f"{type(machine).__name__} has no memory backend of its own; choose one of {list(BACKENDS)}")


def check_backend_machine(name: str, machine_kind: str, source: str) -> None:
    """ValueError if backend ``name`` needs another kind of machine than ``machine_kind`` (a checkpoint's ``kind``).

    :param source: names the machine in the message, e.g. ``"--memory-checkpoint runs/dkm/model.safetensors"``.
    """
    needed = backend_kind(name).machine
    if needed is not None and needed.kind != machine_kind:
        own = [n for n, kind in BACKENDS.items() if kind.machine is not None and kind.machine.kind == machine_kind]
        instead = f"use --memory {own[0]}, " if own else ""
        raise ValueError(
            f"--memory {name} is the memory of a {needed.kind}, but {source} holds a {machine_kind}; "
            f"{instead}a {needed.kind} checkpoint, or a backend that runs on any machine's codes"
        )
