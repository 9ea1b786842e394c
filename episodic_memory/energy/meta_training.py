"""Meta-training an :class:`EnergyMemory` (EBMM eq. 5): Adam on the meta-loss of random pattern sets.

Each step draws a batch of pattern sets, writes each set into a fresh memory (eq. 4), reads its
distorted patterns back (eq. 1) and descends the reconstruction error (eq. 2) in θ̄, κ, λ, the step
sizes, μ, α and β. The schedule is ours (the paper's is in its appendix, not in our copy): Adam with a
cosine decay of the learning rate to zero and gradient norms clipped at ``clip``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm import tqdm

from episodic_memory.energy.memory import Corruption, EnergyMemory

__all__ = ["meta_train"]


def meta_train(
    memory: EnergyMemory,
    sample: Callable[[], torch.Tensor],
    corrupt: Corruption,
    steps: int,
    lr: float = 3e-3,
    clip: float = 10.0,
    progress: str | None = None,
    online: bool = False,
) -> list[float]:
    """Meta-train ``memory`` in place for ``steps`` steps; returns the meta-loss of every step.

    :param sample: draws a batch of pattern sets ``[B, N, D]``.
    :param corrupt: the distortion model of the queries (:class:`~episodic_memory.energy.corruption.Corrupter`).
    :param progress: a progress-bar description; None shows none.
    :param online: meta-train through the online write (:meth:`EnergyMemory.write_online`) instead of the batch write.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, actual value: {steps!r}")
    optimizer = torch.optim.Adam(memory.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    memory.train()
    losses = []
    bar = tqdm(range(steps), desc=progress, disable=progress is None)
    for _ in bar:
        loss = memory.meta_loss(sample(), corrupt, online=online)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(memory.parameters(), clip)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.2f}", refresh=False)
    memory.eval()
    return losses
