"""Fixtures for every layer: real git repos and a real orch home in tmp_path, the CLI
in-process. Helpers that are not fixtures live in tests/support/ (imported as `support.*`)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from support.cli import CliResult
from support.git import make_repo

import orch.cli

# A suite started in the background by a non-interactive shell (`nohup ... &`, some CI
# runners) inherits SIGINT ignored, and so would every orch it starts: the tests that
# press Ctrl-C (SIGINT to a real subprocess) would find it ignored. An ignored signal
# stays ignored across exec; a handled one is reset to the default, so handle it here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Real servers and users for the tests that need them (PostgreSQL, sshd, an unprivileged user).
pytest_plugins = ["support.fixtures"]


@pytest.fixture
def git_repo(tmp_path: Path) -> Callable[..., Path]:
    """A factory: `git_repo("app")` makes tmp_path/repos/app with one commit on main."""

    def make(name: str = "app") -> Path:
        return make_repo(tmp_path / "repos" / name)

    return make


# Kicks (a tick started at once when a run ends or a command changes what may run) are
# switched off in every test through the environment, which separate orch processes
# inherit too; the tests of kicks switch them back on (tests/engine/test_kicks.py).
NO_KICKS = {"ORCH_KICK_ENABLED": "false"}


@pytest.fixture(autouse=True)
def no_kicks(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in NO_KICKS.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ORCH_* variable of the caller's environment leaks into the configuration (but
    kicks stay off, see `no_kicks`)."""
    for key in list(os.environ):
        if key.startswith("ORCH_") and key not in NO_KICKS:
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
