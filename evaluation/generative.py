"""Evaluation of trained generative memories on held-out episodes: likelihood, capacity, attractor dynamics.

Shapes: episodes ``x [B, T, *frame_shape]`` as the sampler returns them (uint8; the frame dataset
gives ``[B, T, H, W, 3]``), where ``frame_shape`` must be the model's ``input_shape``; attractor
trajectories ``[N+1, B, T, *frame_shape]`` (floats in ``[0, 1]``) and energies ``[N+1, B, T]`` for
N iterations. Likelihoods and energies are in nats per frame unless a name says otherwise.

- :func:`conditional_nll`: the negative conditional ELBO ``−ln p(x_t | M)`` bound per frame (KM
  §4.1, DKM §4); for the VAE it is the negative plain ELBO.
- :func:`capacity_curve`: that retrieval error against episode length, per sampler mode (DKM §4
  "Capacity", Fig. 2 right).
- :func:`denoising`: attractor dynamics from corrupted frames (DKM §4, Fig. 3a/c and 4a/c).
- :func:`sample_and_refine`: prior samples improved by attractor iterations (DKM Fig. 3b/d).
- :func:`evaluate_models`: all of these for a dict of models, with ``report.json`` and figures.

Every evaluation runs the model in eval mode without autograd, draws episodes and noise from a
numpy ``Generator`` and seeds torch's generator from it (torch's state is restored afterwards): one
seed gives the same numbers, and models evaluated with the same seed see the same episodes.
"""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from episodic_memory.envs.dataset import parse_mode
from episodic_memory.evaluation.figures import image_grid
from episodic_memory.models.machine import GenerativeMemory, MemoryMachine, stop_at_convergence
from episodic_memory.models.preprocessing import InputSpec

__all__ = [
    "EpisodeSampler",
    "EvaluationConfig",
    "NOISES",
    "capacity_curve",
    "check_enough_layouts",
    "conditional_nll",
    "corrupt",
    "denoising",
    "evaluate_models",
    "sample_and_refine",
]

NOISES = ("gaussian", "occlusion")
ENERGY_RISE_RTOL = 1e-4  # an energy step counts as a rise when E_{n+1} > E_n + rtol |E_n|
ENERGY_TRACES = 20  # energy trajectories kept for plotting, as in DKM Fig. 3c

SeedLike = int | np.random.Generator


class EpisodeSampler(Protocol):
    """Draws held-out episodes, e.g. ``episodic_memory.envs.dataset.FrameDataset(root, split="test").sample``."""

    def __call__(self, batch_size: int, episode_length: int, mode: str, rng: np.random.Generator) -> torch.Tensor:
        """``batch_size`` episodes of ``episode_length`` frames in ``mode`` (``"mixed"`` or ``"layouts=n"``).

        :return: uint8 episodes ``[B, T, *frame_shape]``.
        """
        ...


