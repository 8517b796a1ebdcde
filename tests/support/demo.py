"""`orch demo` run through the installed console script, in an environment of its own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from support.cli import orch_script


def demo_env(tmp_path: Path) -> dict[str, str]:
    """Ours without ORCH_* and GIT_*; TMPDIR, HOME and a decoy ORCH_HOME under tmp_path."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("ORCH_", "GIT_"))}
    env.update(TMPDIR=str(tmp_path / "tmp"), ORCH_HOME=str(tmp_path / "not-this-one"),
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", HOME=str(tmp_path))  # no user git config
    (tmp_path / "tmp").mkdir()
    return env


def orch(env: dict[str, str], *args: str, timeout: float = 80) -> subprocess.CompletedProcess:
    """`orch ARGS` through the console script; never raises on a non-zero exit."""
    return subprocess.run([orch_script(), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
