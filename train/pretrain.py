"""Pretrain a generative memory (DKM, KM) or the VAE baseline on episodes of collected maze frames.

    episodic-memory pretrain --data data/mazes --out runs/dkm --steps 2000
    torchrun --standalone --nproc_per_node=2 -m episodic_memory.train.cli pretrain --data data/mazes --out runs/dkm

Each step samples ``batch_size`` episodes of ``episode_length`` frames from the training mazes
and takes one Adam step on the model's per-frame objective (DKM: eq. 4 + eq. 11; KM: eq. 12;
VAE: its ELBO). Randomness is a function of ``(seed, rank, step)`` — the data of step s on
process r comes from ``numpy.random.default_rng([seed, r, s])`` and torch is reseeded likewise —
so a run resumed from a checkpoint repeats the losses of an uninterrupted one exactly on CPU.

Checkpoints (``out/checkpoints/step-NNNNNNN/``: the model as safetensors, optimizer, config and
step) are written every ``checkpoint_every`` steps, at the end, and when SIGINT/SIGTERM arrives
(after the current step). A checkpoint directory appears whole or not at all.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import shutil
import signal
import time
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from episodic_memory import EnergyBasedMemoryMachine, GenerativeMemory, KanervaPlusPlus, MemoryMachine, ProductKanervaMachine
from episodic_memory.energy import CORRUPTION_KINDS
from episodic_memory.envs.dataset import FrameDataset, parse_mode
from episodic_memory.evaluation.figures import image_grid, training_figures
from episodic_memory.evaluation.generative import EvaluationConfig, check_enough_layouts, evaluate_models, sample_and_refine
from episodic_memory.registry import MODELS
from episodic_memory.train.config import field
from episodic_memory.train.tracking import RunLogger

__all__ = ["PretrainConfig", "StopRequest", "pretrain", "build_model", "latest_checkpoint", "resolve_device"]

CHECKPOINT_FORMAT = 1
# Options that may differ between a run and its resumption; all others define the experiment.
RESUMABLE_CHANGES = {
    "data",
    "out",
    "steps",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "image_every",
    "evaluate",
    "device",
    "wandb_mode",
}


ModelChoice = Literal[tuple(MODELS)]  # the registry's trainable models
CorruptionChoice = Literal[("auto", *CORRUPTION_KINDS)]  # the EBMM's distortion models, or the machine's default


@dataclass
class PretrainConfig:
    """Options of ``episodic-memory pretrain``."""

    data: str = field("data/mazes", "dataset directory written by `episodic-memory collect`")
    out: str = field("runs/pretrain", "run directory: checkpoints, metrics.jsonl, wandb files, evaluation")
    model: ModelChoice = field(
        "dkm",
        "model: Dynamic Kanerva Machine, Kanerva Machine, Kanerva++, Product Kanerva Machine, EBMM, or the memory-less VAE",
    )
    code_size: int = field(100, "C: size of the codes and of the memory's columns")
    num_slots: int = field(32, "K: rows of the memory (dkm, km); pkm: the slots of all its sub-memories together")
    num_memories: int = field(4, "pkm: M, the sub-memories (each of num_slots / M slots)")
    memory_channels: int = field(16, "kpp: D, the channels of each cell of its memory grid (num_slots cells)")
    write_mode: Literal["pooled", "keyed"] = field(
        "pooled", "kpp: pooled (the mean of g(z) over the grid) or keyed (each frame written where its key points)"
    )
    read_steps: int = field(5, "ebmm: K, gradient steps on the energy of a read (EBMM eq. 1)")
    write_steps: int = field(5, "ebmm: T, gradient steps on the writing loss of a write (EBMM eq. 4)")
    ebmm_write: Literal["batch", "online"] = field(
        "batch", "ebmm: write an episode as a set (eq. 4) or one code at a time (the ebmm-incremental backend's write)"
    )
    corruption: CorruptionChoice = field(
        "auto", "ebmm: distortion of the training queries; auto: block (half the side) for images, entries for vectors"
    )
    likelihood: Literal["bernoulli", "gaussian", "logistic"] = field("gaussian", "frame model; logistic: discretised 8-bit")
    hidden_channels: int = field(
        16,
        "filters of every convolution of the encoder and decoder (16 suits flat-coloured MiniGrid frames; 2.7x faster than 32)",
    )
    episode_length: int = field(32, "T: frames per training episode")
    batch_size: int = field(16, "episodes per step (per process under torchrun)")
    mode: str = field("mixed", "episode sampling: 'mixed' (frames from many mazes) or 'layouts=n' (from n mazes)")
    steps: int = field(2000, "optimizer steps in total (raise it to extend a resumed run)")
    lr: float = field(1e-4, "Adam learning rate (the papers use 1e-4)")
    grad_clip: float = field(10.0, "clip the global gradient norm to this (0 disables)")
    checkpoint_every: int = field(500, "steps between checkpoints")
    keep_checkpoints: int = field(3, "checkpoints kept on disk (the newest)")
    log_every: int = field(25, "steps between logged losses")
    image_every: int = field(500, "steps between logged images (reconstructions, attractor trajectories); 0 disables")
    test_fraction: float = field(0.1, "fraction of mazes held out for evaluation")
    evaluate: bool = field(True, "evaluate on held-out mazes at the end (report.json and figures in out/eval)")
    seed: int = field(0, "random seed: same seed, same run on CPU")
    device: Literal["auto", "cpu", "cuda"] = field("auto", "auto picks CUDA when available")
    wandb_mode: Literal["online", "offline", "disabled"] = field(
        "offline", "wandb logging; offline runs upload later with `wandb sync`"
    )
    wandb_project: str = field("episodic-memory", "wandb project")

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            choices = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is typing.Literal else ()
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name} must be one of {choices}, actual value: {getattr(self, f.name)!r}")
        positive = ("code_size", "num_slots", "num_memories", "memory_channels", "hidden_channels", "read_steps", "write_steps")
        positive += ("episode_length", "batch_size", "steps")
        for name in (*positive, "checkpoint_every", "keep_checkpoints", "log_every"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("image_every", "seed"):
            _check_int(name, getattr(self, name), minimum=0)
        for name, minimum in (("lr", None), ("grad_clip", 0.0)):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or (value <= 0 if minimum is None else value < minimum):
                rule = "a positive finite number" if minimum is None else f"a finite number >= {minimum}"
                raise ValueError(f"{name} must be {rule}, actual value: {value!r}")
        parse_mode(self.mode)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        rule = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {rule}, actual value: {value!r}")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def build_model(
    config: PretrainConfig, frame_shape: tuple[int, ...], observation_encoding: dict[str, Any] | None = None
) -> MemoryMachine:
    """A fresh model of ``config.model`` for frames of ``frame_shape`` (H, W, C), or (D,) vectors.

    :param observation_encoding: the dataset's observation encoding (its manifest's), saved in a DKM's
        or KM's config so that the wrappers read that env's observations as they are.
    """
    if config.model not in MODELS:
        raise ValueError(f"model must be one of {list(MODELS)}, got {config.model!r}")
    cls = MODELS[config.model]
    options: dict[str, Any] = {"code_size": config.code_size, "likelihood": config.likelihood}
    options["hidden_channels"] = config.hidden_channels
    if issubclass(cls, GenerativeMemory):  # a memory: its size, and the observations the wrappers will hand it
        options.update(num_slots=config.num_slots, observation_encoding=observation_encoding)
    if issubclass(cls, ProductKanervaMachine):
        options["num_memories"] = config.num_memories
    if issubclass(cls, KanervaPlusPlus):
        options.update(memory_channels=config.memory_channels, write_mode=config.write_mode)
    if issubclass(cls, EnergyBasedMemoryMachine):
        options.update(read_steps=config.read_steps, write_steps=config.write_steps, write_mode=config.ebmm_write)
        options["corruption"] = None if config.corruption == "auto" else config.corruption
    return cls(frame_shape, **options)


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------
def latest_checkpoint(out: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint directory under ``out/checkpoints``, or None."""
    root = Path(out) / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and (p / "trainer.pt").is_file()) if root.is_dir() else []
    return done[-1] if done else None


