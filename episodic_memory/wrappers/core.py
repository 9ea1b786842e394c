"""The memory step of the RL wrappers: encode observations, read out, then write.

Shapes: ``B`` environments, observations ``[B, *input_shape]`` (the machine's input shape, or
images of another height and width that the machine's preprocessing resizes), codes ``[B, C]``,
a memory ``[K, C]`` per environment.

For every environment step the observation is encoded (``z = e(x)``), the read-outs are computed
from the memory *before* this observation is written, then ``z`` is written (DKM Algorithm 1,
one code). The memory is a backend (:mod:`episodic_memory.backends`, chosen by name from
:data:`~episodic_memory.registry.BACKENDS`): the machine's own Kanerva memory by default, or a
classical memory of the machine's codes. Each backend declares its read-outs; those of the Kanerva
backends are:

- ``retrieval [B, C]``: the attractor-cleaned code, ``attractor_steps`` code-space iterations
  ``z <- read(address(z))`` (DKM §3.5);
- ``novelty [B, 1]``: the surprise of the code under the memory, the addressing objective of DKM
  eq. 5 at its minimum ``μw``: ``½|z − μwᵀR|²/σξ² + ½|μw|²/σw0²`` (the negative log joint of
  ``(z, μw)`` under the linear Gaussian memory, up to a constant): small for codes the memory
  already holds, large for new ones;
- ``memory [B, K, C]``: the posterior mean R, a fixed-size summary of the episode before this step;

and every backend adds ``code [B, C]``, the observation's own code ``z = e(x)``, what a policy can
run on instead of pixels (the encoder runs once per observation for the read-outs and the write).

Optionally (``recall_lags``, ``recall_positions``, or the ``recall_sum`` read-out), a second memory
keeps the order of the codes: a :class:`~episodic_memory.backends.TimeAddressedMemory` writes each
code at its step's address, and its read-out ``recall [B, L, C]`` returns the codes of chosen steps,
by lag (1: the previous observation) or by position in the episode (0: the first). A memory addressed
by content cannot answer "what came 3 steps ago"; this one can, exactly while an episode has at most
``recall_slots`` steps. Its ``recall_sum [B, C]`` is the sum of every step's recall so far. With
``recall_source="observation"`` it keeps the observations themselves (flattened, as the machine
reads them, ``C = prod(input_shape)``) instead of their codes: of one-hot observations, ``recall``
is a frame stack and ``recall_sum`` counts how often each value came up (declared a ``count`` read-out when
the machine's observations are flat with entries in [0, 1], a ``total`` otherwise).

How a code is addressed follows the machine. A DKM solves its weights against the memory
(eq. 6), as above. A KM uses its own learned addresses ``w = A f(ȳ)`` (KM eq. 5, ``ȳ`` the mean
of ``q(y | x)``) for reading and writing, as it was trained: its ``retrieval`` is the read
``wᵀR``, the mean of its memory-dependent prior ``p(z | y, M)`` (KM eq. 6; ``attractor_steps``
does not apply, since its weights come from the frame, not from the code), and its ``novelty``
is ``½|z − wᵀR|²/σξ²``.

Optional exploration bonus, the episodic term of Never Give Up (Badia et al., ICLR 2020) with
the memory's novelty in place of NGU's nearest-neighbour kernel: with ``novelty_reward = c > 0``,

    bonus_t = c · n_t / n⁰_t,

``n_t`` the ``novelty`` read-out of the observation a step led to (memory before its write) and
``n⁰_t`` the novelty of the same code under the prior, the empty memory every episode starts
from. The raw novelty's scale depends on the machine (code size and norm, σξ: tens to thousands
of nats for a pretrained DKM); the ratio does not. It is the part of the observation's surprise
that this episode's memory has not explained yet: 1 for the first observation of an episode,
near 1 for a view unlike anything written since, towards 0 for one the memory holds already
(a pretrained 32 x 32 DKM gives new MiniGrid views about 0.3 to 0.5 and revisited ones about
0.04). It can exceed 1 when the episode's writes moved the memory away from a code the prior
fitted. So ``c`` is the bonus of a view new to the episode, on the scale of the extrinsic reward.

NGU makes its kernel scale-free by dividing distances by a running mean over training. Dividing
by the prior's novelty instead makes every bonus a function of the episode alone, so a seeded
episode repeats exactly, rewards included (Gymnasium's ``check_env`` checks this), and the
bonus does not drift as training goes on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from episodic_memory.backends import MemoryBackend, ReadoutSpec, TimeAddressedMemory
from episodic_memory.models.machine import GenerativeMemory, load_machine
from episodic_memory.registry import backend_kind, check_backend_machine, own_backend

__all__ = [
    "DEFAULT_READOUTS",
    "READOUTS",
    "RECALL_SOURCES",
    "Readout",
    "RecallSource",
    "EpisodicMemoryCore",
    "check_novelty_reward",
    "resolve_machine",
]

Readout = Literal["retrieval", "novelty", "memory", "code", "recall", "recall_sum"]
READOUTS: tuple[Readout, ...] = ("retrieval", "novelty", "memory", "code", "recall", "recall_sum")
"""Every read-out name: the backends' (``retrieval``, ``novelty``, ``memory``: each declares which it has), ``code``,
and the time-addressed memory's ``recall`` and ``recall_sum``."""
RecallSource = Literal["code", "observation"]
RECALL_SOURCES: tuple[RecallSource, ...] = ("code", "observation")
DEFAULT_READOUTS: tuple[Readout, ...] = ("retrieval", "novelty", "memory")
"""The read-outs of the Kanerva backends, which the wrappers add unless told otherwise (every declared one)."""


