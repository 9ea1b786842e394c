"""An EBMM on the codes of an autoencoder: Bartunov et al., *Meta-Learning Deep Energy-Based Memory Models*, ICLR 2020.

Shapes: episodes ``x [B, T, *input_shape]``, codes ``z [B, T, C]``, memories
``θ = (W [B, H, C], b [B, H])`` (:mod:`episodic_memory.energy`, H = ``num_slots``).

The paper's models share one encoder and decoder across memories ("All models shared the same
encoder (and decoder, when applicable) network", §4); this machine is that arrangement with the
DKM's coders, so that an EBMM and a DKM of the same code size compare on their memories:

- **Codes** in the box ``[−1, 1]^C``: ``z = e(x)`` ends in a layer norm and a tanh, and reads are
  projected onto the box (as on ±1 patterns). Our choices: with unbounded codes the read descended
  towards ``Wᵀ softmax / λ``, which grew with the written rows (on the digits, codes of norm 4·10⁴ after
  1,000 training steps); with a tanh alone the encoder saturated it, so that a frame and its distorted
  copy had the same ±1 code and the memory had nothing to do (a read error of 10⁻¹³). The layer norm
  (``normalise_codes``, on by default here) keeps the tanh's input at unit variance.
- **Write** an episode: its codes written into θ by eq. 4 (``write_mode="batch"``, from θ̄)
  or one code at a time (``"online"``, :meth:`EnergyMemory.write_online`, what ``ebmm-incremental`` does).
- **Read** a query frame: the code of the frame read by eq. 1 (K projected Nesterov steps on
  ``E(·; θ)``), then decoded.
- **Objective** (eq. 2, 5, with the reconstruction error measured as the likelihood of the clean frame,
  our choice): ``−ln p(x | d(read(e(x̃); write(e(X)))))`` for frames distorted by the machine's
  corruption model (:class:`~episodic_memory.energy.corruption.Corrupter`: ``block`` erasure by
  default, a square of half the side set to ½; ``entries`` for vectors), plus the autoencoder term
  ``−ln p(x | d(e(x)))`` (DKM eq. 11). Every part, θ̄ and the rules included, is trained by it, with
  second-order gradients through the write.
- **Energy** of a frame: ``E(e(x); θ)``, EBMM's novelty.

There is no ELBO: the model is not a latent-variable model, so it has no conditional NLL bound and no
prior samples (``capabilities``: memory and attractor).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from episodic_memory.energy import CORRUPTION_KINDS, Corrupter, CorruptionKind, EnergyMemory, WritableParameters
from episodic_memory.models.coders import build_coders
from episodic_memory.models.likelihoods import make_likelihood
from episodic_memory.models.machine import ContentAddressedMemory, GenerativeMemory
from episodic_memory.models.preprocessing import ChannelOrder, InputSpec, ResizeMode

__all__ = ["EnergyBasedMemoryMachine"]

WriteMode = Literal["batch", "online"]


class EnergyBasedMemoryMachine(ContentAddressedMemory):
    """An autoencoder whose episodes are stored in an EBMM's writable layer (module docstring).

    :param input_shape, likelihood, channel_order, resize, hidden_channels, hidden_size, observation_encoding: as
        for :class:`~episodic_memory.models.dkm.DynamicKanervaMachine`.
    :param normalise_codes: layer-normalise the encoder's output before the codes' tanh (module docstring).
    :param code_size: C, the codes' size and the energy network's input.
    :param num_slots: H, the rows of the writable layer (a memory holds ``H (C + 1)`` numbers).
    :param read_steps: K of eq. 1.
    :param write_steps: T of eq. 4.
    :param write_mode: ``batch`` (eq. 4 on the episode) or ``online`` (one code at a time), for training and :meth:`write`.
    :param corruption: the distortion model of the training queries (:data:`~episodic_memory.energy.CORRUPTION_KINDS`).
    :param corruption_amount: its amount (:class:`~episodic_memory.energy.corruption.Corrupter`); None: half the
        side (``block``) or half the entries (``entries``), 0.2 (``salt-and-pepper``), 0.3 (``gaussian``).
    """

    capabilities = GenerativeMemory.capabilities - {"elbo"}
    state_type = tuple

    def __init__(
        self,
        input_shape: tuple[int, ...] | list[int],
        code_size: int = 100,
        num_slots: int = 32,
        likelihood: str = "bernoulli",
        *,
        read_steps: int = 5,
        write_steps: int = 5,
        write_mode: WriteMode = "batch",
        corruption: CorruptionKind | None = None,
        corruption_amount: float | None = None,
        channel_order: ChannelOrder = "auto",
        resize: ResizeMode = "area",
        hidden_channels: int = 32,
        hidden_size: int = 256,
        normalise_codes: bool = True,
        observation_encoding: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if write_mode not in ("batch", "online"):
            raise ValueError(f"write_mode must be 'batch' or 'online', actual value: {write_mode!r}")
        self.input_spec = InputSpec.from_shape(input_shape, channel_order, resize)
        if corruption is None:
            corruption = "block" if self.input_spec.is_image else "entries"
        if corruption not in CORRUPTION_KINDS:
            raise ValueError(f"corruption must be one of {list(CORRUPTION_KINDS)}, actual value: {corruption!r}")
        if corruption == "block" and not self.input_spec.is_image:
            raise ValueError("a block corruption needs image frames; use corruption='entries' for vectors")
        if corruption_amount is None:
            shape = self.input_spec.model_shape
            defaults = {"block": min(shape[-2:]) // 2, "entries": shape[-1] // 2, "salt-and-pepper": 0.2, "gaussian": 0.3}
            corruption_amount = defaults[corruption]
        self.corrupter = Corrupter(corruption, corruption_amount, low=0.0, high=1.0, fill=0.5)
        self.config = {
            "input_shape": list(self.input_spec.shape),
            "code_size": code_size,
            "num_slots": num_slots,
            "likelihood": likelihood,
            "read_steps": read_steps,
            "write_steps": write_steps,
            "write_mode": write_mode,
            "corruption": corruption,
            "corruption_amount": corruption_amount,
            "channel_order": self.input_spec.channel_order,
            "resize": self.input_spec.resize,
            "hidden_channels": hidden_channels,
            "hidden_size": hidden_size,
            "normalise_codes": bool(normalise_codes),
            "observation_encoding": observation_encoding,
        }
        self._set_observation_encoding(observation_encoding)
        self.memory = EnergyMemory(code_size, num_slots, read_steps=read_steps, write_steps=write_steps, bounds=(-1.0, 1.0))
        self.likelihood = make_likelihood(likelihood)
        self.encoder, self.decoder = build_coders(self.input_spec, code_size, code_size, hidden_channels, hidden_size)

    @property
    def num_slots(self) -> int:
        """H, the writable layer's rows."""
        return self.memory.network.writable_size

    # ----------------------------------------------------------------------------------------
    # Memory
    # ----------------------------------------------------------------------------------------
    def _encode_frames(self, frames: torch.Tensor, B: int, T: int) -> torch.Tensor:
        """Model frames ``[B*T, *model_shape]`` -> codes ``tanh(e(x))`` ``[B, T, C]`` in the memory's box."""
        return torch.tanh(super()._encode_frames(frames, B, T))

    def _write_codes(self, z: torch.Tensor, create_graph: bool = False) -> WritableParameters:
        if self.config["write_mode"] == "online":
            return self.memory.write_online(z, create_graph=create_graph)
        return self.memory.write(z, create_graph=create_graph)

    def write(self, x: torch.Tensor) -> WritableParameters:
        """Write episodes ``x [B, T, *input_shape]`` into fresh memories: θ ``(W [B, H, C], b [B, H])``."""
        return self._write_codes(self.encode(x))

    def episodes_in(self, state: WritableParameters) -> int:
        return state[0].shape[0]

    def retrieve(self, state: WritableParameters, z: torch.Tensor, steps: int) -> torch.Tensor:
        """The read (eq. 1) of codes ``z [B, T, C]``, ``steps`` times over: ``[B, T, C]``."""
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        for _ in range(steps):
            z = self.memory.read(z, state)
        return z

    def _energy_terms(self, state: WritableParameters, frames: torch.Tensor, B: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder parameters of the read of model frames ``[B*T, ...]`` and their energy ``E(e(x); θ)`` ``[B, T]``."""
        z = self._encode_frames(frames, B, T)
        return self._decode(self.memory.read(z, state)), self.memory.energy(z, state)

    # ----------------------------------------------------------------------------------------
    # Training objective
    # ----------------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The objective on episodes ``x [B, T, *input_shape]``, per frame (module docstring).

        Keys (nats per frame unless said): ``loss`` (``nll + nll_ae``, to minimise); ``nll``, of the clean frames
        from the reads of the distorted ones; ``nll_ae``, the autoencoder term; ``code_error``, ``|read(e(x̃)) −
        e(x)|²`` (eq. 2 in code space, reported); ``stored_energy`` and ``query_energy``, the mean energies of the
        written codes and of the distorted frames' codes (reported).
        """
        frames = self._frames_in(x)  # [B*T, *model_shape]
        B, T = x.shape[:2]
        z = self._encode_frames(frames, B, T)  # [B, T, C]
        theta = self._write_codes(z, create_graph=True)  # eq. 4, differentiable
        distorted, _ = self.corrupter(frames.view(B, T, *frames.shape[1:]))  # x̃ [B, T, *model_shape]
        query = self._encode_frames(distorted.flatten(0, 1), B, T)  # [B, T, C]
        read = self.memory.read(query, theta, create_graph=True)  # eq. 1
        nll = -self.likelihood.log_prob(self._decode(read), frames).view(B, T)
        nll_ae = -self.likelihood.log_prob(self._decode(z), frames).view(B, T)  # DKM eq. 11
        return {
            "loss": (nll + nll_ae).mean(),
            "nll": nll.mean(),
            "nll_ae": nll_ae.mean(),
            "code_error": (read - z).pow(2).sum(-1).mean().detach(),
            "stored_energy": self.memory.energy(z, theta).mean().detach(),
            "query_energy": self.memory.energy(query, theta).mean().detach(),
        }
