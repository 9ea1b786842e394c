"""Training curves of ``episodic-memory train-agent`` runs, read back from their ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["CURVE_KEY", "training_curve"]

CURVE_KEY = "rollout/ep_rew_mean"  # SB3: the mean extrinsic return of the last 100 training episodes


def training_curve(run_dir: str | Path) -> list[tuple[int, float]]:
    """``(step, mean return of the last 100 training episodes)`` after every rollout of the run in ``run_dir``.

    Its maximum is POPGym's MMER (Morad et al., ICLR 2023), the maximum over training of the mean episode
    return, over SB3's 100-episode window instead of POPGym's training batch. Empty until an episode ends.
    """
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    records = (json.loads(line) for line in lines if line)
    return [(int(r["step"]), float(r[CURVE_KEY])) for r in records if CURVE_KEY in r]
