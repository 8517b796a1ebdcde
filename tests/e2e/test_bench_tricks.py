"""bench/tricks.py still applies to the code: every patch that takes a trick out matches.

The measurement itself needs valgrind and minutes, so it is not run here; but a
patch that no longer matches (a trick moved or renamed) fails here rather than
on the next measurement, and each patched copy still imports.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_tricks", ROOT / "bench" / "tricks.py")
assert _spec is not None and _spec.loader is not None
tricks = importlib.util.module_from_spec(_spec)
sys.modules["bench_tricks"] = tricks
_spec.loader.exec_module(tricks)


@pytest.mark.parametrize("trick", tricks.TRICKS, ids=lambda trick: trick.name)
def test_each_trick_can_be_taken_out_and_orch_still_imports(trick: Any,
                                                            tmp_path: Path) -> None:
    tree = tricks.make_tree(tmp_path, trick.name, trick.patches)
    env = tricks.child_env(tmp_path, tree)
    proc = subprocess.run([sys.executable, "-c", "import orch.cli, orch.engine.tick"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_lazy_imports_are_found(tmp_path: Path) -> None:
    sites = tricks.lazy_imports(tricks.make_tree(tmp_path, "base"))
    assert ("orch.cli.render", "rich.console", "Console") in sites
