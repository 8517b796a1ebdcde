"""Running the real Claude Code CLI (installed by tests/realcli/install.sh) in a tmp layout.

The layout is what orch gives an agent: a repository, the task's worktree made
by `git worktree add` (its git directory lives in the repository's
.git/worktrees/), and the task's artifacts folder outside the worktree.

The role presets below are the argv templates that pass with Claude Code 2.1.332
in its default permission model (no --dangerously-skip-permissions); see
tests/data/agent_outputs/claude/README.md for why each flag is there.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REALCLI = Path(__file__).resolve().parents[1] / "realcli"
CLAUDE = REALCLI / "node_modules" / ".bin" / "claude"
INSTALL = "bash tests/realcli/install.sh"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "orch tests", "GIT_AUTHOR_EMAIL": "tests@orch.invalid",
    "GIT_COMMITTER_NAME": "orch tests", "GIT_COMMITTER_EMAIL": "tests@orch.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}

# The project's own test commands, in the forms an agent types them.
TEST_TOOLS = "Bash(python3:*) Bash(python:*) Bash(pytest:*)"
BASE = ["claude", "-p", "--output-format", "json", "--add-dir={artifacts}"]
# Roles that write only their deliverable: Edit(//abs/**) (the doubled slash makes the
# path absolute) lets Write and Edit into the artifacts folder and nowhere else.
READER = [*BASE, f"--allowedTools=Edit(/{{artifacts}}/**) {TEST_TOOLS}", "--", "{prompt}"]
PRESETS: dict[str, list[str]] = {
    "analyst": READER,
    "reviewer": READER,
    "tester": READER,
    "developer": [*BASE, "--permission-mode", "acceptEdits",
                  f"--allowedTools=Bash(git:*) {TEST_TOOLS}",
                  "--disallowedTools=Bash(git push:*)", "--", "{prompt}"],
}


MISSING = f"the real Claude Code CLI is not installed: run `{INSTALL}`"


def require_claude() -> None:
    """At a test module's top: skip the whole module, in one line naming the install
    command, when the CLI is not installed, unless CI is set (then each test fails in
    claude_binary(), and the rest of the suite still runs)."""
    if not _is_elf(CLAUDE) and not os.environ.get("CI"):
        pytest.skip(MISSING, allow_module_level=True)


def claude_binary() -> Path:
    """The installed native claude; fails the test when it is missing."""
    if not _is_elf(CLAUDE):
        pytest.fail(MISSING, pytrace=False)
    return CLAUDE


def _is_elf(path: Path) -> bool:
    """Whether the path is the native binary (not the install-script placeholder)."""
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


def run_git(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | GIT_ENV
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@dataclass
class Layout:
    """A repository with one commit, a task worktree, an artifacts folder, a claude config."""

    repo: Path
    worktree: Path
    artifacts: Path
    config: Path

    @classmethod
    def make(cls, root: Path) -> Layout:
        repo, worktree = root / "repo", root / "worktrees" / "task-1"
        artifacts, config = root / "home" / "artifacts" / "1", root / "claude-config"
        repo.mkdir(parents=True)
        run_git(repo, "init", "-q", "-b", "main")
        (repo / "calc.py").write_text("def add(a, b):\n    return a - b\n", encoding="utf-8")
        (repo / "test_calc.py").write_text(
            "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
            encoding="utf-8")
        run_git(repo, "add", ".")
        run_git(repo, "commit", "-q", "-m", "initial commit")
        run_git(repo, "worktree", "add", "-q", "-b", "orch/task-1", str(worktree))
        artifacts.mkdir(parents=True)
        (artifacts / "00-task.md").write_text("# Fix add\n", encoding="utf-8")
        config.mkdir()
        return cls(repo, worktree, artifacts, config)

    def argv(self, role: str, prompt: str = "Do the task.") -> list[str]:
        """The role's preset with the placeholders filled in, `claude` made absolute."""
        values = {"{prompt}": prompt, "{artifacts}": str(self.artifacts),
                  "{worktree}": str(self.worktree)}
        argv = []
        for element in PRESETS[role]:
            for key, value in values.items():
                element = element.replace(key, value)
            argv.append(element)
        return [str(claude_binary()), *argv[1:]]


@dataclass
class Outcome:
    """What one claude run left: exit code, output, the parsed result object, its time."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def result(self) -> dict[str, Any]:
        value = json.loads(self.stdout)
        assert isinstance(value, dict) and value.get("type") == "result", self.stdout[-2000:]
        return value


def run_claude(argv: list[str], cwd: Path, env: dict[str, str],
               timeout: float = 120) -> Outcome:
    """Run claude to its end (stdin /dev/null, as orch runs agents)."""
    started = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
    return Outcome(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def base_env(home: Path) -> dict[str, str]:
    """A small clean environment: PATH, a HOME of its own, git identity, no user config."""
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "LANG": "C.UTF-8", **GIT_ENV}