@dataclass
class EvaluationConfig:
    """Numbers of :func:`evaluate_models` (defaults follow the DKM paper's protocol where it gives one)."""

    seed: int = field(
        default=0, metadata={"help": "seed of episodes, noise and torch's sampling; all models see the same episodes"}
    )
    episode_length: int = field(default=32, metadata={"help": "T of the episodes of the conditional NLL, denoising and samples"})
    mode: str = field(default="mixed", metadata={"help": "sampler mode of those episodes: 'mixed' or 'layouts=n'"})
    num_episodes: int = field(default=64, metadata={"help": "episodes for the conditional NLL"})
    batch_size: int = field(default=16, metadata={"help": "most episodes per batch (fewer when max_frames_per_batch says so)"})
    max_frames_per_batch: int = field(
        default=1024, metadata={"help": "frames per batch (episodes x T, x (steps + 1) for denoising): bounds memory for long T"}
    )
    capacity_lengths: tuple[int, ...] = field(
        default=(10, 20, 32, 50, 100, 200), metadata={"help": "episode lengths T of the capacity curve (DKM Fig. 2 right)"}
    )
    capacity_modes: tuple[str, ...] = field(
        default=("mixed", "layouts=2", "layouts=4", "layouts=8"),
        metadata={"help": "sampler modes of the capacity curve, one line each (fewer layouts: more redundant episodes)"},
    )
    capacity_episodes: int = field(default=32, metadata={"help": "episodes per point of the capacity curve"})
    noises: tuple[str, ...] = field(
        default=NOISES, metadata={"help": "corruptions for denoising: 'gaussian' and/or 'occlusion' (image models only)"}
    )
    steps: int = field(default=15, metadata={"help": "attractor iterations N for denoising and prior samples (DKM §4: 15)"})
    attractor_rtol: float = field(
        default=1e-3,
        metadata={
            "help": "energy tolerance of the converged denoising curve: a trajectory stops at its first iteration "
            "that lowers its energy by less than rtol |E| (the paper's curve takes all N iterations)"
        },
    )
    denoising_episodes: int = field(default=16, metadata={"help": "episodes written and corrupted per noise"})
    noise_std: float = field(default=0.15, metadata={"help": "std of the Gaussian noise added to [0, 1] frames (DKM §4: 0.15)"})
    block: int = field(default=8, metadata={"help": "side of the square occluding block, one per frame, set to 0"})
    num_examples: int = field(default=4, metadata={"help": "rows of attractor.png per model and noise"})
    num_samples: int = field(default=8, metadata={"help": "prior samples refined by the attractor per DKM (samples.png)"})

    def __post_init__(self) -> None:
        for name in (
            "episode_length",
            "num_episodes",
            "batch_size",
            "max_frames_per_batch",
            "capacity_episodes",
            "denoising_episodes",
            "block",
            "num_examples",
            "num_samples",
        ):
            _check_positive_int(name, getattr(self, name))
        _check_int("seed", self.seed, minimum=0)
        _check_int("steps", self.steps, minimum=0)
        if not self.capacity_lengths:
            raise ValueError("capacity_lengths must hold at least one episode length, got ()")
        for length in self.capacity_lengths:
            _check_positive_int("capacity_lengths", length)
        for name, modes in (("mode", (self.mode,)), ("capacity_modes", self.capacity_modes)):
            if not modes or not all(isinstance(m, str) and m for m in modes):
                raise ValueError(f"{name} must be non-empty strings such as 'mixed' or 'layouts=4', got {getattr(self, name)!r}")
        for noise in self.noises:
            _check_noise(noise)
        _check_noise_std(self.noise_std)
        _check_rtol(self.attractor_rtol)


# --------------------------------------------------------------------------------------------
# Evaluations
# --------------------------------------------------------------------------------------------
def conditional_nll(
    model: MemoryMachine,
    sample: EpisodeSampler,
    episode_length: int = 32,
    mode: str = "mixed",
    num_episodes: int = 64,
    batch_size: int = 16,
    rng: SeedLike = 0,
) -> dict[str, float]:
    """Mean negative conditional ELBO per frame on ``num_episodes`` fresh episodes ``[B, T, *input_shape]``.

    ``−model.loss(x)["cond_elbo"]`` averaged over batches of at most ``batch_size`` episodes, each
    weighted by its number of episodes (memory models write each episode, then read it back, KM §4.1).

    :return: ``nats`` (per frame), ``bits_per_dim`` (``nats / (ln 2 · D)`` with D the elements of one
        frame; for continuous likelihoods this is the density of frames scaled to ``[0, 1]``) and their
        standard errors ``nats_stderr``, ``bits_per_dim_stderr``. ``loss`` returns batch means only, so the
        standard error over episodes is estimated from the spread of the batch means (exact for batches
        of equal size); it is NaN with a single batch.
    """
    _check_positive_int("episode_length", episode_length)
    _check_positive_int("num_episodes", num_episodes)
    _check_positive_int("batch_size", batch_size)
    rng = np.random.default_rng(rng)
    values, sizes = [], []
    with _evaluation(model, rng):
        for size in _batch_sizes(num_episodes, batch_size):
            x = _draw(sample, model, size, episode_length, mode, rng)  # [b, T, *input_shape]
            values.append(-float(model.loss(x)["cond_elbo"]))
            sizes.append(size)
    nats, stderr = _weighted_mean_and_stderr(values, sizes)
    nats_per_bit_dim = math.log(2) * math.prod(model.input_shape)
    return {
        "nats": nats,
        "nats_stderr": stderr,
        "bits_per_dim": nats / nats_per_bit_dim,
        "bits_per_dim_stderr": stderr / nats_per_bit_dim,
    }


