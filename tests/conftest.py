"""Shared fixtures: real git repos and a real orch home in tmp_path, the CLI in-process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import orch.cli

CliResult = tuple[int, str, str]

# Commits in test repos must not depend on the user's git config (identity, signing, hooks).
GIT_ENV = {
    "GIT_AUTHOR_NAME": "orch tests", "GIT_AUTHOR_EMAIL": "tests@orch.invalid",
    "GIT_COMMITTER_NAME": "orch tests", "GIT_COMMITTER_EMAIL": "tests@orch.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


def run_git(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | GIT_ENV
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def git_repo(tmp_path: Path) -> Callable[..., Path]:
    """A factory: `git_repo("app")` makes tmp_path/repos/app with one commit on main."""

    def make(name: str = "app") -> Path:
        path = tmp_path / "repos" / name
        path.mkdir(parents=True)
        run_git(path, "init", "-q", "-b", "main")
        (path / "README.md").write_text(f"# {name}\n", encoding="utf-8")
        run_git(path, "add", "README.md")
        run_git(path, "commit", "-q", "-m", "initial commit")
        return path

    return make


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ORCH_* variable of the caller's environment leaks into the configuration."""
    for key in list(os.environ):
        if key.startswith("ORCH_"):
            monkeypatch.delenv(key)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], clean_env: None) -> Callable[..., CliResult]:
    """`cli(home, *args)` runs `orch --home HOME ARGS...` in-process through the error
    boundary (`orch.cli.run`) and returns (exit code, stdout, stderr); home=None omits it."""

    def call(home: Path | None, *args: str) -> CliResult:
        capsys.readouterr()
        argv = [*(["--home", str(home)] if home is not None else []), *args]
        code = orch.cli.run(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def orch_home(tmp_path: Path, git_repo: Callable[..., Path],
              cli: Callable[..., CliResult]) -> Path:
    """A home made by `orch init --repo app=<a repo with one commit>`."""
    home = tmp_path / "home"
    code, _, err = cli(home, "init", "--repo", f"app={git_repo('app')}")
    assert code == 0, err
    return home
