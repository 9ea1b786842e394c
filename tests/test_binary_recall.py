"""benchmarks/binary_recall.py: our classical memories reproduce the EBMM paper's Table 1 rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "binary_recall.py"
PAPER = {  # Bartunov et al. 2020, Table 1: error bits at 16, 32, 48, 64, 96 patterns
    "hebb": (0.4, 5.0, 9.8, 13.0, 16.5),
    "storkey": (0.0, 0.9, 6.3, 11.3, 17.1),
    "pseudo-inverse": (0.0, 0.0, 0.3, 4.3, 22.5),
}


def test_hopfield_rows_match_the_paper_and_storing_everything_recalls_every_bit() -> None:
    models = [*PAPER, "store-everything"]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", "--trials", "10", "--seed", "3", "--models", *models],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    errors = json.loads(result.stdout)
    assert sorted(errors) == sorted(models)
    for name, paper in PAPER.items():
        ours = [errors[name][str(n)] for n in (16, 32, 48, 64, 96)]
        assert all(abs(a - b) <= 1.5 for a, b in zip(ours, paper, strict=True)), (name, ours, paper)
        assert ours == sorted(ours)  # more patterns, more errors
    assert set(errors["store-everything"].values()) == {0.0}


def test_trained_rows_are_cached_and_reused(tmp_path) -> None:
    run = [sys.executable, str(SCRIPT), "--json", "--trials", "2", "--models", "km", "--train-steps", "2"]
    run += ["--model-steps", "1", "--cache", str(tmp_path)]
    first = json.loads(subprocess.run(run, capture_output=True, text=True, timeout=300, check=True).stdout)
    saved = (tmp_path / "km.safetensors").stat().st_mtime_ns
    again = json.loads(subprocess.run(run, capture_output=True, text=True, timeout=300, check=True).stdout)
    assert (tmp_path / "km.safetensors").stat().st_mtime_ns == saved  # loaded, not trained again
    assert again == first and all(0 <= bits <= 64 for bits in first["km"].values())  # only the erased bits can be wrong
