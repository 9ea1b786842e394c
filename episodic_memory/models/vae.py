"""A variational autoencoder (VAE) with the coders of the memory models and no memory: the KM paper's baseline (§4.1).

Shapes: episodes ``x [B, T, *input_shape]``, codes ``z [B, T, C]``. Episodes are only a batch
layout here: the frames of an episode are modelled independently of each other.

Generative model ``p(z) = N(0, I)``, ``p(x | z) = d(z)``; approximate posterior
``q(z | x) = N(μ(x), diag σ(x)²)`` with ``[μ, ln σ]`` the ``2C`` encoder features (the encoder and
decoder of :func:`~episodic_memory.models.coders.build_coders`, as in the KM, KM App. C and Fig. 9).

Ref: Kingma and Welling, *Auto-Encoding Variational Bayes* (ICLR 2014); Wu et al., *The Kanerva
Machine* (ICLR 2018), §4.1.
"""

from __future__ import annotations

import torch

from episodic_memory.models.coders import build_coders
from episodic_memory.models.likelihoods import make_likelihood
from episodic_memory.models.machine import MemoryMachine
from episodic_memory.models.preprocessing import ChannelOrder, InputSpec, ResizeMode

__all__ = ["VariationalAutoencoder"]


class VariationalAutoencoder(MemoryMachine):
    """VAE baseline "with the same encoder and decoder" as the memory models, and no memory (KM §4.1).

    It shares the machines' frame handling, ``encode``/``loss``/``reconstruct`` names and
    checkpoints; it has no ``memory``, so no ``write``, ``energy`` or ``attractor``.

    :param input_shape: one frame: ``(D,)`` for vectors (MLP coders), ``(H, W, C)`` or ``(C, H, W)``
        for images (convolutional coders, KM App. C). uint8 frames are scaled to ``[0, 1]``.
    :param code_size: C, the size of the latent z; the encoder outputs ``2C`` features, the mean
        and the log-std of ``q(z | x)``.
    :param likelihood: ``"bernoulli"`` for binary frames, ``"gaussian"`` for real-valued ones, ``"logistic"``
        (discretised) for 8-bit frames.
    :param channel_order: ``"auto"`` (the end of size <= 4 holds the channels), ``"hwc"`` or ``"chw"``.
    :param resize: how image frames of another height and width are resized to the model's:
        ``"area"``, ``"bilinear"`` (antialiased) or ``"none"`` to refuse them (see
        :mod:`episodic_memory.models.preprocessing`). Saved in the config; checkpoints without it read ``"area"``.
    :param hidden_channels: filters of every convolution (image inputs).
    :param hidden_size: width of the MLP layers (vector inputs).

    Example::

        vae = VariationalAutoencoder(input_shape=(28, 28, 1), code_size=100)
        losses = vae.loss(x)                        # x [B, T, 28, 28, 1] uint8
        losses["loss"].backward()
        x_hat = vae.reconstruct(x)                  # [B, T, 28, 28, 1] floats
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] | list[int],
        code_size: int = 100,
        likelihood: str = "bernoulli",
        *,
        channel_order: ChannelOrder = "auto",
        resize: ResizeMode = "area",
        hidden_channels: int = 32,
        hidden_size: int = 256,
    ) -> None:
        super().__init__()
        for name, value in (("code_size", code_size), ("hidden_channels", hidden_channels), ("hidden_size", hidden_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.input_spec = InputSpec.from_shape(input_shape, channel_order, resize)
        self.config = {
            "input_shape": list(self.input_spec.shape),
            "code_size": code_size,
            "likelihood": likelihood,
            "channel_order": self.input_spec.channel_order,
            "resize": self.input_spec.resize,
            "hidden_channels": hidden_channels,
            "hidden_size": hidden_size,
        }
        self.likelihood = make_likelihood(likelihood)
        self.encoder, self.decoder = build_coders(self.input_spec, code_size, 2 * code_size, hidden_channels, hidden_size)

    # ----------------------------------------------------------------------------------------
    # Coders
    # ----------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``q(z | x)``: episodes ``[B, T, *input_shape]`` -> codes ``[B, T, C]``."""
        frames = self._frames_in(x)  # checks x first
        return self._posterior(frames, *x.shape[:2])[0]

    def _posterior(self, frames: torch.Tensor, B: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(z | x)`` of model frames ``[B*T, *model_shape]``: mean and log-std, each ``[B, T, C]``."""
        features = self.encoder(frames).view(B, T, 2 * self.code_size)  # [B*T, 2C] -> [B, T, 2C]
        mean, log_std = features.chunk(2, dim=-1)
        return mean, log_std

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, T, C]`` -> likelihood parameters ``[B*T, *model_shape]``."""
        return self.decoder(z.flatten(0, 1))

    # ----------------------------------------------------------------------------------------
    # Training objective
    # ----------------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The negative ELBO of episodes ``x [B, T, *input_shape]``, per frame, averaged over B.

        One reparameterised sample ``z_t = μ + σ ε``, ``ε ~ N(0, I)``, per frame. Keys (nats per frame):

        - ``loss``: ``−elbo``, to minimise;
        - ``nll``: ``−ln p(x_t | z_t)``;
        - ``kl_z``: ``KL(q(z_t | x_t) || N(0, I))``, in closed form;
        - ``cond_elbo``: ``−nll − kl_z``. A VAE has no memory to condition on, so its "conditional"
          bound is its plain ELBO: the key exists so that the VAE is compared with the memory
          models' conditional ELBOs (a lower bound on ``ln p(x_t)``, KM §4.1);
        - ``elbo``: the same value as ``cond_elbo``.
        """
        frames = self._frames_in(x)  # [B*T, *model_shape]
        B, T = x.shape[:2]
        mean, log_std = self._posterior(frames, B, T)  # [B, T, C] each
        z = mean + torch.exp(log_std) * torch.randn_like(mean)  # z_t ~ q(z_t | x_t), reparameterised
        nll = -self.likelihood.log_prob(self._decode(z), frames).view(B, T)  # [B*T] -> [B, T]
        kl_z = 0.5 * (torch.exp(2 * log_std) + mean**2 - 1 - 2 * log_std).sum(-1)  # KL(N(μ, σ²) || N(0, 1)) [B, T]
        elbo = -(nll + kl_z).mean(1)  # [B]
        return {
            "loss": -elbo.mean(),
            "nll": nll.mean(),
            "kl_z": kl_z.mean(),
            "cond_elbo": elbo.mean(),
            "elbo": elbo.mean(),
        }

    # ----------------------------------------------------------------------------------------
    # Reading
    # ----------------------------------------------------------------------------------------
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``p(x | z = μ(x))``, the decoding of the posterior mean: ``[B, T, *input_shape]`` floats.

        Unlike the memory models' ``reconstruct(state, x)`` there is no state: a VAE has no memory.
        """
        frames = self._frames_in(x)
        B, T = x.shape[:2]
        mean, _ = self._posterior(frames, B, T)
        return self._frames_out(self.likelihood.mean(self._decode(mean)), B, T)
