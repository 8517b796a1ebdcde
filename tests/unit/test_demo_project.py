"""The demo's project (orch.engine.commands.demo): its repository passes its own
tests under pytest and unittest, and its configuration loads with the demo agents."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.git import run_git


def test_the_demo_project_passes_under_pytest_and_unittest(tmp_path: Path) -> None:
    from orch.config import load_settings
    from orch.engine.commands.demo import demo_config, demo_test_command, make_repo

    repo = tmp_path / "repo"
    commit = make_repo(repo)
    assert run_git(repo, "rev-parse", "main") == commit
    assert run_git(repo, "status", "--porcelain") == ""
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    for argv in (demo_test_command(), [sys.executable, "-m", "unittest", "discover", "-s",
                                       "tests"]):
        done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    (tmp_path / "orch.yaml").write_text(demo_config(repo, demo_test_command()))
    settings = load_settings(tmp_path, environ={})
    assert settings.repo("demo").path == repo and settings.retry_backoff_s == 0
    assert settings.agents["developer"].command == (sys.executable, "-m", "orch.demo.agent",
                                                    "developer")
    assert all(role.output == "claude-json" for role in settings.agents.values())