def save_checkpoint(
    out: Path,
    step: int,
    model: MemoryMachine,
    optimizer: torch.optim.Optimizer,
    config: PretrainConfig,
    wandb_id: str | None,
    keep: int,
) -> Path:
    """Write ``out/checkpoints/step-NNNNNNN`` atomically (a temporary directory renamed into place)."""
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save(tmp / "model.safetensors")
    torch.save(
        {
            "format_version": CHECKPOINT_FORMAT,
            "step": step,
            "optimizer": optimizer.state_dict(),
            "config": dataclasses.asdict(config),
            "wandb_id": wandb_id,
        },
        tmp / "trainer.pt",
    )
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old)
    return final


def load_checkpoint(path: Path, config: PretrainConfig, device: torch.device) -> tuple[MemoryMachine, dict[str, Any]]:
    """Model and trainer state of checkpoint ``path``; a missing, corrupted or foreign checkpoint raises ValueError."""
    usage = "--resume takes a checkpoint directory OUT/checkpoints/step-NNNNNNN, or no value for the newest one in --out"
    if not path.exists():
        raise ValueError(f"no checkpoint at {str(path)!r}: the directory does not exist; {usage}")
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is a file, not a checkpoint directory; {usage}")
    hint = f"delete {str(path)!r} to resume from the checkpoint before it, or start afresh in another --out"
    try:
        model = MemoryMachine.load(path / "model.safetensors", map_location=device)
        trainer = torch.load(path / "trainer.pt", map_location=device, weights_only=False)
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(f"checkpoint {str(path)!r} is corrupted or incomplete ({error}); {hint}") from error
    if not isinstance(trainer, dict) or trainer.get("format_version") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {str(path)!r} is not a pretrain checkpoint of this version; {hint}")
    if not {"step", "optimizer", "config"} <= set(trainer) or not isinstance(trainer["config"], dict):
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupted or incomplete (trainer.pt lacks step, optimizer or config); {hint}"
        )
    saved = trainer["config"]
    changed = {
        k: (saved.get(k), v) for k, v in dataclasses.asdict(config).items() if k not in RESUMABLE_CHANGES and saved.get(k) != v
    }
    if changed:
        listing = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ValueError(
            f"cannot resume {str(path)!r} with a different experiment ({listing}); only {sorted(RESUMABLE_CHANGES)} may change: "
            "pass the options of that run again, or start a new run in another --out"
        )
    expected = build_model(config, model.input_shape, model.config.get("observation_encoding"))
    if model.kind != expected.kind or model.config != expected.config:
        differences = [f"{model.kind} vs {expected.kind}"] if model.kind != expected.kind else []
        differences += [
            f"{k}: {model.config[k]!r} vs {expected.config[k]!r}"
            for k in sorted(set(model.config) & set(expected.config))
            if model.config[k] != expected.config[k]
        ]
        raise ValueError(
            f"checkpoint {str(path)!r} is inconsistent: its model.safetensors is not the model its trainer.pt describes "
            f"({', '.join(differences)}); {hint}"
        )
    return model, trainer