def capacity_curve(
    model: MemoryMachine,
    sample: EpisodeSampler,
    lengths: Sequence[int] = (10, 20, 32, 50, 100, 200),
    modes: Sequence[str] = ("mixed", "layouts=2", "layouts=4", "layouts=8"),
    num_episodes: int = 32,
    max_frames_per_batch: int = 1024,
    rng: SeedLike = 0,
) -> dict[str, Any]:
    """Retrieval error (negative conditional ELBO per frame) against episode length, per mode (DKM Fig. 2 right).

    Each point is :func:`conditional_nll` on ``num_episodes`` episodes of length T, in batches of at most
    ``max(1, max_frames_per_batch // T)`` episodes, so that T = 200 fits in memory.

    :return: ``lengths`` [L], ``modes`` [M], ``error`` and ``stderr``: ``{mode: [L] floats}`` in nats per frame.
    :raises TypeError: for a model without a memory (the VAE).
    """
    _require_memory(model, "capacity_curve")
    if not lengths or not modes:
        raise ValueError(f"capacity_curve needs at least one length and one mode, got lengths={lengths!r}, modes={modes!r}")
    for length in lengths:
        _check_positive_int("lengths", length)
    _check_positive_int("max_frames_per_batch", max_frames_per_batch)
    rng = np.random.default_rng(rng)
    error: dict[str, list[float]] = {mode: [] for mode in modes}
    stderr: dict[str, list[float]] = {mode: [] for mode in modes}
    for mode in modes:
        for length in lengths:
            batch_size = _episodes_per_batch(num_episodes, max_frames_per_batch, length)
            point = conditional_nll(model, sample, length, mode, num_episodes, batch_size, rng)
            error[mode].append(point["nats"])
            stderr[mode].append(point["nats_stderr"])
    return {"lengths": list(lengths), "modes": list(modes), "error": error, "stderr": stderr}


