"""The installed package owns one top-level name, ``episodic_memory``: a user's own ``envs/`` cannot shadow ours."""

from __future__ import annotations

import subprocess
import sys


def test_a_users_own_envs_folder_does_not_shadow_the_product(tmp_path):
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "__init__.py").write_text("USERS_OWN = True\n")
    code = (
        "import importlib.util, envs\n"
        "from episodic_memory.envs import make_frame_env\n"
        "from episodic_memory.agents.builder import build_agent\n"
        "from episodic_memory.train.cli import main\n"
        "assert envs.USERS_OWN\n"
        "print(*(importlib.util.find_spec(name) is None for name in ('agents', 'train')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]  # no generic top-level packages installed