# ------------------------------------------------------------------------------------------------
# Distributed setup and signals
# ------------------------------------------------------------------------------------------------
def _distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, device) — under torchrun, joins the process group (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, device
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size, device


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked between steps (the step in progress finishes first)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _seed_step(seed: int, rank: int, step: int) -> np.random.Generator:
    """Seed torch for this (seed, rank, step) and return the numpy generator of its data."""
    torch.manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0]))
    return np.random.default_rng([seed, rank, step])


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def pretrain(config: PretrainConfig, resume: bool | str | os.PathLike[str] = False, progress: bool = True) -> dict[str, Any]:
    """Train as ``config`` says; returns a summary (final losses, checkpoint path, run directories).

    :param resume: False to start afresh (refused if ``config.out`` already holds checkpoints),
        True to continue from the newest checkpoint in ``config.out``, or a checkpoint directory.
    """
    out = Path(config.out)
    device = resolve_device(config.device)
    rank, world_size, device = _distributed(device)
    is_main = rank == 0
    dataset = FrameDataset(config.data, split="train", test_fraction=config.test_fraction)

    start_step, wandb_id = 0, None
    checkpoint = Path(resume) if isinstance(resume, (str, os.PathLike)) else (latest_checkpoint(out) if resume else None)
    if resume is True and checkpoint is None:
        root = out / "checkpoints"
        incomplete = sorted(p.name for p in root.glob("step-*") if p.is_dir()) if root.is_dir() else []
        if incomplete:
            raise ValueError(
                f"--resume: no complete checkpoint in {str(root)!r}: {incomplete} lack trainer.pt; "
                "delete them and run without --resume to start afresh, or choose another --out"
            )
        raise ValueError(f"--resume: no checkpoint in {str(root)!r}; run without --resume to start")
    if not resume and latest_checkpoint(out) is not None:
        raise ValueError(f"{str(out)!r} already holds checkpoints: pass --resume to continue that run, or choose another --out")
    if checkpoint is not None:
        model, trainer_state = load_checkpoint(checkpoint, config, device)
        start_step, wandb_id = trainer_state["step"], trainer_state.get("wandb_id")
    else:
        torch.manual_seed(config.seed)
        model = build_model(config, dataset.frame_shape, dataset.observation_encoding).to(device)
    if tuple(model.input_shape) != tuple(dataset.frame_shape):
        raise ValueError(
            f"frames in {config.data!r} have shape {dataset.frame_shape}, the model expects {tuple(model.input_shape)}: "
            "resume with --data of the frames it was trained on, or start a new run in another --out"
        )
    layouts = parse_mode(config.mode)
    if layouts is not None and layouts > dataset.num_layouts:
        raise ValueError(
            f"--mode {config.mode} needs {layouts} layouts per episode, the train split of {config.data!r} has "
            f"{dataset.num_layouts}; pass a smaller n, or collect more layouts into it"
        )
    test = _evaluation_data(config, model) if is_main and config.evaluate else None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    if checkpoint is not None:
        try:
            optimizer.load_state_dict(trainer_state["optimizer"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"checkpoint {str(checkpoint)!r} is corrupted: its optimizer state does not fit its model ({error}); "
                f"delete it to resume from the checkpoint before it, or start afresh in another --out"
            ) from error
    trainable = DistributedDataParallel(model) if world_size > 1 else model

    logger = RunLogger(
        out, config.wandb_mode if is_main else "disabled", config.wandb_project, dataclasses.asdict(config), out.name, wandb_id
    )
    stop = StopRequest()
    frames_per_step = config.batch_size * config.episode_length * world_size
    bar = tqdm(
        total=config.steps, initial=start_step, desc=f"pretrain {config.model}", disable=not (progress and is_main), unit="step"
    )
    step, last_log, last_time, losses = start_step, start_step, time.perf_counter(), {}
    try:
        model.train()
        while step < config.steps:
            rng = _seed_step(config.seed, rank, step)
            x = dataset.sample(config.batch_size, config.episode_length, config.mode, rng).to(device)
            terms = trainable(x)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            bar.update(1)

            if step % config.log_every == 0 or step == config.steps:
                now = time.perf_counter()
                losses = {k: v.item() for k, v in terms.items()}
                fps = (step - last_log) * frames_per_step / (now - last_time)
                last_log, last_time = step, now
                if is_main:
                    logger.log(
                        {**{f"train/{k}": v for k, v in losses.items()}, "train/lr": config.lr, "perf/frames_per_s": fps}, step
                    )
                    bar.set_postfix(loss=f"{losses['loss']:.2f}", fps=f"{fps:.0f}")
            if is_main and config.image_every and (step % config.image_every == 0 or step == config.steps):
                logger.log_images(_training_images(model, dataset, config), step)
            if _stop_requested(stop, world_size, device):
                break
            if is_main and step % config.checkpoint_every == 0:
                save_checkpoint(out, step, model, optimizer, config, logger.run_id, config.keep_checkpoints)
        final = save_checkpoint(out, step, model, optimizer, config, logger.run_id, config.keep_checkpoints) if is_main else None
        if is_main:
            model.save(out / "model.safetensors")
    finally:
        bar.close()
        stop.restore()

    summary: dict[str, Any] = {
        "step": step,
        "interrupted": stop.signal is not None,
        "losses": losses,
        "checkpoint": str(final) if final else None,
        "model": str(out / "model.safetensors"),
        "wandb_run_dir": str(logger.run_dir) if logger.run_dir else None,
        "world_size": world_size,
    }
    if is_main and config.evaluate and stop.signal is None:
        summary["evaluation"] = _evaluate(model, config, out, test)
    logger.finish()
    if world_size > 1:
        dist.barrier()  # rank 0 may still be saving or evaluating: tearing gloo down under it aborts the other ranks
        dist.destroy_process_group()
    return summary


def _stop_requested(stop: StopRequest, world_size: int, device: torch.device) -> bool:
    """True when any process received SIGINT/SIGTERM, so that all stop at the same step."""
    if world_size == 1:
        return stop.signal is not None
    flag = torch.tensor([0.0 if stop.signal is None else 1.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() > 0 and stop.signal is None:
        stop.signal = signal.SIGTERM
    return flag.item() > 0


def _training_images(model: MemoryMachine, dataset: FrameDataset, config: PretrainConfig) -> dict[str, np.ndarray]:
    """Reconstructions, attractor trajectories and (DKM) prior samples refined by the attractor, as image grids."""
    if not model.input_spec.is_image:
        return {}  # vectors (other envs' encoded observations) have no picture worth logging during training
    rng = np.random.default_rng([config.seed, 1_000_003])
    x = dataset.sample(4, config.episode_length, config.mode, rng).to(model.device)
    model.eval()
    try:
        figures = training_figures(model, x, rng)
        if "prior_samples" in model.capabilities:
            with torch.no_grad():
                trajectory, _ = sample_and_refine(model, model.write(x[:1]), num_samples=6, steps=8, rng=rng)  # [N+1, 1, S, ...]
            figures["images/prior_samples"] = image_grid(trajectory[:, 0].transpose(0, 1))  # a row per sample
        return figures
    finally:
        model.train()


def _evaluation_data(config: PretrainConfig, model: MemoryMachine) -> FrameDataset | str:
    """The held-out frames of the evaluation at the end, checked before training; a string says why there are none."""
    try:
        test = FrameDataset(config.data, split="test", test_fraction=config.test_fraction)
    except ValueError as error:
        return str(error)  # an empty test split (e.g. test_fraction=0): the run goes on, without evaluation
    check_enough_layouts(
        EvaluationConfig(seed=config.seed),
        model,
        test.num_layouts,
        f"the test split of {config.data!r}",
        "pass --evaluate false, raise --test-fraction, or collect more layouts into the dataset",
    )
    return test


def _evaluate(model: MemoryMachine, config: PretrainConfig, out: Path, test: FrameDataset | str | None) -> dict[str, Any]:
    if not isinstance(test, FrameDataset):
        warnings.warn(f"no evaluation: {test}", stacklevel=2)
        return {"skipped": str(test)}
    return evaluate_models({config.model: model}, test.sample, out / "eval", EvaluationConfig(seed=config.seed))
