"""The CLI as the tests see it: the result of an in-process call and the console script."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

# (exit status, stdout, stderr) of `orch ...` run in-process by the `cli` fixture.
CliResult = tuple[int, str, str]


def orch_script() -> str:
    """The installed console script itself (not a version-manager shim)."""
    beside = Path(sys.executable).parent / "orch"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("orch")
    assert found, "the orch console script is not installed"
    return found
