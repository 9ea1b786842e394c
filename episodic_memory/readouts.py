"""The memory step of the RL wrappers: encode observations, read out, then write.

Shapes: ``B`` environments, observations ``[B, *input_shape]`` (as the machine was trained on),
codes ``[B, C]``, a memory ``[K, C]`` per environment.

For every environment step the observation is encoded (``z = e(x)``), the read-outs are computed
from the memory *before* this observation is written, then ``z`` is written (DKM Algorithm 1,
one code). Read-outs:

- ``retrieval [B, C]``: the attractor-cleaned code, ``attractor_steps`` code-space iterations
  ``z <- read(address(z))`` (DKM §3.5);
- ``novelty [B, 1]``: the surprise of the code under the memory, the addressing objective of DKM
  eq. 5 at its minimum ``μw``: ``½|z − μwᵀR|²/σξ² + ½|μw|²/σw0²`` (the negative log joint of
  ``(z, μw)`` under the linear Gaussian memory, up to a constant): small for codes the memory
  already holds, large for new ones;
- ``memory [B, K, C]``: the posterior mean R, a fixed-size summary of the episode before this step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from episodic_memory.machine import GenerativeMemory, load_machine
from episodic_memory.online import OnlineMemory

__all__ = ["READOUTS", "Readout", "EpisodicMemoryCore", "resolve_machine"]

Readout = Literal["retrieval", "novelty", "memory"]
READOUTS: tuple[Readout, ...] = ("retrieval", "novelty", "memory")


def resolve_machine(machine: GenerativeMemory | str | os.PathLike[str], device: str | torch.device = "cpu") -> GenerativeMemory:
    """A generative memory in eval mode on ``device``: ``machine`` itself or the checkpoint it names."""
    if isinstance(machine, (str, os.PathLike)):
        machine = load_machine(machine, map_location=device)
    if not isinstance(machine, GenerativeMemory):
        raise TypeError(
            f"machine must be a DynamicKanervaMachine, a KanervaMachine or a checkpoint path, got {type(machine).__name__}"
        )
    return machine.to(device).eval()


class EpisodicMemoryCore:
    """B episodic memories fed one observation per environment step (no autograd).

    :param machine: the generative memory whose encoder and memory prior are used.
    :param batch_size: B, the number of environments.
    :param readouts: which read-outs :meth:`step` returns (a subset of :data:`READOUTS`).
    :param attractor_steps: code-space attractor iterations of the ``retrieval`` read-out.
    """

    def __init__(
        self,
        machine: GenerativeMemory,
        batch_size: int,
        readouts: Sequence[Readout] = READOUTS,
        attractor_steps: int = 5,
    ) -> None:
        unknown = sorted(set(readouts) - set(READOUTS))
        if unknown or not readouts or len(set(readouts)) != len(readouts):
            raise ValueError(f"readouts must be distinct names from {list(READOUTS)}, got {list(readouts)!r}")
        if not isinstance(attractor_steps, int) or attractor_steps < 1:
            raise ValueError(f"attractor_steps must be a positive int, got {attractor_steps!r}")
        self.machine = machine
        self.readouts = tuple(readouts)
        self.attractor_steps = attractor_steps
        self.online = OnlineMemory(machine.memory, batch_size)
        self.last_code: torch.Tensor | None = None  # codes of the latest step [B, C], for metrics
        self.last_retrieval: torch.Tensor | None = None  # their retrievals [B, C]

    @property
    def batch_size(self) -> int:
        return self.online.batch_size

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each selected read-out for one environment."""
        K, C = self.online.num_slots, self.online.code_size
        every = {"retrieval": (C,), "novelty": (1,), "memory": (K, C)}
        return {name: every[name] for name in self.readouts}

    def retrieval_error(self) -> float:
        """Mean relative distance ``|retrieval − z| / |z|`` of the latest step (0 when the memory returns the code)."""
        if self.last_code is None or self.last_retrieval is None:
            return float("nan")
        error = (self.last_retrieval - self.last_code).norm(dim=-1) / self.last_code.norm(dim=-1).clamp_min(1e-12)
        return float(error.mean())

    @torch.no_grad()
    def encode(self, observations: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Codes ``[B, C]`` of observations ``[B, *input_shape]`` (checked by the machine: shape, NaN/inf)."""
        x = torch.as_tensor(np.asarray(observations) if not isinstance(observations, torch.Tensor) else observations)
        if x.dtype.is_floating_point and not bool(torch.isfinite(x).all()):
            raise ValueError("observations hold NaN or inf values")
        return self.machine.encode(x.to(self.machine.device)[:, None])[:, 0]  # [B, 1, ...] -> [B, C]

    @torch.no_grad()
    def step(self, observations: np.ndarray | torch.Tensor, write: bool = True) -> dict[str, np.ndarray]:
        """Read-outs of ``observations [B, *input_shape]`` from the memories as they are, then write them.

        :param write: False to only read (e.g. the last observation of an episode that just ended).
        :return: float32 arrays ``{name: [B, *shape]}`` for the selected read-outs.
        """
        z = self.encode(observations)  # [B, C]
        out: dict[str, torch.Tensor] = {}
        if "memory" in self.readouts:
            out["memory"] = self.online.R.clone()  # before the write, like every read-out [B, K, C]
        readout = (self.online.step if write else self.online.peek)(z, self.attractor_steps)
        self.last_code, self.last_retrieval = z, readout.retrieval
        if "retrieval" in self.readouts:
            out["retrieval"] = readout.retrieval
        if "novelty" in self.readouts:
            memory = self.machine.memory
            error = ((z - readout.read) ** 2).sum(-1) / (2 * memory.obs_noise_var)  # [B]
            prior = (readout.weights**2).sum(-1) / (2 * memory.w_prior_std**2)  # [B]
            out["novelty"] = (error + prior)[:, None]  # DKM eq. 5 at μw [B, 1]
        return {name: out[name].to("cpu", torch.float32).numpy() for name in self.readouts}

    def reset(self, mask: np.ndarray | torch.Tensor | None = None) -> None:
        """Return the memories of the environments where ``mask [B]`` is True (all if None) to the prior."""
        if mask is not None:
            mask = torch.as_tensor(np.asarray(mask, dtype=bool))
        self.online.reset(mask)
