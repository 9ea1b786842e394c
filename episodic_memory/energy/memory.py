"""EBMM's reading and writing rules and its meta-learning objective (Bartunov et al., ICLR 2020, eq. 1-5).

Shapes: ``B`` memories, ``N`` patterns each, ``D`` the pattern size; patterns and queries
``x [B, N, D]``, a bool mask ``known [B, N, D]`` of the entries a query is sure of; the memories'
writable parameters ``θ`` as :class:`~episodic_memory.energy.network.WritableParameters`.

- **Read** (eq. 1): K steps of gradient descent on the energy from the query, ``x⁽ᵏ⁺¹⁾ = x⁽ᵏ⁾ −
  γ⁽ᵏ⁾ ∇ₓE(x⁽ᵏ⁾; θ)``, with the two extensions the paper names (its Appendix A, not in our copy, so
  the forms are ours): Nesterov momentum (``v ← μ v − γ ∇ₓE(x + μ v)``, ``x ← x + v``, a learned μ)
  and a projection after every step, onto the box ``bounds`` (``[−1, 1]`` for ±1 patterns) and onto
  the query's known entries, which are put back (the classical memories of ``binary_recall`` are
  told the same).
- **Write** (eq. 3-4): T steps of gradient descent on the writing loss
  ``W(x, θ) = E(x; θ) + α‖∇ₓE(x; θ)‖² + β‖θ − θ̄‖²``, averaged over the N patterns, from ``θ⁽⁰⁾ = θ̄``
  (or from a memory's current θ: :meth:`EnergyMemory.write` takes a start, which is how the incremental
  backend adds one code at a time). Each step's gradient differentiates ``∇ₓE``, so it is second order.
- **Meta-objective** (eq. 2, 5): ``L = 1/N Σᵢ ‖xᵢ − read(x̃ᵢ; write(X))‖²`` over random sets X and
  distortions x̃, minimised over θ̄, κ, λ, the step sizes ``{γ⁽ᵏ⁾}, {η⁽ᵗ⁾}``, μ and ``(α, β)``:
  :meth:`EnergyMemory.meta_loss`, which backpropagates through the write (third-order terms).

The learned scalars are kept positive as the exponentials of free parameters, so that Adam moves them
by factors (μ in (0, 1) as a sigmoid); each write step has one step size for W and one for b (our choice).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from episodic_memory.energy.network import EnergyNetwork, WritableParameters

__all__ = ["EnergyMemory", "Corruption"]

Corruption = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
"""``x [B, N, D] -> (x̃ [B, N, D], known [B, N, D] bool or None)``: a distortion model (see :mod:`.corruption`)."""


class EnergyMemory(nn.Module):
    """B energy-based memories with meta-learned reading and writing rules.

    :param input_size: D.
    :param writable_size: H; one memory holds ``H·F + H`` numbers (F = D without features).
    :param read_steps: K, gradient steps of a read (eq. 1).
    :param write_steps: T, gradient steps of a write (eq. 4).
    :param bounds: the box ``(low, high)`` reads are projected onto, or None for unbounded patterns.
    :param read_step_size: initial γ⁽ᵏ⁾; :param write_step_size: initial η⁽ᵗ⁾ (both meta-learned from there).
    :param features: the energy network's fixed features ``f`` (see :class:`~episodic_memory.energy.network.EnergyNetwork`),
        e.g. :class:`~episodic_memory.energy.network.ConvolutionalFeatures` for frames; None: the identity.
    """

    def __init__(
        self,
        input_size: int,
        writable_size: int,
        read_steps: int = 5,
        write_steps: int = 5,
        bounds: tuple[float, float] | None = (-1.0, 1.0),
        read_step_size: float = 1.0,
        write_step_size: float = 1.0,
        features: nn.Module | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("read_steps", read_steps), ("write_steps", write_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, actual value: {value!r}")
        if bounds is not None and not (len(bounds) == 2 and float(bounds[0]) < float(bounds[1])):
            raise ValueError(f"bounds must be None or (low, high) with low < high, actual value: {bounds!r}")
        self.bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))
        centre = 0.0 if self.bounds is None else sum(self.bounds) / 2  # the well at the box's middle
        self.network = EnergyNetwork(input_size, writable_size, features=features, centre=centre)
        self.read_steps, self.write_steps = read_steps, write_steps
        self.read_step_size = nn.Parameter(torch.full((read_steps,), math.log(read_step_size)))  # log γ⁽ᵏ⁾
        self.read_momentum = nn.Parameter(torch.zeros(read_steps))  # μ⁽ᵏ⁾ (sigmoid): 0.5 to start
        self.write_step_size = nn.Parameter(torch.full((write_steps, 2), math.log(write_step_size)))  # log η⁽ᵗ⁾ for W, b
        self.gradient_penalty = nn.Parameter(torch.tensor(0.0))  # log α
        self.anchor = nn.Parameter(torch.tensor(math.log(0.01)))  # log β

    @property
    def input_size(self) -> int:
        return self.network.input_size

    @property
    def state_floats(self) -> int:
        """Numbers one memory holds (its writable parameters θ)."""
        return self.network.writable_floats

    def initial(self, batch_size: int) -> WritableParameters:
        """θ̄ for B memories (the state of an empty memory)."""
        return self.network.initial(batch_size)

    def energy(self, x: torch.Tensor, theta: WritableParameters) -> torch.Tensor:
        """``E(x; θ)``: ``x [B, N, D]`` -> ``[B, N]``; EBMM's novelty, low for stored patterns."""
        return self.network(x, theta)

    def _energy_and_gradient(
        self, x: torch.Tensor, theta: WritableParameters, create_graph: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``E(x; θ)`` ``[B, N]`` and ``∇ₓE(x; θ)`` ``[B, N, D]`` (graph kept when ``create_graph``, for the write's α term
        and meta-training)."""
        if not x.requires_grad:
            x = x.detach().requires_grad_()
        with torch.enable_grad():
            energy = self.network(x, theta)
            (gradient,) = torch.autograd.grad(energy.sum(), x, create_graph=create_graph)
        return energy, gradient

    def writing_loss(self, x: torch.Tensor, theta: WritableParameters, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``1/N Σᵢ W(xᵢ, θ)`` (eq. 3) for each memory: ``x [B, N, D]`` -> ``[B]``; with ``mask [B, N]`` (bool) the
        mean is over the patterns it marks (a memory with none is only pulled back towards θ̄)."""
        W, b = theta
        W0, b0 = self.initial(W.shape[0])
        alpha, beta = self.gradient_penalty.exp(), self.anchor.exp()
        energy, grad_x = self._energy_and_gradient(x.detach(), theta, create_graph=True)  # [B, N], [B, N, D]
        per_pattern = energy + alpha * grad_x.pow(2).sum(-1)  # [B, N]
        deviation = (W - W0).pow(2).sum((-2, -1)) + (b - b0).pow(2).sum(-1)  # [B]
        if mask is None:
            return per_pattern.mean(-1) + beta * deviation
        weights = mask.to(per_pattern.dtype)
        return (per_pattern * weights).sum(-1) / weights.sum(-1).clamp_min(1) + beta * deviation

    def write(
        self,
        x: torch.Tensor,
        start: WritableParameters | None = None,
        mask: torch.Tensor | None = None,
        *,
        create_graph: bool = False,
    ) -> WritableParameters:
        """``write(X) = θ⁽ᵀ⁾`` (eq. 4): T gradient steps on the writing loss of ``x [B, N, D]``.

        :param start: ``θ⁽⁰⁾``; None starts from θ̄ (a fresh memory, the paper's write).
        :param mask: ``[B, N]`` bool, the patterns of each set that count (sets of different sizes); None: all.
        :param create_graph: keep the graph through the steps (meta-training); otherwise the result is detached.
        """
        self._check_patterns(x, "x")
        if mask is not None and (mask.shape != x.shape[:2] or mask.dtype != torch.bool):
            raise ValueError(
                f"mask must be a bool tensor [B, N] = {tuple(x.shape[:2])}, actual: {mask.dtype} {tuple(mask.shape)}"
            )
        theta = self.initial(x.shape[0]) if start is None else start
        step_sizes = self.write_step_size.exp()  # [T, 2]
        with torch.enable_grad():
            if not create_graph:
                theta = tuple(t.detach().requires_grad_() for t in theta)
            for t in range(self.write_steps):
                loss = self.writing_loss(x, theta, mask).sum()  # the memories are independent: their sum separates
                grads = torch.autograd.grad(loss, theta, create_graph=create_graph)
                theta = tuple(p - step_sizes[t, i] * g for i, (p, g) in enumerate(zip(theta, grads, strict=True)))
                if not create_graph:
                    theta = tuple(p.detach().requires_grad_() for p in theta)
        return theta if create_graph else tuple(p.detach() for p in theta)

    def read(
        self,
        query: torch.Tensor,
        theta: WritableParameters,
        known: torch.Tensor | None = None,
        *,
        create_graph: bool = False,
        return_trajectory: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``read(x̃; θ) = x⁽ᴷ⁾`` (eq. 1, with Nesterov momentum and projection): queries ``[B, N, D]`` -> ``[B, N, D]``.

        :param known: entries held at the query's values; None holds none.
        :param create_graph: keep the graph (meta-training); otherwise the read is detached.
        :param return_trajectory: also return the iterates ``[K+1, B, N, D]``, the query first.
        """
        self._check_patterns(query, "query")
        if known is not None and (known.shape != query.shape or known.dtype != torch.bool):
            actual = f"{known.dtype} {tuple(known.shape)}"
            raise ValueError(f"known must be a bool tensor of the query's shape {tuple(query.shape)}, actual: {actual}")
        step_sizes, momenta = self.read_step_size.exp(), torch.sigmoid(self.read_momentum)  # [K], [K]
        if not create_graph:
            theta = tuple(t.detach() for t in theta)
        x, velocity = query, torch.zeros_like(query)
        trajectory = [x]
        for k in range(self.read_steps):
            lookahead = x + momenta[k] * velocity  # Nesterov: the gradient at the look-ahead point
            gradient = self._energy_and_gradient(lookahead if create_graph else lookahead.detach(), theta, create_graph)[1]
            velocity = momenta[k] * velocity - step_sizes[k] * gradient
            x = self._project(x + velocity, query, known)
            if not create_graph:
                x, velocity = x.detach(), velocity.detach()
            trajectory.append(x)
        return (x, torch.stack(trajectory)) if return_trajectory else x

    def write_online(self, x: torch.Tensor, *, create_graph: bool = False) -> WritableParameters:
        """The online write: ``x [B, N, D]`` written one pattern at a time, T steps on each from the θ the
        previous ones left (what :class:`~episodic_memory.backends.energy.OnlineEnergyMemory` does every env step)."""
        theta = None
        for n in range(x.shape[1]):
            theta = self.write(x[:, n : n + 1], start=theta, create_graph=create_graph)
        return theta

    def meta_loss(self, x: torch.Tensor, corrupt: Corruption, online: bool = False) -> torch.Tensor:
        """The meta-objective (eq. 2, 5) on pattern sets ``x [B, N, D]``: mean squared error per pattern, a scalar.

        ``corrupt`` draws the distorted queries (and which of their entries are known); the write and
        the read keep their graphs, so the loss's gradient reaches θ̄, κ, λ, the step sizes, μ, α and β.
        ``online`` meta-trains the rules for :meth:`write_online` instead of the batch write.
        """
        theta = self.write_online(x, create_graph=True) if online else self.write(x, create_graph=True)
        query, known = corrupt(x)
        retrieved = self.read(query, theta, known, create_graph=True)
        return (x - retrieved).pow(2).sum(-1).mean()

    def _project(self, x: torch.Tensor, query: torch.Tensor, known: torch.Tensor | None) -> torch.Tensor:
        if self.bounds is not None:
            x = x.clamp(*self.bounds)
        return x if known is None else torch.where(known, query, x)

    def _check_patterns(self, x: torch.Tensor, name: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, actual type: {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"{name} must have shape [B, N, D={self.input_size}], actual shape: {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} holds NaN or inf values")
