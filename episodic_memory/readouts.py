"""The memory step of the RL wrappers: encode observations, read out, then write.

Shapes: ``B`` environments, observations ``[B, *input_shape]`` (the machine's input shape, or
images of another height and width that the machine's preprocessing resizes), codes ``[B, C]``,
a memory ``[K, C]`` per environment.

For every environment step the observation is encoded (``z = e(x)``), the read-outs are computed
from the memory *before* this observation is written, then ``z`` is written (DKM Algorithm 1,
one code). Read-outs:

- ``retrieval [B, C]``: the attractor-cleaned code, ``attractor_steps`` code-space iterations
  ``z <- read(address(z))`` (DKM §3.5);
- ``novelty [B, 1]``: the surprise of the code under the memory, the addressing objective of DKM
  eq. 5 at its minimum ``μw``: ``½|z − μwᵀR|²/σξ² + ½|μw|²/σw0²`` (the negative log joint of
  ``(z, μw)`` under the linear Gaussian memory, up to a constant): small for codes the memory
  already holds, large for new ones;
- ``memory [B, K, C]``: the posterior mean R, a fixed-size summary of the episode before this step;
- ``code [B, C]``: the observation's own code ``z = e(x)``, what a policy can run on instead of
  pixels (the encoder runs once per observation for the read-outs and the write).

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

from episodic_memory.machine import GenerativeMemory, load_machine
from episodic_memory.memory import KanervaMemory
from episodic_memory.online import OnlineMemory, StepReadout

__all__ = ["DEFAULT_READOUTS", "READOUTS", "Readout", "EpisodicMemoryCore", "check_novelty_reward", "resolve_machine"]

Readout = Literal["retrieval", "novelty", "memory", "code"]
READOUTS: tuple[Readout, ...] = ("retrieval", "novelty", "memory", "code")
"""Every read-out :meth:`EpisodicMemoryCore.step` can return."""
DEFAULT_READOUTS: tuple[Readout, ...] = ("retrieval", "novelty", "memory")
"""The read-outs the wrappers add unless told otherwise."""


def resolve_machine(machine: GenerativeMemory | str | os.PathLike[str], device: str | torch.device = "cpu") -> GenerativeMemory:
    """A generative memory in eval mode on ``device``: ``machine`` itself or the checkpoint it names."""
    if isinstance(machine, (str, os.PathLike)):
        machine = load_machine(machine, map_location=device)
    if not isinstance(machine, GenerativeMemory):
        raise TypeError(
            f"machine must be a DynamicKanervaMachine, a KanervaMachine or a checkpoint path, got {type(machine).__name__}"
        )
    return machine.to(device).eval()


def check_novelty_reward(novelty_reward: float) -> float:
    """``novelty_reward`` as a float, or ValueError: the weight of an exploration bonus is a finite number >= 0."""
    if (
        isinstance(novelty_reward, bool)
        or not isinstance(novelty_reward, (int, float))
        or not (math.isfinite(novelty_reward) and novelty_reward >= 0)
    ):
        raise ValueError(f"novelty_reward must be a finite number >= 0 (0 turns the bonus off), got {novelty_reward!r}")
    return float(novelty_reward)


def _novelty(memory: KanervaMemory, z: torch.Tensor, readout: StepReadout, learned_addresses: bool) -> torch.Tensor:
    """Surprise of codes ``z [B, C]`` under the memory: ``[B]``.

    Dynamic addressing: ``½|z − μwᵀR|²/σξ² + ½|μw|²/σw0²`` (DKM eq. 5 at μw). Learned addresses
    (KM): ``½|z − wᵀR|²/σξ²``, ``−ln p(z | y, M)`` of KM eq. 6 up to a constant (w is not a latent there).
    """
    error = ((z - readout.read) ** 2).sum(-1) / (2 * memory.obs_noise_var)  # [B]
    if learned_addresses:
        return error
    return error + (readout.weights**2).sum(-1) / (2 * memory.w_prior_std**2)  # [B]


def _step_with_weights(online: OnlineMemory, z: torch.Tensor, w: torch.Tensor, write: bool) -> StepReadout:
    """Read ``wᵀR`` (KM eq. 6, the mean of ``p(z | y, M)``) with given weights ``w [B, K]``, then write ``z [B, C]`` with them."""
    read = torch.einsum("bk,bkc->bc", w, online.R)  # [B, C]
    if write:
        online.write(z, w)
    return StepReadout(w, read, read)


class EpisodicMemoryCore:
    """B episodic memories fed one observation per environment step (no autograd).

    :param machine: the generative memory whose encoder and memory prior are used.
    :param batch_size: B, the number of environments.
    :param readouts: which read-outs :meth:`step` returns (a subset of :data:`READOUTS`; empty: none, the
        memory still runs, e.g. for the exploration bonus).
    :param attractor_steps: code-space attractor iterations of the ``retrieval`` read-out.
    :param novelty_reward: ``c >= 0``, the weight of the exploration bonus ``c · n_t / n⁰_t`` that
        :meth:`step` leaves in :attr:`last_bonus` (module docstring); 0 turns it off.
    """

    def __init__(
        self,
        machine: GenerativeMemory,
        batch_size: int,
        readouts: Sequence[Readout] = DEFAULT_READOUTS,
        attractor_steps: int = 5,
        novelty_reward: float = 0.0,
    ) -> None:
        if isinstance(readouts, str):
            raise ValueError(f"readouts must be a sequence of names from {list(READOUTS)}, not one string: {readouts!r}")
        unknown = sorted(set(readouts) - set(READOUTS))
        if unknown or len(set(readouts)) != len(readouts):
            raise ValueError(f"readouts must be distinct names from {list(READOUTS)}, got {list(readouts)!r}")
        if not isinstance(attractor_steps, int) or attractor_steps < 1:
            raise ValueError(f"attractor_steps must be a positive int, got {attractor_steps!r}")
        self.machine = machine
        self.readouts = tuple(readouts)
        self.attractor_steps = attractor_steps
        self.novelty_reward = check_novelty_reward(novelty_reward)
        self.online = OnlineMemory(machine.memory, batch_size)
        self.last_code: torch.Tensor | None = None  # codes of the latest step [B, C], for metrics
        self.last_retrieval: torch.Tensor | None = None  # their retrievals [B, C]
        self.last_novelty = np.zeros(batch_size, np.float32)  # novelty of the latest step [B], as the read-out
        self.last_bonus = np.zeros(batch_size, np.float32)  # its exploration bonus [B] (zeros when novelty_reward is 0)
        # Never written: the prior every episode starts from, against which n⁰ is read.
        self._prior = OnlineMemory(machine.memory, batch_size) if self.novelty_reward > 0 else None

    @property
    def batch_size(self) -> int:
        return self.online.batch_size

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each selected read-out for one environment."""
        K, C = self.online.num_slots, self.online.code_size
        every = {"retrieval": (C,), "novelty": (1,), "memory": (K, C), "code": (C,)}
        return {name: every[name] for name in self.readouts}

    def retrieval_error(self) -> float:
        """Mean relative distance ``|retrieval − z| / |z|`` of the latest step (0 when the memory returns the code)."""
        if self.last_code is None or self.last_retrieval is None:
            return float("nan")
        error = (self.last_retrieval - self.last_code).norm(dim=-1) / self.last_code.norm(dim=-1).clamp_min(1e-12)
        return float(error.mean())

    @torch.no_grad()
    def encode(self, observations: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Codes ``[B, C]`` of frames ``[B, *input_shape]`` (checked by the machine: shape, NaN/inf)."""
        return self._encode_and_address(observations)[0]

    def _encode_and_address(self, observations: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Codes ``[B, C]`` and, for a machine with learned addresses (KM), their weights ``[B, K]``."""
        x = torch.as_tensor(np.asarray(observations) if not isinstance(observations, torch.Tensor) else observations)
        if x.dtype.is_floating_point and not bool(torch.isfinite(x).all()):
            raise ValueError("observations hold NaN or inf values")
        x = x.to(self.machine.device)[:, None]  # [B, 1, ...]: one frame per memory
        z, w = self.machine.encode_and_address(x, "observations")  # [B, 1, C], [B, 1, K] or None
        return z[:, 0], None if w is None else w[:, 0]

    @torch.no_grad()
    def step(self, observations: np.ndarray | torch.Tensor, write: bool = True) -> dict[str, np.ndarray]:
        """Read-outs of ``observations [B, *input_shape]`` from the memories as they are, then write them.

        Also leaves the novelty of every observation in :attr:`last_novelty` ``[B]`` (the
        ``novelty`` read-out, computed whether or not it is selected) and its exploration bonus
        ``c · n_t / n⁰_t`` in :attr:`last_bonus` ``[B]``.

        :param write: False to only read (e.g. the last observation of an episode that just ended).
        :return: float32 arrays ``{name: [B, *shape]}`` for the selected read-outs.
        """
        z, w = self._encode_and_address(observations)  # [B, C], [B, K] or None
        out: dict[str, torch.Tensor] = {}
        if "memory" in self.readouts:
            out["memory"] = self.online.R.clone()  # before the write, like every read-out [B, K, C]
        if w is None:
            readout = (self.online.step if write else self.online.peek)(z, self.attractor_steps)
        else:
            readout = _step_with_weights(self.online, z, w, write)
        self.last_code, self.last_retrieval = z, readout.retrieval
        if "retrieval" in self.readouts:
            out["retrieval"] = readout.retrieval
        if "code" in self.readouts:
            out["code"] = z
        novelty = _novelty(self.machine.memory, z, readout, learned_addresses=w is not None)  # [B]
        out["novelty"] = novelty[:, None]  # [B, 1]
        if self._prior is not None:
            at_prior = self._prior.peek(z, 1) if w is None else _step_with_weights(self._prior, z, w, write=False)
            novelty_0 = _novelty(self.machine.memory, z, at_prior, learned_addresses=w is not None)  # under the prior [B]
            bonus = self.novelty_reward * novelty / novelty_0.clamp_min(torch.finfo(novelty_0.dtype).tiny)
            self.last_bonus = bonus.to("cpu", torch.float32).numpy()
        arrays = {name: value.to("cpu", torch.float32).numpy() for name, value in out.items()}
        self.last_novelty = arrays["novelty"][:, 0]
        return {name: arrays[name] for name in self.readouts}

    def reset(self, mask: np.ndarray | torch.Tensor | None = None) -> None:
        """Return the memories of the environments where ``mask [B]`` is True (all if None) to the prior."""
        if mask is not None:
            mask = torch.as_tensor(np.asarray(mask, dtype=bool))
        self.online.reset(mask)