def denoising(
    model: MemoryMachine,
    sample: EpisodeSampler,
    noise: str = "gaussian",
    steps: int = 15,
    episode_length: int = 32,
    mode: str = "mixed",
    num_episodes: int = 16,
    batch_size: int = 4,
    noise_std: float = 0.15,
    block: int = 8,
    num_examples: int = 4,
    rng: SeedLike = 0,
    rtol: float = 1e-3,
) -> dict[str, Any]:
    """Attractor dynamics from corrupted frames (DKM §3.5 and §4, Fig. 3a/c, 4a/c).

    For each batch: write the clean episodes ``x [b, T, *input_shape]`` (scaled to ``[0, 1]``), corrupt
    every frame, run ``model.attractor(state, noisy, steps)`` and compare each iterate with its clean frame;
    the same run, each trajectory stopped once it has converged in energy (``rtol``, see
    :func:`~episodic_memory.models.machine.stop_at_convergence`), gives the ``converged`` curve.

    :param noise: ``"gaussian"``: add ``N(0, noise_std²)`` to every element, then clip to ``[0, 1]``;
        ``"occlusion"``: set one random ``block x block`` square of every frame to 0 (image models only).
    :param steps: attractor iterations N.
    :param num_examples: frames whose images are returned under ``examples``.
    :return: ``mse`` [N+1] (mean squared error to the clean frames of ``x_n``, ``x_0`` the noisy frames),
        ``energy`` [N+1] (mean energy), ``rising_fraction`` [N] (fraction of trajectories whose energy rises at
        step n -> n+1), ``never_rises`` (fraction of trajectories whose energy never rises), all relative to a
        tolerance of :data:`ENERGY_RISE_RTOL`; ``energy_traces`` (the energies of the first
        :data:`ENERGY_TRACES` trajectories, each [N+1]); ``examples``, a CPU tensor
        ``[num_examples, N+2, *input_shape]`` (clean, noisy, iterations 1..N), not plain data;
        ``converged``: the run with ``rtol``: ``rtol``, ``mse`` [N+1], ``energy`` [N+1] and ``iterations``
        (the mean number of iterations a trajectory takes before it stops).
    :raises TypeError: for a model without a memory (the VAE).
    """
    memory_model = _require_memory(model, "denoising")
    _check_noise(noise)
    _check_int("steps", steps, minimum=0)
    for name, value in (
        ("episode_length", episode_length),
        ("num_episodes", num_episodes),
        ("batch_size", batch_size),
        ("block", block),
        ("num_examples", num_examples),
    ):
        _check_positive_int(name, value)
    _check_noise_std(noise_std)
    _check_rtol(rtol)
    spec = model.input_spec
    if noise == "occlusion":
        _check_occlusion(spec, block)
    rng = np.random.default_rng(rng)
    squared_error = torch.zeros(steps + 1, dtype=torch.float64)
    energy_sum = torch.zeros(steps + 1, dtype=torch.float64)
    rises = torch.zeros(steps, dtype=torch.float64)
    converged_error = torch.zeros(steps + 1, dtype=torch.float64)
    converged_energy = torch.zeros(steps + 1, dtype=torch.float64)
    never_rises, num_frames, num_elements, iterations = 0, 0, 0, 0
    traces: list[list[float]] = []
    examples = torch.empty(0)
    with _evaluation(model, rng):
        for i, size in enumerate(_batch_sizes(num_episodes, batch_size)):
            clean = _unit_frames(_draw(sample, model, size, episode_length, mode, rng), model)  # [b, T, *input_shape]
            noisy = corrupt(clean, noise, noise_std, block, spec, rng)
            state = memory_model.write(clean)
            trajectory, energies = memory_model.attractor(state, noisy, steps)  # [N+1, b, T, ...], [N+1, b, T]
            squared_error += ((trajectory - clean) ** 2).flatten(1).sum(1).double().cpu()
            energy_sum += energies.flatten(1).sum(1).double().cpu()
            rising = energies[1:] > energies[:-1] + ENERGY_RISE_RTOL * energies[:-1].abs()  # [N, b, T]
            rises += rising.flatten(1).sum(1).double().cpu()
            never_rises += int((~rising.any(0)).sum())
            stopped, stopped_energies = stop_at_convergence(trajectory, energies, rtol)
            converged_error += ((stopped - clean) ** 2).flatten(1).sum(1).double().cpu()
            converged_energy += stopped_energies.flatten(1).sum(1).double().cpu()
            iterations += int((stopped_energies[1:] < stopped_energies[:-1]).sum())  # a stopped trajectory's energy stays put
            num_frames += clean.shape[0] * clean.shape[1]
            num_elements += clean.numel()
            if i == 0:  # the first batch supplies the energy traces and the example images
                traces = energies.flatten(1)[:, :ENERGY_TRACES].T.double().cpu().tolist()  # [N+1, bT] -> [traces, N+1]
                first = torch.cat([clean.flatten(0, 1)[None], trajectory.flatten(1, 2)])  # [N+2, bT, *input_shape]
                examples = first[:, :num_examples].transpose(0, 1).cpu()  # [examples, N+2, *input_shape]
    return {
        "mse": (squared_error / num_elements).tolist(),
        "energy": (energy_sum / num_frames).tolist(),
        "rising_fraction": (rises / num_frames).tolist(),
        "never_rises": never_rises / num_frames,
        "energy_traces": traces,
        "examples": examples,
        "converged": {
            "rtol": rtol,
            "mse": (converged_error / num_elements).tolist(),
            "energy": (converged_energy / num_frames).tolist(),
            "iterations": iterations / num_frames,
        },
    }


