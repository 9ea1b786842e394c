"""Run logging: a local ``metrics.jsonl`` always, and wandb (offline by default) when it works.

wandb never stops training: if it cannot start (no network in online mode, a broken install) or
fails while logging, a warning says so and the run goes on with the local log only.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = ["RunLogger", "WandbMode"]

WandbMode = Literal["online", "offline", "disabled"]


class RunLogger:
    """Log scalars and images of one run.

    :param out_dir: the run directory; ``metrics.jsonl`` (one JSON object per logged step) and the
        wandb run directory (``out_dir/wandb``) go there.
    :param wandb_mode: ``"offline"`` (default: files only, upload later with ``wandb sync``),
        ``"online"`` or ``"disabled"``.
    :param project: wandb project name.
    :param config: hyperparameters, recorded with the run.
    :param name: run name.
    :param resume_id: wandb run id of an interrupted run to continue.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        wandb_mode: WandbMode = "offline",
        project: str = "episodic-memory",
        config: dict[str, Any] | None = None,
        name: str | None = None,
        resume_id: str | None = None,
    ) -> None:
        if wandb_mode not in ("online", "offline", "disabled"):
            raise ValueError(f"wandb_mode must be 'online', 'offline' or 'disabled', got {wandb_mode!r}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.run: Any = None
        if wandb_mode != "disabled":
            self.run = self._start_wandb(wandb_mode, project, config or {}, name, resume_id)

    def _start_wandb(self, mode: str, project: str, config: dict[str, Any], name: str | None, resume_id: str | None) -> Any:
        # wandb advertises Weave on every run otherwise.
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        try:
            import wandb

            return wandb.init(
                project=project,
                mode=mode,
                dir=str(self.out_dir),
                config=config,
                name=name,
                id=resume_id,
                resume="allow" if resume_id else None,
                settings=wandb.Settings(silent=True),
            )
        except Exception as error:  # noqa: BLE001 - any wandb failure must leave training running
            warnings.warn(
                f"wandb could not start ({type(error).__name__}: {error}); logging to {self.metrics_path} only", stacklevel=2
            )
            return None

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else self.run.id

    @property
    def run_dir(self) -> Path | None:
        """The wandb run directory (``wandb sync`` uploads it), or None without wandb."""
        return None if self.run is None else Path(self.run.dir).parent

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Append ``metrics`` at ``step`` to ``metrics.jsonl`` and send them to wandb."""
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self._wandb_call(lambda: self.run.log(metrics, step=step))

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        """Send uint8 ``[H, W, 3]`` images to wandb."""
        if self.run is None:
            return
        import wandb

        self._wandb_call(lambda: self.run.log({k: wandb.Image(v) for k, v in images.items()}, step=step))

    def finish(self) -> None:
        self._wandb_call(lambda: self.run.finish())

    def _wandb_call(self, call: Any) -> None:
        if self.run is None:
            return
        try:
            call()
        except Exception as error:  # noqa: BLE001 - see the module docstring
            warnings.warn(f"wandb failed ({type(error).__name__}: {error}); continuing with the local log only", stacklevel=3)
            self.run = None


def _plain(value: Any) -> Any:
    """A JSON-friendly float (NaN/inf as strings) from Python or tensor scalars."""
    value = float(value)
    return value if math.isfinite(value) else str(value)
