"""Test-support fixtures that start real programs: PostgreSQL, OpenSSH's sshd, and
commands run as an unprivileged user.

Each module is importable on its own (`from support.pgserver import ...`); the pytest
fixtures are collected from `support.fixtures` (add it to `pytest_plugins`)."""

from __future__ import annotations

import os
import socket

import pytest


def in_ci() -> bool:
    """True when the environment variable CI is set to anything but empty/0/false."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(what: str, install: str) -> None:
    """Skip the test (one line naming the install command) or, under CI, fail it:
    CI installs every component, so a missing one there is a broken machine."""
    message = f"{what} not available; install with: {install}"
    if in_ci():
        pytest.fail(f"{message} (CI is set, so this fails instead of skipping)")
    pytest.skip(message)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (callers retry on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