def resolve_machine(machine: GenerativeMemory | str | os.PathLike[str], device: str | torch.device = "cpu") -> GenerativeMemory:
    """A generative memory in eval mode on ``device``: ``machine`` itself or the checkpoint it names."""
    if isinstance(machine, (str, os.PathLike)):
        machine = load_machine(machine, map_location=device)
    if not isinstance(machine, GenerativeMemory):
        raise TypeError(
            f"machine must be a DynamicKanervaMachine, a KanervaMachine or a checkpoint path, got {type(machine).__name__}"
        )
    return machine.to(device).eval()


def _one_hot(machine: GenerativeMemory) -> bool:
    """Whether the machine reads flat observations with entries in [0, 1] (one-hot or binary ones, as
    :class:`~episodic_memory.models.observations.ObservationEncoding` makes them), whose sums are counts."""
    encoding = machine.observation_encoding
    return encoding is not None and not encoding.image and tuple(encoding.value_range) == (0.0, 1.0)


def check_novelty_reward(novelty_reward: float) -> float:
    """``novelty_reward`` as a float, or ValueError: the weight of an exploration bonus is a finite number >= 0."""
    if (
        isinstance(novelty_reward, bool)
        or not isinstance(novelty_reward, (int, float))
        or not (math.isfinite(novelty_reward) and novelty_reward >= 0)
    ):
        raise ValueError(f"novelty_reward must be a finite number >= 0 (0 turns the bonus off), got {novelty_reward!r}")
    return float(novelty_reward)


