"""The Product Kanerva Machine (PKM): Marblestone, Wu and Wayne, *Product Kanerva Machines: Factorized Bayesian Memory*, 2020.

Shapes: episodes ``x [B, T, *input_shape]``, codes ``z [B, T, C]``, selection weights
``α [B, T, M]``, sub-memory weights ``w [B*M, T, K]``, memories ``MemoryState(mean [B*M, K, C],
cov [B*M, K, K])`` (:mod:`episodic_memory.kanerva.product`: sub-memory m of episode b at row ``b*M + m``).

The paper's method is not in our copy (its abstract only); this model is our reconstruction, on
the DKM's parts so that the two compare on equal terms. Each choice, and why:

- **Coders, addressing, objective: the DKM's** (deterministic encoder ``z = e(x)``, each sub-memory
  addressed by content, DKM eq. 6, ``q(w_m) = N(μw_m, σw² I)``, ``p(w_m) = N(0, σw0² I)``, the
  autoencoder term of eq. 11), so that any difference is the memory's.
- **Selection** ``α = softmax(g(z))``, g one linear layer on the code: a cheap amortised choice of
  which sub-memories hold an item, learned through the ELBO (a deterministic function of the code,
  as the DKM's z is of the frame, so it adds no KL term).
- **Memory** (:class:`~episodic_memory.kanerva.product.ProductKanervaMemory`): the item's read is the
  product of the sub-memories' Gaussian reads with precisions ``α_m/σξ²``, i.e. ``Σ_m α_m w_mᵀM_m``;
  each sub-memory writes the item with noise ``σξ²/α_m``, the KM's exact rule.
- **ELBO** per frame: ``−ln p(x | Σ_m α_m w_mᵀR_m) − Σ_m KL(q(w_m) || p(w_m)) − KL(q(M) || p(M))/T``,
  every sub-memory's weights a latent of the item (the bound stays a bound however α falls).

``num_slots`` is the total ``M K``: a PKM and a DKM or KM of the same ``num_slots`` have as many slots.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from episodic_memory.kanerva.memory import MemoryState
from episodic_memory.kanerva.product import ProductKanervaMemory
from episodic_memory.models.coders import build_coders
from episodic_memory.models.dkm import weights_kl
from episodic_memory.models.likelihoods import make_likelihood
from episodic_memory.models.machine import ContentAddressedMemory
from episodic_memory.models.preprocessing import ChannelOrder, InputSpec, ResizeMode

__all__ = ["ProductKanervaMachine", "allocation_entropy"]


def allocation_entropy(alpha: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of selection weights ``α [..., M]`` (0: one sub-memory, ln M: all equally): ``[...]``."""
    return -(alpha * alpha.clamp_min(1e-12).log()).sum(-1)


