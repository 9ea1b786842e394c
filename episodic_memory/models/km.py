"""The Kanerva Machine (KM): Wu, Wayne, Graves and Lillicrap, *The Kanerva Machine: A Generative Distributed Memory*, ICLR 2018.

Shapes: episodes ``x [B, T, *input_shape]``, encoder features ``e(x) [B, T, 2C]``, addressing
variables ``y [B, T, Y]``, keys ``b [B, T, S]``, addresses ``A [K, S]``, addressing weights
``w [B, T, K]``, codes ``z [B, T, C]``, memories ``MemoryState(mean [B, K, C], cov [B, K, K])``.

Generative model (KM eq. 3-6): ``p(y) = N(0, I)``, key ``b = f(y)``, weights ``w = A b`` with the
rows of A L2-normalised, ``p(z | y, M) = N(wᵀM, σ² I)`` read mean-field as ``N(wᵀR, σ² I)``, and a
decoder ``p(x | z)``. Reading inference (eq. 7): ``q(y | x) q(z | x, y, M)``; writing inference
(eq. 8): ``y ~ q(y | x)``, ``z ~ q(z | x)``, then the exact Bayesian update of the memory (eq. 9-11).
Every approximate posterior is a diagonal Gaussian computed by a 2-layer ReLU MLP (App. C) from the
encoder features ``e(x)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from episodic_memory.kanerva.memory import KanervaMemory, MemoryState
from episodic_memory.models.coders import build_coders
from episodic_memory.models.likelihoods import make_likelihood
from episodic_memory.models.machine import GenerativeMemory, last_linear
from episodic_memory.models.preprocessing import ChannelOrder, InputSpec, ResizeMode

__all__ = ["KanervaMachine", "diagonal_normal_kl"]

_MIN_STD = 1e-5  # floor of the posterior stds, keeps ln σ finite when softplus underflows


def diagonal_normal_kl(
    mean_q: torch.Tensor, std_q: torch.Tensor, mean_p: torch.Tensor | float, std_p: torch.Tensor | float
) -> torch.Tensor:
    """``KL(N(μq, diag σq²) || N(μp, diag σp²))`` summed over the last dimension: ``[..., D] -> [...]``.

    ``Σ_d [ln(σp/σq) + (σq² + (μq − μp)²) / (2σp²) − ½]``; the prior's mean and std broadcast
    (a float for an isotropic prior).
    """
    std_p = torch.as_tensor(std_p, dtype=std_q.dtype, device=std_q.device)
    var_ratio = (std_q / std_p) ** 2
    mahalanobis = ((mean_q - mean_p) / std_p) ** 2
    return 0.5 * (var_ratio + mahalanobis - 1 - torch.log(var_ratio)).sum(-1)


def _mlp(in_features: int, hidden_size: int, out_features: int) -> nn.Sequential:
    """The 2-layer ReLU MLP of KM App. C: ``[N, in_features] -> [N, out_features]``."""
    return nn.Sequential(nn.Linear(in_features, hidden_size), nn.ReLU(), nn.Linear(hidden_size, out_features))


def _diagonal_normal(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split MLP outputs ``[..., 2D]`` into a mean ``[..., D]`` and a std ``[..., D]`` (softplus, floored)."""
    mean, raw_std = params.chunk(2, dim=-1)
    return mean, _MIN_STD + F.softplus(raw_std)