def sample_and_refine(
    model: MemoryMachine, state: Any, num_samples: int, steps: int, rng: SeedLike = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples from the prior improved by attractor iterations (DKM §4, Fig. 3b/d).

    Draws codes ``[B, S, C]`` from the prior the memories give them (``model.sample_codes``: the DKM's
    ``z = wᵀR`` with ``w ~ p(w)``; Kanerva++'s ``z ~ p(Z | M, Y)`` with ``Y ~ p(Y)``), decodes the mode of
    ``p(x | z)`` as the starting frames, then runs ``model.attractor(state, frames, steps)``.

    :param state: the memories to sample from, e.g. ``model.write(episodes)``.
    :param num_samples: S, samples per memory.
    :param steps: attractor iterations N.
    :return: ``trajectory [N+1, B, S, *input_shape]`` (the prior samples first) and ``energies [N+1, B, S]``.
    :raises TypeError: for models without ``prior_samples``: the KM's prior goes through ``y ~ p(y)`` and its
        learned addressing, the PKM's selection is a function of the code it selects for, the VAE has no memory.
    """
    if "prior_samples" not in model.capabilities:
        raise TypeError(f"sample_and_refine needs a model with prior samples (a DKM or Kanerva++), got a {model.kind}")
    if not isinstance(state, model.state_type):
        raise TypeError(f"state must be a {model.state_type.__name__}, got {type(state).__name__}")
    _check_positive_int("num_samples", num_samples)
    _check_int("steps", steps, minimum=0)
    rng = np.random.default_rng(rng)
    B = model.episodes_in(state)
    with _evaluation(model, rng):
        z = model.sample_codes(state, num_samples)  # [B, S, C]
        params = model.decoder(z.flatten(0, 1))  # [B*S, *model_shape]
        frames = model.input_spec.from_model(model.likelihood.mode(params))  # [B*S, *input_shape]
        return model.attractor(state, frames.reshape(B, num_samples, *model.input_shape), steps)


def check_enough_layouts(config: EvaluationConfig, model: MemoryMachine, num_layouts: int, where: str, fix: str) -> None:
    """Raise ``ValueError`` before any work when a sampler mode of the evaluation needs more layouts than ``where`` has.

    The evaluation draws episodes in ``config.mode`` and, for models with a memory, in each of
    ``config.capacity_modes``; ``"layouts=n"`` needs n layouts.

    :param num_layouts: layouts of the held-out split.
    :param where: names the split in the message, e.g. ``"the test split of 'data/mazes'"``.
    :param fix: what to do about it, appended to the message.
    """
    modes = [config.mode, *(config.capacity_modes if "memory" in model.capabilities else ())]
    needed = {mode: parse_mode(mode) or 1 for mode in modes}
    too_many = [mode for mode, n in needed.items() if n > num_layouts]
    if too_many:
        raise ValueError(
            f"the evaluation samples episodes in modes {too_many}, but {where} has only {num_layouts} layouts "
            f"(it needs {max(needed.values())}); {fix}"
        )


def evaluate_models(
    models: Mapping[str, MemoryMachine], sample: EpisodeSampler, out_dir: str | Path, config: EvaluationConfig
) -> dict[str, Any]:
    """Evaluate every model on the same held-out episodes; write ``report.json`` and figures into ``out_dir``.

    Every model with an ELBO gets :func:`conditional_nll`, and with a memory too :func:`capacity_curve`;
    models with attractor dynamics get :func:`denoising` for each of ``config.noises`` (occlusion for image
    models only) (the EBMM, which has no ELBO, gets only these); models with prior samples also get
    :func:`sample_and_refine` from a memory holding one episode.

    Figures (PNG), each written when some model has the data: ``nll.png`` (conditional NLL per model),
    ``capacity.png`` (retrieval error against T, one line per model and mode), ``denoising.png`` (MSE and
    mean energy per iteration), ``attractor.png`` (rows: examples; columns: clean, noisy, iterations 1..N),
    ``samples.png`` (rows: prior samples; columns: iterations 0..N).

    :return: the report, plain JSON data: ``config``, ``models`` (per name: ``kind``, ``conditional_nll``
        and, where they apply, ``capacity``, ``denoising`` per noise, ``sampling``) and ``figures``.
    """
    if not models:
        raise ValueError("evaluate_models needs at least one model, got an empty mapping")
    if "occlusion" in config.noises:
        for model in models.values():
            if "attractor" in model.capabilities and model.input_spec.is_image:
                _check_occlusion(model.input_spec, config.block)  # fail before any work
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, Any]] = {}
    attractor_examples: dict[str, tuple[torch.Tensor, InputSpec]] = {}  # "model: noise" -> ([E, N+2, *input_shape], spec)
    sample_trajectories: dict[str, tuple[torch.Tensor, InputSpec]] = {}  # model -> ([S, N+1, *input_shape], spec)
    for name, model in models.items():
        T = config.episode_length
        entry: dict[str, Any] = {"kind": model.kind}
        if "elbo" in model.capabilities:
            entry["conditional_nll"] = conditional_nll(
                model,
                sample,
                T,
                config.mode,
                config.num_episodes,
                _episodes_per_batch(config.batch_size, config.max_frames_per_batch, T),
                config.seed,
            )
        if {"memory", "elbo"} <= model.capabilities:
            entry["capacity"] = capacity_curve(
                model,
                sample,
                config.capacity_lengths,
                config.capacity_modes,
                config.capacity_episodes,
                config.max_frames_per_batch,
                config.seed,
            )
        if "attractor" in model.capabilities:
            entry["denoising"] = {}
            for noise in config.noises:
                if noise == "occlusion" and not model.input_spec.is_image:
                    continue
                result = denoising(
                    model,
                    sample,
                    noise,
                    config.steps,
                    T,
                    config.mode,
                    config.denoising_episodes,
                    _episodes_per_batch(config.batch_size, config.max_frames_per_batch, T * (config.steps + 1)),
                    config.noise_std,
                    config.block,
                    config.num_examples,
                    config.seed,
                    config.attractor_rtol,
                )
                attractor_examples[f"{name}: {noise}"] = (result.pop("examples"), model.input_spec)
                entry["denoising"][noise] = result
        if "prior_samples" in model.capabilities:
            rng = np.random.default_rng(config.seed)
            with _evaluation(model, rng):
                state = model.write(_draw(sample, model, 1, T, config.mode, rng))
            trajectory, energies = sample_and_refine(model, state, config.num_samples, config.steps, rng)
            samples = trajectory[:, 0].transpose(0, 1).cpu()  # first memory: [N+1, S, ...] -> [S, N+1, ...]
            sample_trajectories[name] = (samples, model.input_spec)
            entry["sampling"] = {"energy": energies.mean((1, 2)).double().cpu().tolist()}
        entries[name] = entry

    figures = []
    if any("conditional_nll" in entry for entry in entries.values()):
        figures.append(_plot_nll(out_dir / "nll.png", entries))
    if any("capacity" in entry for entry in entries.values()):
        figures.append(_plot_capacity(out_dir / "capacity.png", entries))
    if attractor_examples:
        figures.append(_plot_denoising(out_dir / "denoising.png", entries))
        figures.append(_plot_image_groups(out_dir / "attractor.png", attractor_examples, ["clean", "noisy"], first_iteration=1))
    if sample_trajectories:
        figures.append(_plot_image_groups(out_dir / "samples.png", sample_trajectories, [], first_iteration=0))
    report = _plain({"config": asdict(config), "models": entries, "figures": [path.name for path in figures]})
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


# --------------------------------------------------------------------------------------------
# Episodes, noise, statistics
# --------------------------------------------------------------------------------------------
@contextmanager
def _evaluation(model: MemoryMachine, rng: np.random.Generator) -> Iterator[None]:
    """Eval mode and no autograd, with torch's generators forked and seeded from ``rng``; restores all on exit."""
    device = model.device
    cuda_devices: list[int] = []
    if device.type == "cuda":
        cuda_devices = [torch.cuda.current_device() if device.index is None else device.index]
    was_training = model.training
    with torch.random.fork_rng(devices=cuda_devices), torch.no_grad():
        torch.manual_seed(int(rng.integers(2**62)))
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)


def _draw(
    sample: EpisodeSampler, model: MemoryMachine, batch_size: int, episode_length: int, mode: str, rng: np.random.Generator
) -> torch.Tensor:
    """Episodes ``[batch_size, episode_length, *input_shape]`` from the sampler, checked against the model."""
    x = sample(batch_size, episode_length, mode, rng)
    expected = (batch_size, episode_length, *model.input_shape)
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != expected:
        actual = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"the sampler must return episodes of the model's input_shape, expected a tensor of shape {expected} "
            f"for mode {mode!r}, actual value: {actual}"
        )
    return x


