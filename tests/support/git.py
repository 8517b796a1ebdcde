"""Git for the tests: commands that ignore the user's git config, and small real repositories.

Commits in test repositories must not depend on the user's git config
(identity, signing, hooks), so `run_git` runs git with a fixed identity and
neither the global nor the system config.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "orch tests", "GIT_AUTHOR_EMAIL": "tests@orch.invalid",
    "GIT_COMMITTER_NAME": "orch tests", "GIT_COMMITTER_EMAIL": "tests@orch.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


def run_git(cwd: Path, *args: str) -> str:
    """`git ARGS` in `cwd` with GIT_ENV (and no other GIT_* variable); returns its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | GIT_ENV
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(path: Path) -> Path:
    """A git repository at `path` (made with its parents) with one commit on main that
    adds README.md ("# <name of the directory>")."""
    path.mkdir(parents=True)
    run_git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text(f"# {path.name}\n", encoding="utf-8")
    run_git(path, "add", "README.md")
    run_git(path, "commit", "-q", "-m", "initial commit")
    return path


# The tests of orch.gitops and the merge run git in the environment as it is; the
# `isolated_git` fixture (tests/unit/conftest.py) keeps the user's config out of it, and
# their repositories carry their own identity in .git/config, as a user's would.


def git(cwd: Path, *args: str) -> str:
    """`git ARGS` in `cwd` with the environment as it is; returns its stdout."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def commit_file(cwd: Path, name: str, text: str, message: str | None = None) -> str:
    """Write `name` (with its directories), commit it; returns the new commit."""
    (cwd / name).parent.mkdir(parents=True, exist_ok=True)
    (cwd / name).write_text(text)
    git(cwd, "add", name)
    git(cwd, "commit", "-q", "-m", message or f"write {name}")
    return git(cwd, "rev-parse", "HEAD")


def make_repo_with_identity(path: Path) -> Path:
    """A repository whose .git/config names its committer (and turns signing off), with one
    commit on main that adds README.md."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test User")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "commit.gpgsign", "false")
    commit_file(path, "README.md", "hello\n", "initial")
    return path