class KanervaMachine(GenerativeMemory):
    """Generative distributed memory with learned addresses (KM, ICLR 2018).

    :param input_shape: one frame: ``(D,)`` for vectors (MLP coders), ``(H, W, C)`` or ``(C, H, W)``
        for images (convolutional coders, KM App. C). uint8 frames are scaled to ``[0, 1]``.
    :param code_size: C, the size of the codes z and of the memory's columns; the encoder
        outputs ``2C`` features (App. C).
    :param num_slots: K, the memory's rows (and the rows of the addresses A).
    :param likelihood: ``"bernoulli"`` for binary frames, ``"gaussian"`` for real-valued ones, ``"logistic"``
        (discretised) for 8-bit frames.
    :param address_size: S, the size of the keys ``b = f(y)`` and of the rows of A.
    :param y_size: size of the addressing variable y; None means ``code_size``.
    :param channel_order: ``"auto"`` (the end of size <= 4 holds the channels), ``"hwc"`` or ``"chw"``.
    :param resize: how image frames of another height and width are resized to the model's:
        ``"area"``, ``"bilinear"`` (antialiased) or ``"none"`` to refuse them (see
        :mod:`episodic_memory.models.preprocessing`). Saved in the config; checkpoints without it read ``"area"``.
    :param hidden_channels: filters of every convolution (image inputs).
    :param hidden_size: width of the hidden layers of every MLP (coders for vector inputs, the
        posteriors and the key network f).
    :param y_input_noise_std: std of the Gaussian noise added to ``e(x)`` before ``q(y | x)`` in
        training mode only (App. C: it limits the information in the addresses).
    :param obs_noise_std: σ of ``p(z | y, M) = N(wᵀM, σ² I)`` (eq. 6), also the memory's write noise.
    :param normalise_codes: layer-normalise the mean of ``q(z | x)`` (the codes written and read out), as
        :class:`~episodic_memory.models.dkm.DynamicKanervaMachine` does; our choice, not the paper's.
    :param observation_encoding: as for :class:`~episodic_memory.models.dkm.DynamicKanervaMachine`.

    Example::

        km = KanervaMachine(input_shape=(28, 28, 1), code_size=100, num_slots=64)
        losses = km.loss(x)                         # x [B, T, 28, 28, 1] uint8
        losses["loss"].backward()
        km.eval()
        state = km.write(x)                         # MemoryState
        trajectory, energies = km.attractor(state, noisy_x, steps=10)
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] | list[int],
        code_size: int = 100,
        num_slots: int = 64,
        likelihood: str = "bernoulli",
        *,
        address_size: int = 50,
        y_size: int | None = None,
        channel_order: ChannelOrder = "auto",
        resize: ResizeMode = "area",
        hidden_channels: int = 32,
        hidden_size: int = 256,
        y_input_noise_std: float = 0.2,
        obs_noise_std: float = 1.0,
        normalise_codes: bool = False,
        observation_encoding: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        y_size = code_size if y_size is None else y_size
        for name, value in (("address_size", address_size), ("y_size", y_size), ("hidden_size", hidden_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (isinstance(y_input_noise_std, (int, float)) and math.isfinite(y_input_noise_std) and y_input_noise_std >= 0):
            raise ValueError(f"y_input_noise_std must be a non-negative finite number, got {y_input_noise_std!r}")
        self.input_spec = InputSpec.from_shape(input_shape, channel_order, resize)
        self.config = {
            "input_shape": list(self.input_spec.shape),
            "code_size": code_size,
            "num_slots": num_slots,
            "likelihood": likelihood,
            "address_size": address_size,
            "y_size": y_size,
            "channel_order": self.input_spec.channel_order,
            "resize": self.input_spec.resize,
            "hidden_channels": hidden_channels,
            "hidden_size": hidden_size,
            "y_input_noise_std": y_input_noise_std,
            "obs_noise_std": obs_noise_std,
            "normalise_codes": bool(normalise_codes),
            "observation_encoding": observation_encoding,
        }
        self._set_observation_encoding(observation_encoding)
        self.y_input_noise_std = float(y_input_noise_std)
        self.memory = KanervaMemory(num_slots, code_size, obs_noise_std=obs_noise_std)
        self.likelihood = make_likelihood(likelihood)
        self.encoder, self.decoder = build_coders(self.input_spec, code_size, 2 * code_size, hidden_channels, hidden_size)
        self.q_y = _mlp(2 * code_size, hidden_size, 2 * y_size)  # q(y | x), eq. 7
        self.key = _mlp(y_size, hidden_size, address_size)  # f, eq. 5
        self.addresses = nn.Parameter(torch.randn(num_slots, address_size))  # A [K, S], eq. 5
        self.q_z_write = _mlp(2 * code_size, hidden_size, 2 * code_size)  # q(z | x), eq. 8
        self.q_z_read = _mlp(3 * code_size, hidden_size, 2 * code_size)  # q(z | x, y, M) from [e(x), wᵀR], eq. 7

    # ----------------------------------------------------------------------------------------
    # Coders and posteriors
    # ----------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``q(z | x)``: episodes ``[B, T, *input_shape]`` -> codes ``[B, T, C]``."""
        features = self._features(self._frames_in(x), *x.shape[:2])
        return self._q_z(features)[0]

    def address_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``w = A f(ȳ)`` with ``ȳ`` the mean of ``q(y | x)`` (eq. 5): ``[B, T, *input_shape] -> [B, T, K]``."""
        features = self._features(self._frames_in(x), *x.shape[:2])
        return self._weights(self._q_y(features, noisy=False)[0])

    def encode_and_address(self, x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`encode` and :meth:`address_weights` from one pass of the encoder: ``([B, T, C], [B, T, K])``."""
        features = self._features(self._frames_in(x, name), *x.shape[:2])
        return self._q_z(features)[0], self._weights(self._q_y(features, noisy=False)[0])

    def _features(self, frames: torch.Tensor, B: int, T: int) -> torch.Tensor:
        """``e(x)``: model frames ``[B*T, *model_shape]`` -> features ``[B, T, 2C]``."""
        return self.encoder(frames).view(B, T, 2 * self.code_size)  # [B*T, 2C] -> [B, T, 2C]

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, T, C]`` -> likelihood parameters ``[B*T, *model_shape]``."""
        return self.decoder(z.flatten(0, 1))

    def _calibration_layers(self) -> list[tuple[nn.Linear, int]]:
        # e(x), then the means of q(z | x) and q(y | x) (their stds untouched), then the keys f(ȳ)
        y_size = self.config["y_size"]
        return [
            (last_linear(self.encoder), 2 * self.code_size),
            (last_linear(self.q_z_write), self.code_size),
            (last_linear(self.q_y), y_size),
            (last_linear(self.key), self.config["address_size"]),
        ]

    def _after_calibration(self, episodes: torch.Tensor) -> None:
        """Scale the centred keys so that the median address norm |w| over the calibration frames is 1: centred
        random keys give addresses of norm about 1e-3, which write almost nothing (KM eq. 9-11)."""
        w = self.encode_and_address(episodes, "calibration frames")[1]  # [N, 1, K]
        key = last_linear(self.key)
        scale = 1.0 / float(w.norm(dim=-1).median().clamp_min(1e-12))
        key.weight *= scale
        key.bias *= scale

    def _q_z(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(z | x)`` (eq. 8) from features ``[B, T, 2C]``: mean (normalised with ``normalise_codes``) and std ``[B, T, C]``."""
        mean, std = _diagonal_normal(self.q_z_write(features))
        return self._normalised(mean), std

    def _q_y(self, features: torch.Tensor, noisy: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(y | x)`` from features ``[B, T, 2C]``: mean and std ``[B, T, Y]``; ``noisy`` adds the App. C input noise."""
        if noisy:
            features = features + self.y_input_noise_std * torch.randn_like(features)  # KM App. C
        return _diagonal_normal(self.q_y(features))

    def _weights(self, y: torch.Tensor) -> torch.Tensor:
        """``w = A f(y)`` with unit-norm rows of A (KM eq. 5, §3.1): ``y [B, T, Y] -> w [B, T, K]``."""
        A = F.normalize(self.addresses, dim=-1)  # [K, S]
        return self.key(y) @ A.T  # [B, T, S] @ [S, K]

    def _read_posterior(
        self, state: MemoryState, features: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prior mean ``μz = wᵀR`` (eq. 6, mean-field) and ``q(z | x, y, M)`` (eq. 7), each ``[B, T, C]``.

        Returns ``(μz, mean, std)``.
        """
        mu_z = self.memory.read(state, self._weights(y))  # KM eq. 6 [B, T, C]
        mean, std = _diagonal_normal(self.q_z_read(torch.cat([features, mu_z], dim=-1)))  # [B, T, 3C] -> [B, T, C] x 2
        return mu_z, mean, std

    def _kl_z(self, mean: torch.Tensor, std: torch.Tensor, mu_z: torch.Tensor) -> torch.Tensor:
        """``KL(q(z | x, y, M) || N(μz, σ² I))`` per item: ``[B, T, C] -> [B, T]``."""
        return diagonal_normal_kl(mean, std, mu_z, self.memory.obs_noise_std)

    # ----------------------------------------------------------------------------------------
    # Memory
    # ----------------------------------------------------------------------------------------
    def write(self, x: torch.Tensor) -> MemoryState:
        """Write episodes ``x [B, T, *input_shape]`` into fresh memories (writing inference, eq. 8-11, Algorithm 2).

        In training mode ``y_t ~ q(y | x_t)`` (with the App. C input noise) and ``z_t ~ q(z | x_t)``
        are sampled, reparameterised; in eval mode their means are used, so the write is
        deterministic. All T items are written in one exact batch update, which equals the on-line
        (one item at a time) update of Algorithm 2.
        """
        frames = self._frames_in(x)
        B, T = x.shape[:2]
        return self._write(self._features(frames, B, T))

    def _write(self, features: torch.Tensor) -> MemoryState:
        """Writing inference from features ``[B, T, 2C]`` (eq. 8-11)."""
        mean_y, std_y = self._q_y(features, noisy=self.training)
        mean_z, std_z = self._q_z(features)
        y, z = mean_y, mean_z
        if self.training:
            y = mean_y + std_y * torch.randn_like(mean_y)  # y_t ~ q(y | x_t), eq. 8
            z = mean_z + std_z * torch.randn_like(mean_z)  # z_t ~ q(z | x_t), eq. 8
        return self.memory.write(self.memory.prior(features.shape[0]), z, self._weights(y))  # KM eq. 9-11

    # ----------------------------------------------------------------------------------------
    # Training objective
    # ----------------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The KM objective on episodes ``x [B, T, *input_shape]``, per frame, averaged over B.

        Writes the episode (:meth:`write`), then reads every frame back with fresh samples
        ``y_t ~ q(y | x_t)``, ``w_t = A f(y_t)``, ``μz = w_tᵀR``, ``z_t ~ q(z | x_t, y_t, M)``
        (reparameterised; the App. C input noise in training mode only).

        Keys (nats per frame):

        - ``loss``: ``−cond_elbo``, to minimise (eq. 12 / T);
        - ``nll``: ``−ln p(x_t | z_t)``;
        - ``kl_y``: ``KL(q(y_t | x_t) || N(0, I))``;
        - ``kl_z``: ``KL(q(z_t | x_t, y_t, M) || N(μz, σ² I))``;
        - ``kl_memory``: ``KL(q(M) || p(M)) / T``, reported, not trained on;
        - ``cond_elbo``: ``−nll − kl_y − kl_z``, eq. 12 per frame (a lower bound on ``ln p(x | M)``);
        - ``elbo``: ``cond_elbo − kl_memory``.
        """
        frames = self._frames_in(x)  # [B*T, *model_shape]
        B, T = x.shape[:2]
        features = self._features(frames, B, T)  # [B, T, 2C]
        state = self._write(features)  # writing, eq. 8-11
        mean_y, std_y = self._q_y(features, noisy=self.training)  # reading, eq. 7
        y = mean_y + std_y * torch.randn_like(mean_y)  # y_t ~ q(y | x_t)
        mu_z, mean_z, std_z = self._read_posterior(state, features, y)
        z = mean_z + std_z * torch.randn_like(mean_z)  # z_t ~ q(z | x_t, y_t, M)
        nll = -self.likelihood.log_prob(self._decode(z), frames).view(B, T)  # [B*T] -> [B, T]
        kl_y = diagonal_normal_kl(mean_y, std_y, 0.0, 1.0)  # [B, T]
        kl_z = self._kl_z(mean_z, std_z, mu_z)  # [B, T]
        kl_memory = self.memory.kl(state) / T  # [B]
        cond_elbo = -(nll + kl_y + kl_z).mean(1)  # KM eq. 12 / T [B]
        elbo = cond_elbo - kl_memory
        return {
            "loss": -cond_elbo.mean(),
            "nll": nll.mean(),
            "kl_y": kl_y.mean(),
            "kl_z": kl_z.mean(),
            "kl_memory": kl_memory.mean(),
            "cond_elbo": cond_elbo.mean(),
            "elbo": elbo.mean(),
        }

    # ----------------------------------------------------------------------------------------
    # Reading and iterative reading
    # ----------------------------------------------------------------------------------------
    def _energy_terms(self, state: MemoryState, frames: torch.Tensor, B: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder parameters at the posterior means and the per-frame negative ELBO of model frames ``[B*T, ...]``.

        ``ȳ`` is the mean of ``q(y | x)`` (no input noise), ``z̄`` the mean of ``q(z | x, ȳ, M)``.
        Returns ``(params [B*T, *model_shape], energy [B, T])``.
        """
        features = self._features(frames, B, T)
        mean_y, std_y = self._q_y(features, noisy=False)
        mu_z, mean_z, std_z = self._read_posterior(state, features, mean_y)
        params = self._decode(mean_z)
        nll = -self.likelihood.log_prob(params, frames).view(B, T)  # [B*T] -> [B, T]
        return params, nll + diagonal_normal_kl(mean_y, std_y, 0.0, 1.0) + self._kl_z(mean_z, std_z, mu_z)