def _unit_frames(x: torch.Tensor, model: MemoryMachine) -> torch.Tensor:
    """Episodes in the same layout as floats of the model's dtype on its device: uint8 scaled to ``[0, 1]``."""
    x = x.to(model.device)
    return x.to(model.dtype) / 255.0 if x.dtype == torch.uint8 else x.to(model.dtype)


def corrupt(
    clean: torch.Tensor, noise: str, noise_std: float, block: int, spec: InputSpec, rng: np.random.Generator
) -> torch.Tensor:
    """Corrupt every frame of ``clean [B, T, *input_shape]`` (floats in ``[0, 1]``); see :func:`denoising`."""
    if noise == "gaussian":
        eps = torch.from_numpy(rng.normal(0.0, noise_std, size=tuple(clean.shape))).to(clean)
        return (clean + eps).clamp(0.0, 1.0)
    frames = clean.flatten(0, 1)  # [N, *input_shape]
    spatial = (1, 2) if spec.channels_last else (2, 3)  # the H, W axes of [N, H, W, C] or [N, C, H, W]
    H, W = frames.shape[spatial[0]], frames.shape[spatial[1]]
    top = torch.from_numpy(rng.integers(0, H - block + 1, size=frames.shape[0]))[:, None]  # [N, 1]
    left = torch.from_numpy(rng.integers(0, W - block + 1, size=frames.shape[0]))[:, None]  # [N, 1]
    rows, cols = torch.arange(H)[None], torch.arange(W)[None]  # [1, H], [1, W]
    in_rows, in_cols = (rows >= top) & (rows < top + block), (cols >= left) & (cols < left + block)  # [N, H], [N, W]
    inside = in_rows[:, :, None] & in_cols[:, None, :]  # [N, H, W]
    inside = inside[..., None] if spec.channels_last else inside[:, None]  # [N, H, W, 1] or [N, 1, H, W]
    return frames.masked_fill(inside.to(frames.device), 0.0).view_as(clean)


