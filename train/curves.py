"""Training curves of ``episodic-memory train-agent`` runs, read back from their ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

from episodic_memory.agents.callbacks import EPISODE_WINDOW_KEY

__all__ = ["CURVE_KEY", "WINDOW", "training_curve"]

CURVE_KEY = "rollout/ep_rew_mean"  # SB3: the mean extrinsic return of the last 100 training episodes
WINDOW = 100  # SB3's stats_window_size


def training_curve(run_dir: str | Path) -> list[tuple[int, float]]:
    """``(step, mean return of the last 100 training episodes)`` after every rollout of the run in ``run_dir``,
    from the first rollout whose window holds all 100 episodes.

    Its maximum is POPGym's MMER (Morad et al., ICLR 2023), the maximum over training of the mean episode
    return, over SB3's 100-episode window instead of POPGym's training batch. A mean of the first few
    episodes is left out: the first to end are rarely typical (on MiniGrid-Memory the quick ones are the
    successes, and a random policy's first rollout can read 0.85). The window's size is the logged
    ``rollout/ep_window``; runs logged before it estimate it as ``total steps / mean episode length``,
    the episodes a window of that mean length would hold. Empty until a window fills.
    """
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line]
    return [(int(r["step"]), float(r[CURVE_KEY])) for r in records if CURVE_KEY in r and _window(r) >= WINDOW]


def _window(record: dict) -> float:
    if EPISODE_WINDOW_KEY in record:
        return float(record[EPISODE_WINDOW_KEY])
    return float(record["step"]) / max(float(record.get("rollout/ep_len_mean", 1.0)), 1.0)