class ProductKanervaMachine(ContentAddressedMemory):
    """A generative memory of M small Kanerva memories combined per item (our reconstruction of the PKM).

    :param input_shape, likelihood, channel_order, resize, hidden_channels, hidden_size, obs_noise_std,
        w_prior_std, w_std_init, normalise_codes, observation_encoding: as for
        :class:`~episodic_memory.models.dkm.DynamicKanervaMachine`.
    :param code_size: C.
    :param num_slots: the slots of all sub-memories together, ``M K`` (a multiple of ``num_memories``).
    :param num_memories: M, the sub-memories.

    Example::

        pkm = ProductKanervaMachine(input_shape=(32, 32, 3), num_slots=32, num_memories=4, likelihood="gaussian")
        losses = pkm.loss(x)                      # x [B, T, 32, 32, 3] uint8
        state = pkm.write(x)                      # MemoryState of B*4 memories of 8 slots
        alpha = pkm.selection(pkm.encode(x))      # [B, T, 4], which sub-memories hold each frame
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] | list[int],
        code_size: int = 100,
        num_slots: int = 32,
        likelihood: str = "bernoulli",
        *,
        num_memories: int = 4,
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
        if isinstance(num_memories, bool) or not isinstance(num_memories, int) or num_memories < 1:
            raise ValueError(f"num_memories must be a positive int, got {num_memories!r}")
        if not isinstance(num_slots, int) or num_slots < 1 or num_slots % num_memories:
            raise ValueError(f"num_slots must be a positive multiple of num_memories={num_memories}, got {num_slots!r}")
        if not (isinstance(w_std_init, (int, float)) and w_std_init > 0):
            raise ValueError(f"w_std_init must be a positive number, got {w_std_init!r}")
        self.input_spec = InputSpec.from_shape(input_shape, channel_order, resize)
        self.config = {
            "input_shape": list(self.input_spec.shape),
            "code_size": code_size,
            "num_slots": num_slots,
            "likelihood": likelihood,
            "num_memories": num_memories,
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
        self.memory = ProductKanervaMemory(
            num_memories, num_slots // num_memories, code_size, obs_noise_std=obs_noise_std, w_prior_std=w_prior_std
        )
        self.likelihood = make_likelihood(likelihood)
        self.encoder, self.decoder = build_coders(self.input_spec, code_size, code_size, hidden_channels, hidden_size)
        self.selector = nn.Linear(code_size, num_memories)  # g: logits of α
        self.log_w_std = nn.Parameter(torch.tensor(math.log(w_std_init)))  # σw of every q(w_m)

    @property
    def num_memories(self) -> int:
        return self.memory.num_memories

    # ----------------------------------------------------------------------------------------
    # Selection
    # ----------------------------------------------------------------------------------------
    def selection(self, z: torch.Tensor) -> torch.Tensor:
        """``α = softmax(g(z))``: codes ``[..., C]`` -> selection weights ``[..., M]`` (summing to 1)."""
        return F.softmax(self.selector(z), dim=-1)

    # ----------------------------------------------------------------------------------------
    # Memory
    # ----------------------------------------------------------------------------------------
    def write(self, x: torch.Tensor) -> MemoryState:
        """Write episodes ``x [B, T, *input_shape]`` into fresh product memories, one frame after another."""
        z = self.encode(x)
        return self.memory.write_sequential(self.memory.prior(z.shape[0]), z, self.selection(z))

    def episodes_in(self, state: MemoryState) -> int:
        """B: a state holds M sub-memories per episode."""
        return state.batch_size // self.num_memories

    def retrieve(self, state: MemoryState, z: torch.Tensor, steps: int) -> torch.Tensor:
        """Code-space attractor ``z <- Σ_m α_m(z) read_m(address_m(z))``, ``steps`` times: ``[B, T, C] -> [B, T, C]``."""
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        for _ in range(steps):
            z = self.memory.read(state, self.memory.address(state, z), self.selection(z))
        return z

    def _kl_w(self, mu_w: torch.Tensor, B: int) -> torch.Tensor:
        """``Σ_m KL(N(μw_m, σw² I) || N(0, σw0² I))`` per item: ``[B*M, T, K] -> [B, T]``."""
        per_memory = weights_kl(mu_w, self.log_w_std, self.memory.w_prior_std)  # [B*M, T]
        return per_memory.view(B, self.num_memories, -1).sum(1)  # [B, T]

    def _energy_terms(self, state: MemoryState, frames: torch.Tensor, B: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder parameters at ``w_m = μw_m(x)`` and the energy ``−ln p(x | w, M) + Σ_m KL`` of model frames ``[B*T, ...]``."""
        z = self._encode_frames(frames, B, T)
        mu_w = self.memory.address(state, z)  # [B*M, T, K]
        params = self._decode(self.memory.read(state, mu_w, self.selection(z)))
        nll = -self.likelihood.log_prob(params, frames).view(B, T)
        return params, nll + self._kl_w(mu_w, B)

    # ----------------------------------------------------------------------------------------
    # Training objective
    # ----------------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The objective on episodes ``x [B, T, *input_shape]``, per frame, averaged over B (module docstring).

        Keys (nats per frame): ``loss`` (``−elbo + nll_ae``, to minimise), ``nll``, ``kl_w`` (summed over
        the sub-memories), ``kl_memory``, ``nll_ae``, ``cond_elbo`` (``−nll − kl_w``), ``elbo``; and
        ``allocation_entropy``, the mean entropy of α in nats (reported, not trained on).
        """
        frames = self._frames_in(x)  # [B*T, *model_shape]
        B, T = x.shape[:2]
        z = self._encode_frames(frames, B, T)  # [B, T, C]
        alpha = self.selection(z)  # [B, T, M]
        state = self.memory.write_sequential(self.memory.prior(B), z, alpha)  # writing
        mu_w = self.memory.address(state, z)  # reading, DKM eq. 6 in every sub-memory [B*M, T, K]
        w = mu_w + torch.exp(self.log_w_std) * torch.randn_like(mu_w)  # w_m ~ q(w_m)
        nll = -self.likelihood.log_prob(self._decode(self.memory.read(state, w, alpha)), frames).view(B, T)
        kl_w = self._kl_w(mu_w, B)  # [B, T]
        kl_memory = self.memory.kl(state) / T  # [B]
        nll_ae = -self.likelihood.log_prob(self._decode(z), frames).view(B, T)  # DKM eq. 11
        cond_elbo = -(nll + kl_w).mean(1)  # [B]
        elbo = cond_elbo - kl_memory
        return {
            "loss": (-elbo + nll_ae.mean(1)).mean(),
            "nll": nll.mean(),
            "kl_w": kl_w.mean(),
            "kl_memory": kl_memory.mean(),
            "nll_ae": nll_ae.mean(),
            "cond_elbo": cond_elbo.mean(),
            "elbo": elbo.mean(),
            "allocation_entropy": allocation_entropy(alpha).mean().detach(),
        }
