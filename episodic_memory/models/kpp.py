"""Kanerva++ (K++): Ramapuram, Wu and Kalousis, *Kanerva++: extending the Kanerva Machine with differentiable,
locally block allocated latent memory*, ICLR 2021.

Shapes: episodes ``x [B, T, *input_shape]``, codes ``z [B, T, C]``, read keys ``Y [B, T, 3]``, the
memory ``M [B, D, H, W]`` (D channels on an H x W grid; its ``H W`` cells are the "slots"), read
windows ``[B*T, D, h, w]``.

What our copy of the paper holds is its abstract: a memory written by a feed-forward deterministic
process; a stochastic read key that points at a contiguous sub-region of the memory, read like a
spatial-transformer window; the window gives a learned prior ``p(Z | M, Y)`` over the latent of a
frame. The rest is our reconstruction, each choice written here with its reason:

- **Write** (our choice): ``M = (1/T) Σ_t g(z̄_t)``, the mean over the episode of an MLP g of each
  frame's code (the mean of ``q(z | x)``) reshaped to ``[D, H, W]``. It is feed-forward, deterministic and
  permutation-invariant (an episodic memory keeps what was seen, not in which order), and its online
  form is exact: the memory after t frames is the running mean of t terms, one ``O(D H W)`` update a
  step (:class:`~episodic_memory.backends.latent_block.OnlineLatentBlockMemory`), equal to the batch
  write of those t frames. An empty memory (online, before the first write) is all zeros.
- **Read key** ``q(Y | x) = N(μY(x), σY(x)²)``, ``p(Y) = N(0, I)``, ``Y = (t_x, t_y, s)``: the window's
  centre ``tanh(t_x), tanh(t_y)`` in the memory's ``[−1, 1]²`` coordinates and its side
  ``sigmoid(s)`` of the memory's, read by bilinear sampling (``affine_grid``/``grid_sample``) onto an
  ``h x w`` grid: a contiguous block of the memory, differentiable in its position and size.
- **Prior** ``p(Z | M, Y)``: a diagonal Gaussian from an MLP of the window; **posterior**
  ``q(Z | x)`` from the encoder; decoder ``p(x | z)``.
- **Objective** (the ELBO of this model, per frame): ``E[ln p(x | z)] − KL(q(z | x) || p(z | M, Y)) −
  KL(q(Y | x) || p(Y))`` with ``z ~ q(z | x)``, ``Y ~ q(Y | x)``, M written from the episode's codes. No
  iterative read inference (the paper names one; ours reads once).
- **Reading from memory** (attractor, reconstruction): ``z`` is the mean of ``p(Z | M, μY(x))``, what the
  memory holds at the frame's key, decoded; the energy is ``−ln p(x | z) + KL(q(z|x) || p(z|M,μY)) +
  KL(q(Y|x) || p(Y))``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from episodic_memory.kanerva.latent_block import LatentBlockMemory, LatentMemoryState
from episodic_memory.models.coders import build_coders
from episodic_memory.models.km import diagonal_normal_kl
from episodic_memory.models.likelihoods import make_likelihood
from episodic_memory.models.machine import GenerativeMemory, last_linear
from episodic_memory.models.preprocessing import ChannelOrder, InputSpec, ResizeMode

__all__ = ["KanervaPlusPlus"]

_MIN_STD = 1e-4


class KanervaPlusPlus(GenerativeMemory):
    """Kanerva++ on the DKM's coders (module docstring: what is the paper's and what is ours).

    :param input_shape, likelihood, channel_order, resize, hidden_channels, hidden_size, normalise_codes,
        observation_encoding: as for :class:`~episodic_memory.models.dkm.DynamicKanervaMachine`.
    :param code_size: C, the size of the latent z.
    :param num_slots: H W, the cells of the memory grid, laid out as the squarest grid they fill (196: 14 x 14;
        32: 4 x 8).
    :param memory_channels: D, the channels of each cell; the memory holds ``D H W`` numbers.
    :param window: h = w, the side of the read window's grid.
    :param write_mode: ``pooled`` (the mean of ``g(z)`` over the grid) or ``keyed`` (each frame's window contents
        written where its mean key points, the adjoint of the read); see
        :class:`~episodic_memory.kanerva.latent_block.LatentBlockMemory`.

    Example::

        kpp = KanervaPlusPlus(input_shape=(32, 32, 3), num_slots=196, memory_channels=16, likelihood="logistic")
        losses = kpp.loss(x)                      # x [B, T, 32, 32, 3] uint8
        state = kpp.write(x)                      # LatentMemoryState, memory [B, 16, 14, 14]
        trajectory, energies = kpp.attractor(state, noisy_x, steps=5)
    """

    state_type = LatentMemoryState
    capabilities = GenerativeMemory.capabilities | {"prior_samples"}  # Y ~ p(Y), z ~ p(Z | M, Y), decode

    def __init__(
        self,
        input_shape: tuple[int, ...] | list[int],
        code_size: int = 100,
        num_slots: int = 196,
        likelihood: str = "bernoulli",
        *,
        memory_channels: int = 16,
        write_mode: str = "pooled",
        window: int = 4,
        channel_order: ChannelOrder = "auto",
        resize: ResizeMode = "area",
        hidden_channels: int = 32,
        hidden_size: int = 256,
        normalise_codes: bool = False,
        observation_encoding: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(num_slots, bool) or not isinstance(num_slots, int) or num_slots < 1:
            raise ValueError(f"num_slots must be a positive int (the cells of the memory grid), got {num_slots!r}")
        height = max(h for h in range(1, math.isqrt(num_slots) + 1) if num_slots % h == 0)  # the squarest H x W grid
        self.input_spec = InputSpec.from_shape(input_shape, channel_order, resize)
        self.config = {
            "input_shape": list(self.input_spec.shape),
            "code_size": code_size,
            "num_slots": num_slots,
            "likelihood": likelihood,
            "memory_channels": memory_channels,
            "window": window,
            "write_mode": write_mode,
            "channel_order": self.input_spec.channel_order,
            "resize": self.input_spec.resize,
            "hidden_channels": hidden_channels,
            "hidden_size": hidden_size,
            "normalise_codes": bool(normalise_codes),
            "observation_encoding": observation_encoding,
        }
        self._set_observation_encoding(observation_encoding)
        self.memory = LatentBlockMemory(
            code_size, memory_channels, (height, num_slots // height), window, hidden_size, write_mode
        )
        self.likelihood = make_likelihood(likelihood)
        self.encoder, self.decoder = build_coders(self.input_spec, code_size, 2 * code_size, hidden_channels, hidden_size)
        self.q_z = nn.Linear(2 * code_size, 2 * code_size)  # q(Z | x)
        self.q_key = nn.Linear(2 * code_size, 6)  # q(Y | x): mean and raw std of (t_x, t_y, s)

    # ----------------------------------------------------------------------------------------
    # Coders, posteriors
    # ----------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``q(z | x)``: episodes ``[B, T, *input_shape]`` -> codes ``[B, T, C]``."""
        return self.encode_and_address(x)[0]

    def encode_and_address(self, x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, torch.Tensor]:
        """Codes ``[B, T, C]`` (means of ``q(z | x)``) and read keys ``[B, T, 3]`` (means of ``q(Y | x)``)."""
        features = self._features(self._frames_in(x, name), *x.shape[:2])
        return self._q_z(features)[0], self._q_key(features)[0]

    def _features(self, frames: torch.Tensor, B: int, T: int) -> torch.Tensor:
        return self.encoder(frames).view(B, T, 2 * self.code_size)  # [B*T, 2C] -> [B, T, 2C]

    def _q_z(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw_std = self.q_z(features).chunk(2, -1)
        return self._normalised(mean), _MIN_STD + F.softplus(raw_std)

    def _q_key(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw_std = self.q_key(features).chunk(2, -1)
        return mean, _MIN_STD + F.softplus(raw_std)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z.flatten(0, 1))

    def _calibration_layers(self) -> list[tuple[nn.Linear, int]]:
        return [(last_linear(self.encoder), 2 * self.code_size), (self.q_z, self.code_size)]

    # ----------------------------------------------------------------------------------------
    # Memory
    # ----------------------------------------------------------------------------------------
    def write(self, x: torch.Tensor) -> LatentMemoryState:
        """Write episodes ``x [B, T, *input_shape]`` into fresh memories (feed-forward, deterministic)."""
        return self.memory.write(*self.encode_and_address(x))

    def sample_codes(self, state: LatentMemoryState, num_samples: int) -> torch.Tensor:
        """``z ~ p(Z | M, Y)`` at keys ``Y ~ p(Y) = N(0, I)``, generation from memory: ``[B, S, C]``."""
        memory = state.memory
        key = torch.randn(state.batch_size, num_samples, 3, dtype=memory.dtype, device=memory.device)
        mean, std = self.memory.prior(state, key)
        return mean + std * torch.randn_like(std)

    def episodes_in(self, state: LatentMemoryState) -> int:
        return state.batch_size

    def retrieve(self, state: LatentMemoryState, z: torch.Tensor, steps: int) -> torch.Tensor:
        """Not defined for K++: its reads are addressed by a frame's key, not by a code (use :meth:`attractor`)."""
        raise NotImplementedError("Kanerva++ reads at a frame's key; iterate frames with attractor() instead")

    def _energy_terms(self, state: LatentMemoryState, frames: torch.Tensor, B: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder parameters of the memory's read at each frame's key, and the energy (module docstring)."""
        features = self._features(frames, B, T)
        mean_z, std_z = self._q_z(features)
        mean_key, std_key = self._q_key(features)
        prior_mean, prior_std = self.memory.prior(state, mean_key)
        params = self._decode(prior_mean)
        nll = -self.likelihood.log_prob(params, frames).view(B, T)
        kl = diagonal_normal_kl(mean_z, std_z, prior_mean, prior_std) + diagonal_normal_kl(mean_key, std_key, 0.0, 1.0)
        return params, nll + kl

    # ----------------------------------------------------------------------------------------
    # Training objective
    # ----------------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The K++ ELBO on episodes ``x [B, T, *input_shape]``, per frame, averaged over B (module docstring).

        Keys (nats per frame): ``loss`` (``−cond_elbo``), ``nll``, ``kl_z`` (``KL(q(z|x) || p(z|M,Y))``),
        ``kl_key`` (``KL(q(Y|x) || p(Y))``), ``cond_elbo``, and ``elbo`` (the same: the write is deterministic,
        there is no memory KL).
        """
        frames = self._frames_in(x)
        B, T = x.shape[:2]
        features = self._features(frames, B, T)
        mean_z, std_z = self._q_z(features)
        mean_key, std_key = self._q_key(features)
        state = self.memory.write(mean_z, mean_key)  # deterministic write of the episode (keyed: at the mean keys)
        key = mean_key + std_key * torch.randn_like(mean_key)  # Y ~ q(Y | x)
        prior_mean, prior_std = self.memory.prior(state, key)  # p(Z | M, Y)
        z = mean_z + std_z * torch.randn_like(mean_z)  # z ~ q(z | x)
        nll = -self.likelihood.log_prob(self._decode(z), frames).view(B, T)
        kl_z = diagonal_normal_kl(mean_z, std_z, prior_mean, prior_std)
        kl_key = diagonal_normal_kl(mean_key, std_key, 0.0, 1.0)
        cond_elbo = -(nll + kl_z + kl_key).mean(1)  # [B]
        return {
            "loss": -cond_elbo.mean(),
            "nll": nll.mean(),
            "kl_z": kl_z.mean(),
            "kl_key": kl_key.mean(),
            "cond_elbo": cond_elbo.mean(),
            "elbo": cond_elbo.mean(),
        }
