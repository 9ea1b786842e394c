"""What every generative memory model shares: input checks, save and load.

A checkpoint is one safetensors file: the weights, plus a JSON document in the file's metadata
(``kind``, ``format_version`` and the constructor ``config``). It is written to a temporary file
and renamed, so an interrupted save never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from episodic_memory.kanerva.memory import KanervaMemory, MemoryState
from episodic_memory.models.likelihoods import BernoulliLikelihood, DiscretisedLogisticLikelihood, Likelihood
from episodic_memory.models.observations import ObservationEncoding, batch_of_one
from episodic_memory.models.preprocessing import InputSpec

__all__ = [
    "ContentAddressedMemory",
    "GenerativeMemory",
    "MemoryMachine",
    "load_machine",
    "read_checkpoint_header",
    "stop_at_convergence",
    "FORMAT_VERSION",
]

FORMAT_VERSION = 1
_METADATA_KEY = "episodic_memory"


class MemoryMachine(nn.Module):
    """Base class of the generative models (DKM, KM, VAE): an encoder, a decoder, a likelihood, one checkpoint file.

    The models with a :class:`KanervaMemory` are :class:`GenerativeMemory` (the VAE, the memory-less
    baseline, is not); :attr:`capabilities` says what each can be evaluated on.

    Subclasses build their networks from keyword arguments and record them in ``self.config``
    (JSON-serialisable), so that ``type(model)(**model.config)`` rebuilds the same architecture.
    Episodes are ``x [B, T, *input_shape]``; image frames of another height and width (same
    channels) are resized by the machine's own preprocessing (``config["resize"]``, see
    :mod:`episodic_memory.models.preprocessing`), and what the machine returns in frame space
    (reconstructions, attractor trajectories) is at its ``input_shape``.
    """

    kind: ClassVar[str]
    capabilities: ClassVar[frozenset[str]] = frozenset({"elbo"})
    """What the model can be evaluated on: ``elbo`` (:meth:`loss`, per frame; conditional on the episode's memory
    where the model has one), ``memory`` (``write``, reads, energies, capacity), ``attractor`` (attractor
    dynamics from noisy or partial frames), ``prior_samples`` (frames sampled from the prior a memory gives the
    codes, :meth:`GenerativeMemory.sample_codes`)."""
    input_spec: InputSpec
    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.kind = cls.__name__  # written into checkpoints; the registry maps kinds to classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.input_spec.shape

    @property
    def code_size(self) -> int:
        return self.config["code_size"]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training objective on episodes ``x [B, T, *input_shape]``: a dict with ``loss`` and its terms."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``model(x)`` is ``model.loss(x)``, so that DistributedDataParallel can wrap a model."""
        return self.loss(x)

    # ----------------------------------------------------------------------------------------
    # Episodes in and out
    # ----------------------------------------------------------------------------------------
    def _frames_in(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Check an episode ``x [B, T, *frame_shape]`` and return model frames ``[B*T, *model_shape]``.

        ``frame_shape`` is ``input_shape``, or for images another height and width that the
        machine's preprocessing resizes (:meth:`InputSpec.to_model`).
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        spec = self.input_spec
        problem = spec.mismatch(tuple(x.shape[2:]))
        if problem is not None and x.dim() >= 2 and spec.mismatch(tuple(x.shape[1:])) is None:
            problem = "the time axis T is missing (x[:, None] makes episodes of one frame)"
        if problem is not None:
            raise ValueError(f"{name} must have shape [B, T, {spec.accepted_shape}], got {tuple(x.shape)}: {problem}")
        if x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"{name} must hold at least one episode of one frame, got {tuple(x.shape)}")
        if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
            raise ValueError(f"{name} must be uint8 or floating point, got {x.dtype}")
        if x.dtype.is_floating_point and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} holds NaN or inf values")
        likelihood = getattr(self, "likelihood", None)
        if isinstance(likelihood, (BernoulliLikelihood, DiscretisedLogisticLikelihood)) and x.dtype.is_floating_point:
            low, high = float(x.min()), float(x.max())
            if low < 0.0 or high > 1.0:
                raise ValueError(
                    f"{name} must lie in [0, 1] for a {type(likelihood).__name__} (or be uint8), got [{low:g}, {high:g}]"
                )
        return self.input_spec.to_model(x.flatten(0, 1).to(self.device), self.dtype)

    def _frames_out(self, frames: torch.Tensor, B: int, T: int) -> torch.Tensor:
        """Model frames ``[B*T, *model_shape]`` -> ``[B, T, *input_shape]`` floats (at the machine's size)."""
        return self.input_spec.from_model(frames).reshape(B, T, *self.input_spec.shape)

    # ----------------------------------------------------------------------------------------
    # Save and load
    # ----------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write weights and config to the safetensors file ``path``; returns the path.

        The file is written next to ``path`` and renamed into place, so an existing checkpoint is
        replaced whole or not at all.
        """
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"save path {str(path)!r} is a directory; give a file name such as model.safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"kind": self.kind, "format_version": FORMAT_VERSION, "config": self.config}
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            save_file(tensors, str(tmp), metadata={_METADATA_KEY: json.dumps(header)})
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> MemoryMachine:
        """Rebuild a model saved with :meth:`save`.

        :raises FileNotFoundError: if ``path`` does not exist.
        :raises ValueError: if the file is not a checkpoint of this library, holds another kind of
            model than ``cls`` (call :func:`load_machine` to load any kind), or its tensors do not
            match the shapes its config implies.
        """
        header = read_checkpoint_header(path)
        kind = header["kind"]
        if cls is not MemoryMachine and kind != cls.kind:
            raise ValueError(
                f"checkpoint {str(path)!r} holds a {kind}, not a {cls.kind}; "
                f"load it with {kind}.load or episodic_memory.load_machine"
            )
        from episodic_memory.registry import MODELS  # the registry imports every model module, this one included

        classes = {model_cls.kind: model_cls for model_cls in MODELS.values()}
        if kind not in classes:
            raise ValueError(f"checkpoint {str(path)!r} holds an unknown model kind {kind!r}; known: {sorted(classes)}")
        try:
            model = classes[kind](**header["config"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"checkpoint {str(path)!r} has an invalid {kind} config: {error}") from error
        expected = model.state_dict()
        with safe_open(str(path), framework="pt", device="cpu") as f:
            names = set(f.keys())
            missing, unexpected = sorted(set(expected) - names), sorted(names - set(expected))
            if missing or unexpected:
                raise ValueError(
                    f"checkpoint {str(path)!r} does not match its {kind} config: "
                    f"missing tensors {missing}, unexpected tensors {unexpected}"
                )
            loaded = {}
            for name in sorted(names):
                tensor = f.get_tensor(name)
                if tensor.shape != expected[name].shape:
                    raise ValueError(
                        f"checkpoint {str(path)!r}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                        f"the {kind} config implies {tuple(expected[name].shape)}"
                    )
                loaded[name] = tensor
        model.load_state_dict(loaded)
        return model.to(map_location)


class GenerativeMemory(MemoryMachine):
    """A generative model around a :class:`KanervaMemory` (DKM, KM): reading and attractor dynamics.

    Subclasses provide :meth:`write` and :meth:`_energy_terms`, the likelihood parameters of the
    read-back frames and the energy of the queries; reading, energies and attractor iterations
    follow from them.
    """

    capabilities = MemoryMachine.capabilities | {"memory", "attractor"}
    state_type: ClassVar[type] = MemoryState
    """What :meth:`write` returns and the reads take (a :class:`MemoryState` for the Kanerva memories)."""
    memory: KanervaMemory
    likelihood: Likelihood
    observation_encoding: ObservationEncoding | None

    @property
    def num_slots(self) -> int:
        """K, the rows of the memory."""
        return self.memory.num_slots

    @classmethod
    def for_space(
        cls,
        space: gymnasium.Space,
        *,
        obs_key: str | Sequence[str] | None = None,
        code_size: int = 100,
        num_slots: int = 32,
        likelihood: str | None = None,
        max_side: int = 32,
        **options: Any,
    ) -> GenerativeMemory:
        """A fresh machine that reads observations of ``space`` as they are (the wrappers take it as it is).

        - **Inputs** (:mod:`episodic_memory.models.observations`): images as images, with convolutional coders
          (``hidden_channels=16`` unless given) at a reduced size: sides divided by the smallest integer
          that brings the longer one to at most ``max_side`` pixels (56 x 56 MiniGrid views -> 28 x 28,
          area-resized by the machine), which keeps the encoder cheap enough for every env step; everything
          else one-hot encoded and flattened into a vector, with MLP coders.
        - **Likelihood** (None picks one): ``"logistic"`` for uint8 images, ``"bernoulli"`` for vectors in
          ``[0, 1]`` (one-hot, binary, bounded integers), else ``"gaussian"``.
        - **Codes** are layer-normalised (``normalise_codes=True``): a random encoder's codes have norm
          about 0.5 against prior rows and a read noise σξ of order one, so writes hardly move the memory
          and every observation looks equally novel; codes of norm √C are written and recognised.

        A fresh machine is untrained: its encoder is a random projection (images: a random CNN), so its
        read-outs tell observations apart and recognise repeats, but similar observations get similar codes
        only as far as a random projection keeps them. Pretrain one (``episodic-memory collect`` and
        ``pretrain``) for codes that generalise.

        :param space: the environment's observation space.
        :param obs_key: for Dict spaces, the key (or keys) to read; None reads every non-Text key.
        :param options: further constructor options (``hidden_size``, ``obs_noise_std``, ...).
        :raises ValueError: a space or key the memory cannot read, or a ``likelihood`` that cannot model
            its values (e.g. ``"bernoulli"`` for values outside [0, 1]); the message names the space.
        """
        encoding = ObservationEncoding.for_space(space, obs_key)
        low, high = encoding.value_range
        if likelihood is None:
            if encoding.image:
                likelihood = "logistic" if encoding.read_space.dtype == np.uint8 else "gaussian"
            else:
                likelihood = "bernoulli" if 0.0 <= low and high <= 1.0 else "gaussian"
        if not isinstance(max_side, int) or max_side < 1:
            raise ValueError(f"max_side must be a positive int, got {max_side!r}")
        input_shape, channel_order = encoding.frame_shape, "auto"
        if encoding.image:
            spec = InputSpec.from_shape(encoding.frame_shape)
            C, H, W = spec.model_shape
            factor = math.ceil(max(H, W) / max_side)
            size = (max(H // factor, 1), max(W // factor, 1))
            input_shape, channel_order = ((*size, C), "hwc") if spec.channels_last else ((C, *size), "chw")
            options.setdefault("hidden_channels", 16)
        options.setdefault("normalise_codes", True)
        machine = cls(
            input_shape,
            code_size,
            num_slots,
            likelihood,
            channel_order=channel_order,
            observation_encoding=encoding.to_config(),
            **options,
        )
        problem = machine.cannot_read(encoding)
        if problem is not None:
            raise ValueError(f"{cls.__name__}.for_space({space}): {problem}")
        return machine

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor | Sequence[Any]) -> None:
        """Centre a fresh machine's codes on real observations (a data-dependent initialisation; our choice, not the papers').

        A random encoder maps every observation of an environment to nearly the same direction
        (ReLU features are positive; their mean dominates each code: cosines of 0.94-0.99 between the
        codes of different MiniGrid, CartPole and POPGym observations), so the memory can hardly tell
        them apart. For each network on the path to the codes, in the order they run, this subtracts
        its mean output over ``x`` from the bias of its last linear layer, so that the outputs are
        centred over these observations (``benchmarks/fresh_memory.py`` measures what it changes).
        The layers are :meth:`_calibration_layers`; a KM also rescales its keys (see there).

        :param x: frames ``[N, *input_shape]`` of the environment (e.g. a random walk's), or N of its
            observations as it returns them (a list), encoded by the machine's ``observation_encoding``; N >= 2.
        """
        if not isinstance(x, torch.Tensor):
            if self.observation_encoding is None:
                raise ValueError("this machine has no observation encoding: pass calibrate() frames [N, *input_shape]")
            x = torch.as_tensor(np.stack([self.observation_encoding.encode(batch_of_one(obs), 1)[0] for obs in x]))
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 2:
            raise ValueError(f"calibrate needs a batch of at least 2 frames [N, *input_shape], got {getattr(x, 'shape', x)!r}")
        episodes = x[:, None]  # [N, 1, ...]: one frame per episode
        for layer, width in self._calibration_layers():
            outputs: list[torch.Tensor] = []
            handle = layer.register_forward_hook(lambda _module, _input, output: outputs.append(output))  # noqa: B023
            try:
                self.encode_and_address(episodes, "calibration frames")
            finally:
                handle.remove()
            layer.bias[:width] -= outputs[0].reshape(-1, layer.out_features)[:, :width].mean(0)
        self._after_calibration(episodes)

    def _calibration_layers(self) -> list[tuple[nn.Linear, int]]:
        """The last linear layers on the path to the codes, in the order they run, with how many of their
        leading outputs :meth:`calibrate` centres."""
        raise NotImplementedError

    def _after_calibration(self, episodes: torch.Tensor) -> None:
        """What a model adjusts once its outputs are centred (nothing by default)."""

    def cannot_read(self, encoding: ObservationEncoding) -> str | None:
        """Why this machine cannot read observations encoded by ``encoding`` (None when it can).

        The frames must fit the machine's input (:meth:`InputSpec.mismatch`), a machine built for
        a space must be given that space's observations, and a Bernoulli or discretised logistic
        likelihood needs values in [0, 1] (uint8 images are scaled to it).
        """
        if self.observation_encoding is not None and not self.observation_encoding.same_observations(encoding):
            return (
                f"the machine was built for observations {self.observation_encoding.description} "
                f"(keys {self.observation_encoding.keys}), the environment gives {encoding.description} (keys {encoding.keys})"
            )
        problem = self.input_spec.mismatch(encoding.frame_shape)
        if problem is not None:
            return problem
        low, high = encoding.value_range
        if isinstance(self.likelihood, (BernoulliLikelihood, DiscretisedLogisticLikelihood)) and (low < 0.0 or high > 1.0):
            name = self.config.get("likelihood", type(self.likelihood).__name__)
            return (
                f"its {name!r} likelihood models values in [0, 1], the observations range over [{low:g}, {high:g}]; "
                f"build the machine with {type(self).__name__}.for_space(env.observation_space) or likelihood='gaussian'"
            )
        return None

    def _set_observation_encoding(self, config: dict[str, Any] | None) -> None:
        self.observation_encoding = None if config is None else ObservationEncoding.from_config(config)

    def _normalised(self, z: torch.Tensor) -> torch.Tensor:
        """Codes ``[..., C]``, layer-normalised when the machine's ``normalise_codes`` is on."""
        return F.layer_norm(z, z.shape[-1:]) if self.config.get("normalise_codes") else z

    def write(self, x: torch.Tensor) -> MemoryState:
        """Write episodes ``x [B, T, *input_shape]`` into fresh memories; returns their posterior."""
        raise NotImplementedError

    def _energy_terms(self, state: MemoryState, frames: torch.Tensor, B: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Likelihood parameters ``[B*T, *model_shape]`` of the frames read back for model frames
        ``[B*T, *model_shape]``, and the energy of those frames ``[B, T]``."""
        raise NotImplementedError

    def sample_codes(self, state: Any, num_samples: int) -> torch.Tensor:
        """Codes ``[B, S, C]`` drawn from the prior the memories give them (models with ``prior_samples``)."""
        raise NotImplementedError(f"{type(self).__name__} has no prior samples")

    def encode_and_address(self, x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, torch.Tensor | None]:
        """Codes ``[B, T, C]`` of episodes ``x [B, T, *input_shape]``, and their addressing weights ``[B, T, K]``
        where they do not depend on the memory (the KM's learned addresses); None where they are
        solved against the memory (the DKM's dynamic addressing, eq. 6). ``name`` names ``x`` in errors."""
        raise NotImplementedError

    def reconstruct(self, state: MemoryState, x: torch.Tensor) -> torch.Tensor:
        """Mean of the predictive distribution ``p(x̂ | x, M)`` (DKM eq. 13): ``[B, T, *input_shape]`` floats."""
        self._check_batch(state, x)
        B, T = x.shape[:2]
        params, _ = self._energy_terms(state, self._frames_in(x), B, T)
        return self._frames_out(self.likelihood.mean(params), B, T)

    def energy(self, state: MemoryState, x: torch.Tensor) -> torch.Tensor:
        """The energy of queries ``x [B, T, *input_shape]`` under the memories, ``[B, T]``."""
        self._check_batch(state, x)
        B, T = x.shape[:2]
        return self._energy_terms(state, self._frames_in(x), B, T)[1]

    def attractor(
        self, state: MemoryState, x: torch.Tensor, steps: int, rtol: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attractor dynamics ``x_{n+1} = mode p(x | x_n, M)`` (DKM §3.5, KM App. G) from ``x_0 = x``.

        Each iteration is a coordinate-descent step on the energy ``E(x, w)`` (DKM eq. 14).

        :param x: queries ``[B, T, *input_shape]`` (e.g. noisy frames or prior samples).
        :param steps: iterations N.
        :param rtol: ``None`` takes all N iterations (the paper's protocol, DKM §4). A number stops each
            trajectory once it has converged in energy: at the first iteration that lowers its energy by
            less than ``rtol |E(x_n)|`` the trajectory stays at ``x_n`` from then on, so its energy never
            rises. With real-valued frames the energy landscape has flat valleys (the read is linear in the
            code, so any mix of stored codes reads back unchanged) along which iterates drift once the
            corruption is gone; stopping there keeps the cleaned frame.
        :return: ``trajectory [N+1, B, T, *input_shape]`` (floats, ``x_0`` first) and
            ``energies [N+1, B, T]`` (:meth:`energy` at each ``x_n``).
        """
        self._check_batch(state, x)
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        if rtol is not None and not (isinstance(rtol, (int, float)) and math.isfinite(rtol) and rtol >= 0):
            raise ValueError(f"rtol must be None or a finite number >= 0, got {rtol!r}")
        B, T = x.shape[:2]
        trajectory, energies = [self._frames_in(x)], []
        for _ in range(steps):
            params, energy = self._energy_terms(state, trajectory[-1], B, T)
            energies.append(energy)
            trajectory.append(self.likelihood.mode(params))
        energies.append(self._energy_terms(state, trajectory[-1], B, T)[1])
        frames, energy = torch.stack([self._frames_out(f, B, T) for f in trajectory]), torch.stack(energies)
        return (frames, energy) if rtol is None else stop_at_convergence(frames, energy, rtol)

    def retrieve(self, state: MemoryState, z: torch.Tensor, steps: int) -> torch.Tensor:
        """Code-space attractor, the cheap variant used by the RL wrapper: ``z [B, T, C] -> [B, T, C]``.

        Iterates ``z <- read(address(z))`` with the memory's ridge addressing (DKM eq. 6): the MAP
        weights of a code under the linear Gaussian memory. For the KM this is not its learned
        addressing ``w = A f(y)``, which needs a frame rather than a code.
        """
        return self.memory.retrieve(state, z, steps)

    def episodes_in(self, state: MemoryState) -> int:
        """How many episodes' memories ``state`` holds (one memory each; a product memory has several)."""
        return state.batch_size

    def _check_batch(self, state: MemoryState, x: torch.Tensor) -> None:
        if not isinstance(state, self.state_type):
            raise TypeError(f"state must be a {self.state_type.__name__}, got {type(state).__name__}")
        if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[0] != self.episodes_in(state):
            raise ValueError(f"x holds {x.shape[0]} episodes but state holds the memories of {self.episodes_in(state)} episodes")


class ContentAddressedMemory(GenerativeMemory):
    """A generative memory whose codes are a deterministic encoder's, ``z = e(x)``, and whose addressing weights are
    solved against the memory from the code (DKM eq. 6), not read from the frame: the DKM and the PKM.

    Subclasses set ``encoder`` (frames -> ``[B*T, C]``) and ``decoder`` (codes -> likelihood parameters).
    """

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``e(x)``: episodes ``[B, T, *input_shape]`` -> codes ``[B, T, C]``."""
        return self.encode_and_address(x)[0]

    def encode_and_address(self, x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, None]:
        """:meth:`encode`, and None: the weights are solved against the memory (DKM eq. 6), not read from the frame."""
        return self._encode_frames(self._frames_in(x, name), *x.shape[:2]), None

    def _calibration_layers(self) -> list[tuple[nn.Linear, int]]:
        return [(last_linear(self.encoder), self.code_size)]  # e(x): the codes

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, T, C]`` -> likelihood parameters ``[B*T, *model_shape]``."""
        return self.decoder(z.flatten(0, 1))

    def _encode_frames(self, frames: torch.Tensor, B: int, T: int) -> torch.Tensor:
        """Model frames ``[B*T, *model_shape]`` -> codes ``[B, T, C]`` (normalised with ``normalise_codes``)."""
        return self._normalised(self.encoder(frames).view(B, T, self.code_size))


def last_linear(module: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of ``module`` (its output layer for the coders and MLPs of this package)."""
    return [m for m in module.modules() if isinstance(m, nn.Linear)][-1]


def stop_at_convergence(trajectory: torch.Tensor, energies: torch.Tensor, rtol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Hold each trajectory of an attractor run at its first iterate whose next step lowers the energy by
    less than ``rtol |E|`` (see :meth:`GenerativeMemory.attractor`).

    :param trajectory: ``[N+1, B, T, *input_shape]``, as :meth:`GenerativeMemory.attractor` returns it.
    :param energies: ``[N+1, B, T]``.
    :return: the stopped ``trajectory`` and ``energies``, same shapes; the energies never rise.
    """
    falls = energies[1:] < energies[:-1] - rtol * energies[:-1].abs()  # [N, B, T]
    taken = falls.long().cumprod(0).sum(0)  # [B, T]: iterations before the first that does not fall enough
    iteration = torch.arange(len(energies), device=energies.device).view(-1, 1, 1)  # [N+1, 1, 1]
    kept = torch.minimum(iteration, taken)  # [N+1, B, T]: the iterate each trajectory holds at each iteration
    index = kept.view(*kept.shape, *[1] * (trajectory.dim() - 3)).expand_as(trajectory)
    return trajectory.gather(0, index), energies.gather(0, kept)


def read_checkpoint_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header (``kind``, ``format_version``, ``config``) of a checkpoint written by :meth:`MemoryMachine.save`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{str(path)!r} is not a readable safetensors checkpoint ({error})") from error
    if _METADATA_KEY not in metadata:
        raise ValueError(
            f"{str(path)!r} is a safetensors file but not an episodic-memory checkpoint (no {_METADATA_KEY!r} metadata)"
        )
    try:
        header = json.loads(metadata[_METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} has a corrupted checkpoint header: {error}") from error
    if not isinstance(header, dict) or not {"kind", "format_version", "config"} <= set(header):
        raise ValueError(f"{str(path)!r} has an incomplete checkpoint header: {header!r}")
    if header["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has checkpoint format version {header['format_version']}, this library reads version {FORMAT_VERSION}"
        )
    return header


def load_machine(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> MemoryMachine:
    """Load a checkpoint of any model kind (DKM, KM), whichever the file holds."""
    return MemoryMachine.load(path, map_location)