def _batch_sizes(num_episodes: int, batch_size: int) -> list[int]:
    """Split ``num_episodes`` into batches of ``batch_size`` and a smaller last one."""
    full, rest = divmod(num_episodes, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def _episodes_per_batch(limit: int, max_frames: int, frames_per_episode: int) -> int:
    """At most ``limit`` episodes, and at most ``max_frames`` frames per batch, but always one episode."""
    return max(1, min(limit, max_frames // frames_per_episode))


def _weighted_mean_and_stderr(values: Sequence[float], sizes: Sequence[int]) -> tuple[float, float]:
    """Mean of per-episode values known only as batch means ``values`` of ``sizes`` episodes, and its standard error.

    ``Var(batch mean) = σ² / n_b``, so ``σ² ≈ Σ n_b (m_b − m)² / (num_batches − 1)`` and the standard error
    is ``σ / √N`` with N the episodes: the usual one for batches of one episode. NaN for one batch.
    """
    m, n = np.asarray(values, dtype=np.float64), np.asarray(sizes, dtype=np.float64)
    mean = float((n * m).sum() / n.sum())
    if len(m) < 2:
        return mean, math.nan
    variance = float((n * (m - mean) ** 2).sum() / (len(m) - 1))
    return mean, math.sqrt(variance / n.sum())


def _plain(value: Any) -> Any:
    """Plain JSON data: tuples to lists, numpy scalars to Python numbers, NaN and inf to None."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) or value is None:
        return value
    raise TypeError(f"the report must hold plain data, got a {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def _plot_nll(path: Path, entries: Mapping[str, Mapping[str, Any]]) -> Path:
    names = [name for name, entry in entries.items() if "conditional_nll" in entry]
    nats = [entries[name]["conditional_nll"]["nats"] for name in names]
    stderr = [entries[name]["conditional_nll"]["nats_stderr"] for name in names]
    fig = Figure(figsize=(1.5 + 1.2 * len(names), 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(names, nats, yerr=[0.0 if math.isnan(s) else s for s in stderr], capsize=4, color="tab:blue")
    ax.set_ylabel("negative conditional ELBO (nats / frame)")
    ax.set_title("conditional NLL (lower is better)")
    fig.savefig(path, dpi=100)
    return path


def _plot_capacity(path: Path, entries: Mapping[str, Mapping[str, Any]]) -> Path:
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    markers = "Dos^v<>p*"
    for i, (name, entry) in enumerate((name, entry) for name, entry in entries.items() if "capacity" in entry):
        capacity = entry["capacity"]
        for mode in capacity["modes"]:
            ax.plot(capacity["lengths"], capacity["error"][mode], marker=markers[i % len(markers)], label=f"{name}, {mode}")
    ax.set_xticks(
        sorted({length for entry in entries.values() if "capacity" in entry for length in entry["capacity"]["lengths"]})
    )
    ax.set_xlabel("episode length T")
    ax.set_ylabel("retrieval error (nats / frame)")
    ax.set_title("capacity: negative conditional ELBO")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)
    return path


def _plot_denoising(path: Path, entries: Mapping[str, Mapping[str, Any]]) -> Path:
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    ax_mse, ax_energy = fig.subplots(1, 2)
    for name, entry in entries.items():
        for noise, result in entry.get("denoising", {}).items():
            iterations = range(len(result["mse"]))
            converged = result["converged"]
            for ax, key in ((ax_mse, "mse"), (ax_energy, "energy")):
                (line,) = ax.plot(iterations, result[key], marker=".", label=f"{name}, {noise}: {len(iterations) - 1} iterations")
                ax.plot(
                    iterations,
                    converged[key],
                    linestyle="--",
                    color=line.get_color(),
                    label=f"{name}, {noise}: stopped at rtol {converged['rtol']:g} ({converged['iterations']:.1f} iterations)",
                )
    ax_mse.set_ylabel("MSE to the clean frames")
    ax_energy.set_ylabel("mean energy (nats / frame)")
    for ax in (ax_mse, ax_energy):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("attractor iteration (0: noisy frames)")
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)
    return path


def _plot_image_groups(
    path: Path, groups: Mapping[str, tuple[torch.Tensor, InputSpec]], labels: Sequence[str], first_iteration: int
) -> Path:
    """One mosaic per group: ``frames [rows, columns, *input_shape]``; columns ``labels`` then iterations."""
    mosaics = []
    for title, (frames, spec) in groups.items():
        pictures = np.array([[_picture(frame, spec) for frame in row] for row in frames])  # [rows, columns, H, W, 3]
        columns = list(labels) + [str(first_iteration + n) for n in range(frames.shape[1] - len(labels))]
        mosaics.append((title, image_grid(pictures), columns, frames.shape[0]))
    width = max(4.0, min(16.0, 0.6 * max(len(columns) for _, _, columns, _ in mosaics)))
    fig = Figure(figsize=(width, sum(0.8 + 0.6 * n for *_, n in mosaics)), layout="constrained")
    axes = fig.subplots(len(mosaics), 1, squeeze=False)[:, 0]
    for ax, (title, mosaic, columns, _) in zip(axes, mosaics, strict=True):
        ax.imshow(mosaic, interpolation="nearest")
        column_width = mosaic.shape[1] / len(columns)
        ax.set_xticks([(j + 0.5) * column_width for j in range(len(columns))], columns, fontsize="small")
        ax.set_yticks([])
        ax.set_title(title, fontsize="medium")
    fig.savefig(path, dpi=100)
    return path


def _picture(frame: torch.Tensor, spec: InputSpec) -> np.ndarray:
    """One frame ``[*input_shape]`` as an RGB picture ``[H, W, 3]`` in ``[0, 1]`` (vectors as a square or a strip)."""
    x = frame.detach().cpu().double().clamp(0.0, 1.0)
    if not spec.is_image:
        side = math.isqrt(x.numel())
        x = x.view(side, side) if side * side == x.numel() else x.view(1, -1)  # [D] -> [H, W]
        x = x[..., None]  # [H, W, 1]
    elif not spec.channels_last:
        x = x.permute(1, 2, 0)  # [C, H, W] -> [H, W, C]
    x = x[..., :3] if x.shape[-1] >= 3 else x[..., :1].expand(*x.shape[:2], 3)  # RGB, or the first channel as grey
    return x.numpy()


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _require_memory(model: MemoryMachine, caller: str) -> GenerativeMemory:
    if not {"memory", "attractor"} <= model.capabilities:
        raise TypeError(
            f"{caller} needs a model with a memory (write, attractor), such as a DynamicKanervaMachine or a KanervaMachine; "
            f"got a {type(model).__name__}"
        )
    return typing.cast(GenerativeMemory, model)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_positive_int(name: str, value: Any) -> None:
    _check_int(name, value, minimum=1)


def _check_noise(noise: Any) -> None:
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")


def _check_noise_std(noise_std: Any) -> None:
    if not (isinstance(noise_std, (int, float)) and math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std must be a non-negative finite number, got {noise_std!r}")


def _check_rtol(rtol: Any) -> None:
    if not (isinstance(rtol, (int, float)) and math.isfinite(rtol) and rtol >= 0):
        raise ValueError(f"attractor_rtol must be a non-negative finite number, got {rtol!r}")


def _check_occlusion(spec: InputSpec, block: int) -> None:
    if not spec.is_image:
        raise ValueError(f"occlusion needs image frames, the model's input_shape is {spec.shape}; use noise='gaussian'")
    H, W, _ = spec.shape if spec.channels_last else (*spec.shape[1:], spec.shape[0])
    if block > min(H, W):
        raise ValueError(f"block must fit in the {H}x{W} frames, got block={block}")
