"""The engine tests' fixture: `eh`, an orch home driven by real ticks (support/engine.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.engine import EngineHome


@pytest.fixture
def eh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None) -> Iterator[EngineHome]:
    """An orch home with one repo `app` (support.engine.EngineHome); when the test ends,
    every process its runs left behind is killed."""
    home = EngineHome(tmp_path, monkeypatch)
    yield home
    home.close()
