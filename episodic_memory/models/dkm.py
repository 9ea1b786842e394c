"""The Dynamic Kanerva Machine (DKM): Wu et al., *Learning Attractor Dynamics for Generative Memory*, NeurIPS 2018.

Shapes: episodes ``x [B, T, *input_shape]``, codes ``z [B, T, C]``, addressing weights
``w [B, T, K]``, memories ``MemoryState(mean [B, K, C], cov [B, K, K])``.

A deterministic encoder ``e(x) -> z`` and a decoder ``d(z) -> p(x | z)`` around a
:class:`~episodic_memory.kanerva.memory.KanervaMemory`. Addressing weights are solved against the memory
(dynamic addressing, eq. 6) with ``q(w) = N(μw, σw² I)``, ``σw`` learned, ``p(w) = N(0, σw0² I)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from episodic_memory.kanerva.memory import KanervaMemory, MemoryState
from episodic_memory.models.coders import build_coders
from episodic_memory.models.likelihoods import make_likelihood
from episodic_memory.models.machine import ContentAddressedMemory
from episodic_memory.models.preprocessing import ChannelOrder, InputSpec, ResizeMode

__all__ = ["DynamicKanervaMachine", "weights_kl"]


def weights_kl(mu_w: torch.Tensor, log_w_std: torch.Tensor, w_prior_std: float) -> torch.Tensor:
    """``KL(N(μw, σw² I) || N(0, σw0² I))`` of addressing weights ``μw [..., K]`` with ``σw = exp(log_w_std)``: ``[...]``."""
    var_ratio = torch.exp(2 * log_w_std) / w_prior_std**2
    K = mu_w.shape[-1]
    return 0.5 * (K * (var_ratio - 1 - torch.log(var_ratio)) + (mu_w**2).sum(-1) / w_prior_std**2)


class DynamicKanervaMachine(ContentAddressedMemory):
    """Generative memory with dynamic addressing and attractor dynamics.

    :param input_shape: one frame: ``(D,)`` for vectors (MLP coders), ``(H, W, C)`` or ``(C, H, W)``
        for images (convolutional coders, KM App. C). uint8 frames are scaled to ``[0, 1]``.
    :param code_size: C, the size of the codes z and of the memory's columns.
    :param num_slots: K, the memory's rows.
    :param likelihood: ``"bernoulli"`` for binary frames, ``"gaussian"`` for real-valued ones, ``"logistic"``
        (discretised) for 8-bit frames.
    :param channel_order: ``"auto"`` (the end of size <= 4 holds the channels), ``"hwc"`` or ``"chw"``.
    :param resize: how image frames of another height and width are resized to the model's:
        ``"area"``, ``"bilinear"`` (antialiased) or ``"none"`` to refuse them (see
        :mod:`episodic_memory.models.preprocessing`). Saved in the config; checkpoints without it read ``"area"``.
    :param hidden_channels: filters of every convolution (image inputs).
    :param hidden_size: width of the MLP layers (vector inputs).
    :param obs_noise_std: σξ of the memory's read noise.
    :param w_prior_std: σw0 of ``p(w)``.
    :param w_std_init: initial σw of ``q(w)`` (learned).
    :param normalise_codes: layer-normalise the encoder's output (zero mean, unit variance over the C
        entries, no parameters), so codes have norm √C, the scale of the prior's rows R0 and of σξ = 1:
        what makes a fresh (untrained) machine's read-outs informative (see :meth:`for_space`).
    :param observation_encoding: how observations of a Gymnasium space become this machine's frames
        (:meth:`~episodic_memory.models.observations.ObservationEncoding.to_config`), set by :meth:`for_space`
        and by pretraining on collected observations; None for machines that read frames only.

    Example::

        dkm = DynamicKanervaMachine(input_shape=(32, 32, 3), likelihood="gaussian")
        losses = dkm.loss(x)                        # x [B, T, 32, 32, 3] uint8
        losses["loss"].backward()
        state = dkm.write(x)                        # MemoryState
        trajectory, energies = dkm.attractor(state, noisy_x, steps=15)
    """

    capabilities = ContentAddressedMemory.capabilities | {"prior_samples"}  # w ~ p(w), read, decode (DKM §4)

    def __init__(
        self,
        input_shape: tuple[int, ...] | list[int],
        code_size: int = 100,
        num_slots: int = 32,
        likelihood: str = "bernoulli",
        *,
        channel_order: ChannelOrder = "auto",
        resize: ResizeMode = "area",
        hidden_channels: int = 32,
        hidden_size: int = 256,
        obs_noise_std: float = 1.0,
        w_prior_std: float = 1.0,
        w_std_init: float = 0.3,
        normalise_codes: bool = False,
        observation_encoding: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not (isinstance(w_std_init, (int, float)) and w_std_init > 0):
            raise ValueError(f"w_std_init must be a positive number, got {w_std_init!r}")
        self.input_spec = InputSpec.from_shape(input_shape, channel_order, resize)
        self.config = {
            "input_shape": list(self.input_spec.shape),
            "code_size": code_size,
            "num_slots": num_slots,
            "likelihood": likelihood,
            "channel_order": self.input_spec.channel_order,
            "resize": self.input_spec.resize,
            "hidden_channels": hidden_channels,
            "hidden_size": hidden_size,
            "obs_noise_std": obs_noise_std,
            "w_prior_std": w_prior_std,
            "w_std_init": w_std_init,
            "normalise_codes": bool(normalise_codes),
            "observation_encoding": observation_encoding,
        }
        self._set_observation_encoding(observation_encoding)
        self.memory = KanervaMemory(num_slots, code_size, obs_noise_std=obs_noise_std, w_prior_std=w_prior_std)
        self.likelihood = make_likelihood(likelihood)
        self.encoder, self.decoder = build_coders(self.input_spec, code_size, code_size, hidden_channels, hidden_size)
        self.log_w_std = nn.Parameter(torch.tensor(math.log(w_std_init)))  # σw of q(w)

    # ----------------------------------------------------------------------------------------
    # Memory
    # ----------------------------------------------------------------------------------------
    def write(self, x: torch.Tensor) -> MemoryState:
        """Write episodes ``x [B, T, *input_shape]`` into fresh memories (Algorithm 1, writing)."""
        z = self.encode(x)
        return self.memory.write_sequential(self.memory.prior(z.shape[0]), z)

    def sample_codes(self, state: MemoryState, num_samples: int) -> torch.Tensor:
        """``z = wᵀR`` with ``w ~ p(w) = N(0, σw0² I)`` (DKM §4): ``[B, S, C]``."""
        w = self.memory.w_prior_std * torch.randn(
            state.batch_size, num_samples, self.num_slots, dtype=state.mean.dtype, device=state.mean.device
        )  # [B, S, K]
        return self.memory.read(state, w)

    def _kl_w(self, mu_w: torch.Tensor) -> torch.Tensor:
        """``KL(q(w) || p(w))`` per item: ``[B, T, K] -> [B, T]``."""
        return weights_kl(mu_w, self.log_w_std, self.memory.w_prior_std)

    def _energy_terms(self, state: MemoryState, frames: torch.Tensor, B: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder parameters at ``w = μw(x)`` and the energy (eq. 14) of model frames ``[B*T, ...]``.

        Returns ``(params [B*T, *model_shape], energy [B, T])``.
        """
        z = self._encode_frames(frames, B, T)
        mu_w = self.memory.address(state, z)  # DKM eq. 6 [B, T, K]
        params = self._decode(self.memory.read(state, mu_w))
        nll = -self.likelihood.log_prob(params, frames).view(B, T)
        return params, nll + self._kl_w(mu_w)  # DKM eq. 14

    # ----------------------------------------------------------------------------------------
    # Training objective
    # ----------------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The DKM objective on episodes ``x [B, T, *input_shape]`` (Algorithm 1), per frame, averaged over B.

        Keys (nats per frame):

        - ``loss``: ``−(L_T + L_AE) / T``, to minimise (eq. 4 + eq. 11);
        - ``nll``: ``−⟨ln p(x_t | w_t, M)⟩``, reconstruction from memory with ``w_t ~ q(w_t)``;
        - ``kl_w``: ``KL(q(w_t) || p(w_t))``;
        - ``kl_memory``: ``KL(q(M) || p(M)) / T``;
        - ``nll_ae``: ``−ln d(e(x_t))(x_t)``, the autoencoder term (eq. 11);
        - ``cond_elbo``: conditional ELBO ``−nll − kl_w`` (a lower bound on ``ln p(x | M)`` per frame);
        - ``elbo``: ``cond_elbo − kl_memory`` (eq. 4 per frame).
        """
        frames = self._frames_in(x)  # [B*T, *model_shape]
        B, T = x.shape[:2]
        z = self._encode_frames(frames, B, T)  # [B, T, C]
        state = self.memory.write_sequential(self.memory.prior(B), z)  # writing
        mu_w = self.memory.address(state, z)  # reading, DKM eq. 6 against q(M_T) [B, T, K]
        w = mu_w + torch.exp(self.log_w_std) * torch.randn_like(mu_w)  # w ~ q(w)
        nll = -self.likelihood.log_prob(self._decode(self.memory.read(state, w)), frames).view(B, T)
        kl_w = self._kl_w(mu_w)  # [B, T]
        kl_memory = self.memory.kl(state) / T  # [B]
        nll_ae = -self.likelihood.log_prob(self._decode(z), frames).view(B, T)  # DKM eq. 11
        cond_elbo = -(nll + kl_w).mean(1)  # [B]
        elbo = cond_elbo - kl_memory  # DKM eq. 4 / T
        return {
            "loss": (-elbo + nll_ae.mean(1)).mean(),
            "nll": nll.mean(),
            "kl_w": kl_w.mean(),
            "kl_memory": kl_memory.mean(),
            "nll_ae": nll_ae.mean(),
            "cond_elbo": cond_elbo.mean(),
            "elbo": elbo.mean(),
        }

    # ----------------------------------------------------------------------------------------
    # Reading and attractor dynamics
    # ----------------------------------------------------------------------------------------
