"""orch.yaml written by the config tests: the orch_home fixture's repo first, the case after."""

from __future__ import annotations

from pathlib import Path


def base_config(home: Path) -> str:
    """Three lines: the repo made by the orch_home fixture; mistakes are appended at line 4."""
    repo = home.parent / "repos" / "app"
    return f"repos:\n  app:\n    path: {repo}\n"


def write_config(home: Path, extra: str) -> Path:
    """orch.yaml of `home`: base_config, then `extra` (from line 4 on)."""
    path = home / "orch.yaml"
    path.write_text(base_config(home) + extra, encoding="utf-8")
    return path
