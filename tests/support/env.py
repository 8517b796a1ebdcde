"""The environment a separate orch process of a test gets."""

from __future__ import annotations

# Kicks stay off in every test unless it switches them on (tests/conftest.py `no_kicks`).
KEPT_ORCH_VARIABLES = ("ORCH_KICK_ENABLED",)


def keep_env(name: str) -> bool:
    """Keep a variable of ours for a child orch: everything but ORCH_* configuration."""
    return not name.startswith("ORCH_") or name in KEPT_ORCH_VARIABLES