class EpisodicMemoryCore:
    """B episodic memories fed one observation per environment step (no autograd): the machine's encoder, then a backend.

    :param machine: the generative memory whose encoder makes the codes (and, for ``backend`` ``dkm``/``km``,
        whose memory prior the backend starts from).
    :param batch_size: B, the number of environments.
    :param readouts: which read-outs :meth:`step` returns: names the backend declares, and ``code``; None
        (default) returns every read-out the backend declares; empty returns none (the memory still runs,
        e.g. for the exploration bonus).
    :param attractor_steps: iterations of the backend's retrieval dynamics (the DKM's code-space attractor).
    :param novelty_reward: ``c >= 0``, the weight of the exploration bonus ``c · n_t / n⁰_t`` that
        :meth:`step` leaves in :attr:`last_bonus` (module docstring); 0 turns it off.
    :param backend: a name of :data:`~episodic_memory.registry.BACKENDS`; None runs the machine's own memory.
    :param recall_lags: steps back (each >= 1) whose codes the ``recall`` read-out returns.
    :param recall_positions: steps from the episode's start (each >= 0) whose codes ``recall`` returns, after the lags'.
    :param recall_slots: K of the time-addressed memory (module docstring); used when it runs: with lags or
        positions, or when ``readouts`` has ``recall_sum``.
    :param recall_source: what the time-addressed memory keeps: ``code`` (the machine's codes) or ``observation``
        (the observations as the machine reads them, flattened; they must then have its input shape).
    """

    def __init__(
        self,
        machine: GenerativeMemory,
        batch_size: int,
        readouts: Sequence[Readout] | None = None,
        attractor_steps: int = 5,
        novelty_reward: float = 0.0,
        backend: str | None = None,
        recall_lags: Sequence[int] = (),
        recall_positions: Sequence[int] = (),
        recall_slots: int = 64,
        recall_source: RecallSource = "code",
    ) -> None:
        if isinstance(readouts, str):
            raise ValueError(f"readouts must be a sequence of names from {list(READOUTS)}, not one string: {readouts!r}")
        if not isinstance(attractor_steps, int) or attractor_steps < 1:
            raise ValueError(f"attractor_steps must be a positive int, got {attractor_steps!r}")
        self.backend_name = own_backend(machine) if backend is None else backend
        kind = backend_kind(self.backend_name)
        check_backend_machine(self.backend_name, machine.kind, f"the machine ({type(machine).__name__})")
        self.machine = machine
        self._inputs = kind.inputs
        self.backend: MemoryBackend = kind.build(machine, batch_size, attractor_steps)
        if recall_source not in RECALL_SOURCES:
            raise ValueError(f"recall_source must be one of {list(RECALL_SOURCES)}, actual value: {recall_source!r}")
        self.recall_source = recall_source
        runs_recall = bool(tuple(recall_lags) or tuple(recall_positions) or (readouts and "recall_sum" in readouts))
        self.recall = (
            TimeAddressedMemory(
                batch_size,
                machine.code_size if recall_source == "code" else math.prod(machine.input_shape),
                recall_lags,
                recall_positions,
                recall_slots,
                counts=recall_source == "observation" and _one_hot(machine),
                dtype=machine.dtype,
                device=machine.device,
            )
            if runs_recall
            else None
        )
        recall_specs = {} if self.recall is None else self.recall.readout_specs
        available = {**self.backend.readout_specs, "code": ReadoutSpec((machine.code_size,), "code"), **recall_specs}
        # by default every read-out of the backend and the recall of the lags and positions asked for
        readouts = (
            (*self.backend.readout_specs, *(name for name in recall_specs if name != "recall_sum"))
            if readouts is None
            else tuple(readouts)
        )
        unknown = sorted(set(readouts) - set(available))
        if unknown or len(set(readouts)) != len(readouts):
            raise ValueError(
                f"readouts must be distinct names from {list(available)} (the {self.backend_name} backend's and code), "
                f"got {list(readouts)!r}"
            )
        self.readouts = readouts
        self._recall_readouts = [name for name in recall_specs if name in readouts]
        self._specs = {name: available[name] for name in readouts}
        self.attractor_steps = attractor_steps
        self.novelty_reward = check_novelty_reward(novelty_reward)
        if self.novelty_reward > 0 and not self.backend.nonnegative_novelty:
            raise ValueError(
                f"novelty_reward needs a novelty that is a surprise >= 0; the {self.backend_name} backend's is an energy of "
                "either sign: set novelty_reward to 0, or use a Kanerva or store-everything backend"
            )
        self.last_code: torch.Tensor | None = None  # codes of the latest step [B, C], for metrics
        self.last_retrieval: torch.Tensor | None = None  # their retrievals [B, C]
        self.last_novelty = np.zeros(batch_size, np.float32)  # novelty of the latest step [B], as the read-out
        self.last_bonus = np.zeros(batch_size, np.float32)  # its exploration bonus [B] (zeros when novelty_reward is 0)
        # Never written: the prior every episode starts from, against which n⁰ is read.
        self._prior = kind.build(machine, batch_size, attractor_steps) if self.novelty_reward > 0 else None

    @property
    def batch_size(self) -> int:
        return self.backend.batch_size

    def readout_specs(self) -> dict[str, ReadoutSpec]:
        """Shape (for one environment) and kind of each selected read-out."""
        return dict(self._specs)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each selected read-out for one environment."""
        return {name: spec.shape for name, spec in self._specs.items()}

    def retrieval_error(self) -> float:
        """Mean relative distance ``|retrieval − z| / |z|`` of the latest step (0 when the memory returns the code)."""
        if self.last_code is None or self.last_retrieval is None:
            return float("nan")
        error = (self.last_retrieval - self.last_code).norm(dim=-1) / self.last_code.norm(dim=-1).clamp_min(1e-12)
        return float(error.mean())

    @torch.no_grad()
    def encode(self, observations: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Codes ``[B, C]`` of frames ``[B, *input_shape]`` (checked by the machine: shape, NaN/inf)."""
        return self._encode(self._frames(observations))[0]

    def _frames(self, observations: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Observations ``[B, ...]`` as a finite tensor on the machine's device."""
        x = torch.as_tensor(np.asarray(observations) if not isinstance(observations, torch.Tensor) else observations)
        if x.dtype.is_floating_point and not bool(torch.isfinite(x).all()):
            raise ValueError("observations hold NaN or inf values")
        return x.to(self.machine.device)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes ``[B, C]`` and the backend's input ``[B, D]`` (the codes, or the KM's codes with its addresses) of
        frames ``x [B, ...]`` from :meth:`_frames`."""
        return self._inputs(self.machine, x[:, None])  # [B, 1, ...]: one frame per memory

    @torch.no_grad()
    def step(self, observations: np.ndarray | torch.Tensor, write: bool = True) -> dict[str, np.ndarray]:
        """Read-outs of ``observations [B, *input_shape]`` from the memories as they are, then write them.

        Also leaves the novelty of every observation in :attr:`last_novelty` ``[B]`` (the
        ``novelty`` read-out, computed whether or not it is selected) and its exploration bonus
        ``c · n_t / n⁰_t`` in :attr:`last_bonus` ``[B]``.

        :param write: False to only read (e.g. the last observation of an episode that just ended).
        :return: float32 arrays ``{name: [B, *shape]}`` for the selected read-outs.
        """
        x = self._frames(observations)
        z, inputs = self._encode(x)  # [B, C], [B, D]
        # The novelty and the retrieval always (last_novelty, the bonus and the metrics read them), the rest if selected.
        wanted = {"novelty", "retrieval", *(name for name in self.readouts if name != "code")}
        out = self.backend.step(inputs, write=write, readouts=[name for name in self.backend.readout_specs if name in wanted])
        out["code"] = z
        if self.recall is not None:  # written every step, read only when selected
            kept = z if self.recall_source == "code" else self._observations_kept(x)
            out.update(self.recall.step(kept, write=write, readouts=self._recall_readouts))
        self.last_code, self.last_retrieval = z, out["retrieval"]
        novelty = out["novelty"][:, 0]  # [B]
        if self._prior is not None:
            novelty_0 = self._prior.step(inputs, write=False, readouts=("novelty",))["novelty"][:, 0]  # under the prior [B]
            bonus = self.novelty_reward * novelty / novelty_0.clamp_min(torch.finfo(novelty_0.dtype).tiny)
            self.last_bonus = bonus.to("cpu", torch.float32).numpy()
        self.last_novelty = novelty.to("cpu", torch.float32).numpy()
        return {name: out[name].to("cpu", torch.float32).numpy() for name in self.readouts}

    def _observations_kept(self, x: torch.Tensor) -> torch.Tensor:
        """Frames ``x [B, *input_shape]`` as the time-addressed memory keeps them, ``[B, prod(input_shape)]``."""
        if tuple(x.shape[1:]) != tuple(self.machine.input_shape):
            raise ValueError(
                f"recall_source='observation' keeps observations of the machine's input shape {tuple(self.machine.input_shape)}, "
                f"got {tuple(x.shape[1:])}: resize them before the wrapper, or recall the codes"
            )
        return x.flatten(1).to(self.machine.dtype)

    def reset(self, mask: np.ndarray | torch.Tensor | None = None) -> None:
        """Return the memories of the environments where ``mask [B]`` is True (all if None) to the prior."""
        if mask is not None:
            mask = torch.as_tensor(np.asarray(mask, dtype=bool))
        self.backend.reset(mask)
        if self.recall is not None:
            self.recall.reset(mask)
