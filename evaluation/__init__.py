"""Evaluation of trained generative memories on held-out episodes: likelihood, capacity, attractor dynamics, samples."""

from episodic_memory.evaluation.generative import (
    NOISES,
    EpisodeSampler,
    EvaluationConfig,
    capacity_curve,
    check_enough_layouts,
    conditional_nll,
    corrupt,
    denoising,
    evaluate_models,
    sample_and_refine,
)

__all__ = [
    "NOISES",
    "EpisodeSampler",
    "EvaluationConfig",
    "capacity_curve",
    "check_enough_layouts",
    "conditional_nll",
    "corrupt",
    "denoising",
    "evaluate_models",
    "sample_and_refine",
]
