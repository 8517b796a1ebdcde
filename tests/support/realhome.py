"""An orch home driven through `orch tick` with the real agent CLIs and the presets
exactly as `orch init --agents KIND` writes them.

Only orch's own timing is shortened (ORCH_* overrides of top-level keys, which the
contract allows); the agents' environment adds nothing but what a user sets for a
proxy or gateway: the provider's base URL, a dummy key, and the CLIs' own isolation
and retry variables (docs/agents.md).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REALCLI_BIN = Path(__file__).resolve().parents[1] / "realcli" / "node_modules" / ".bin"
FAST = {"ORCH_HEARTBEAT_INTERVAL_S": "1", "ORCH_HEARTBEAT_TIMEOUT_S": "60",
        "ORCH_RETRY_BACKOFF_S": "0", "ORCH_CANCEL_GRACE_S": "2", "ORCH_KICK_ENABLED": "false"}
GIT_ENV = {"GIT_AUTHOR_NAME": "orch tests", "GIT_AUTHOR_EMAIL": "tests@orch.invalid",
           "GIT_COMMITTER_NAME": "orch tests", "GIT_COMMITTER_EMAIL": "tests@orch.invalid"}
CALC = "def add(a, b):\n    return a - b\n"
TEST_CALC = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"


def git(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | GIT_ENV
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_project(path: Path) -> Path:
    """A repository whose test fails until `add` adds; its own identity for commits."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "orch tests")
    git(path, "config", "user.email", "tests@orch.invalid")
    (path / "calc.py").write_text(CALC, encoding="utf-8")
    (path / "test_calc.py").write_text(TEST_CALC, encoding="utf-8")
    (path / ".gitignore").write_text("__pycache__/\n.pytest_cache/\n", encoding="utf-8")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "initial commit")
    return path


class RealHome:
    """`orch init --agents KIND --repo app=PROJECT`, then ticks as separate processes."""

    def __init__(self, root: Path, kind: str, agent_env: dict[str, str],
                 stages: list[dict[str, Any]] | None = None, **orch: str) -> None:
        self.root = root
        self.home = root / "home"
        self.repo = make_project(root / "app")
        self.orch_env = {**FAST, **orch}
        if stages is not None:
            pipeline = root / "pipeline.yaml"
            pipeline.write_text(json.dumps({"stages": stages}), encoding="utf-8")
            self.orch_env["ORCH_PIPELINE"] = str(pipeline)
        self.agent_env = agent_env
        done = self.cli("init", "--agents", kind, "--repo", f"app={self.repo}")
        assert done.returncode == 0, done.stderr

    def env(self) -> dict[str, str]:
        """Our environment (minus ORCH_*), the CLIs and this Python first on PATH."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ORCH_", "ANTHROPIC_", "CLAUDE", "CODEX_", "OPENAI_"))}
        path = os.pathsep.join([str(REALCLI_BIN), str(Path(sys.executable).parent),
                                env.get("PATH", "/usr/bin:/bin")])
        return {**env, "PATH": path, **self.orch_env, **self.agent_env}

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orch", "--home", str(self.home), *args],
                              env=self.env(), capture_output=True, text=True, timeout=timeout)

    def add_task(self, title: str = "Fix add", body: str = "add() must add.") -> int:
        done = self.cli("task", "add", "--repo", "app", "--title", title, "--body", body,
                        "--json")
        assert done.returncode == 0, done.stderr
        return int(json.loads(done.stdout)["id"])

    def artifacts(self, task_id: int) -> Path:
        return self.home / "tasks" / str(task_id)

    def worktree(self, task_id: int) -> Path:
        return self.home / "worktrees" / "app" / str(task_id)

    def tick(self, *args: str) -> dict[str, Any]:
        done = self.cli("tick", "--json", *args)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        conn = sqlite3.connect(str(self.home / "orch.db"), timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def task(self, task_id: int) -> dict[str, Any]:
        return self.rows("SELECT * FROM tasks WHERE id = ?", (task_id,))[0]

    def runs(self, task_id: int) -> list[dict[str, Any]]:
        return self.rows("SELECT runs.*, jobs.stage FROM runs JOIN jobs ON jobs.id = "
                         "runs.job_id WHERE jobs.task_id = ? ORDER BY runs.id", (task_id,))

    def queued(self, task_id: int) -> bool:
        return bool(self.rows("SELECT 1 FROM jobs WHERE task_id = ? AND status = 'queued'",
                              (task_id,)))

    def drive(self, until: Callable[[list[dict[str, Any]]], bool], *, timeout: float = 300,
              before_tick: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
        """Tick until `until(the advanced entries so far)` holds; the advanced entries.
        With `before_tick`, each round is a tick that claims nothing (it judges and
        moves), then `before_tick()` (which may load the next run's script), then, if it
        returned True, a tick that claims."""
        advanced: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not until(advanced):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out; advanced {advanced}; runs "
                            f"{self.rows('SELECT * FROM runs')}; events "
                            f"{self.rows('SELECT kind, detail FROM events')}")
            if before_tick is not None:
                advanced += self._checked(self.tick("--max-claims", "0"))
                if not before_tick():
                    time.sleep(0.3)
                    continue
            advanced += self._checked(self.tick())
            time.sleep(0.3)
        return advanced

    @staticmethod
    def _checked(report: dict[str, Any]) -> list[dict[str, Any]]:
        assert report["errors"] == [], report["errors"]
        return list(report["advanced"])


def verdicts(advanced: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(entry["from"], entry["to"], entry["verdict"]) for entry in advanced]
