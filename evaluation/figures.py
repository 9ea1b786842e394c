"""Pictures of what a generative memory does: image grids of frames, reconstructions and attractor trajectories."""

from __future__ import annotations

import numpy as np
import torch

from episodic_memory import MemoryMachine

__all__ = ["image_grid", "training_figures"]


def image_grid(frames: np.ndarray | torch.Tensor, pad: int = 1) -> np.ndarray:
    """Tile ``frames [rows, cols, H, W, C]`` (floats in [0, 1] or uint8) into one uint8 image ``[H', W', 3]``."""
    frames = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if frames.ndim != 5:
        raise ValueError(f"frames must have shape [rows, cols, H, W, C], got {frames.shape}")
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    rows, cols, H, W, _ = frames.shape
    grid = np.full((rows * (H + pad) + pad, cols * (W + pad) + pad, 3), 255, dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            top, left = pad + r * (H + pad), pad + c * (W + pad)
            grid[top : top + H, left : left + W] = frames[r, c, ..., :3]
    return grid


@torch.no_grad()
def training_figures(
    model: MemoryMachine, x: torch.Tensor, rng: np.random.Generator, columns: int = 8, steps: int = 8
) -> dict[str, np.ndarray]:
    """Image grids for a batch of episodes ``x [B, T, H, W, C]`` (uint8 frames).

    - ``images/reconstructions``: per episode, a row of frames and a row of their reconstructions
      from memory (from the VAE's code for the memory-less baseline);
    - ``images/attractor`` (memory models): frames with Gaussian noise N(0, 0.15), then ``steps``
      attractor iterations (DKM §3.5), one row per frame.
    """
    clean = x[:, :columns].float() / 255.0  # [B, columns, H, W, C]
    has_memory = hasattr(model, "memory")
    state = model.write(x) if has_memory else None
    recon = model.reconstruct(state, x[:, :columns]) if has_memory else model.reconstruct(x[:, :columns])
    pairs = torch.stack([clean, recon], dim=1).flatten(0, 1)  # [2B, columns, H, W, C]
    figures = {"images/reconstructions": image_grid(pairs)}
    if has_memory:
        noise = torch.from_numpy(rng.normal(0.0, 0.15, size=tuple(clean[:, :1].shape))).to(clean)
        noisy = (clean[:, :1] + noise).clamp(0.0, 1.0)  # the first frame of each episode [B, 1, H, W, C]
        trajectory, _ = model.attractor(state, noisy, steps)  # [steps+1, B, 1, H, W, C]
        rows = torch.cat([clean[:, :1], trajectory[:, :, 0].transpose(0, 1)], dim=1)  # [B, steps+2, H, W, C]
        figures["images/attractor"] = image_grid(rows)
    return figures
