"""The engine tests' fixture: `eh`, an orch home driven by real ticks (support/engine.py).

Every test that uses `eh` runs twice: on the home's SQLite file and on a real
PostgreSQL database (SPEC section 11: the invariants hold on both backends).
The PostgreSQL server is started once for the session by `pg_server`
(support/fixtures.py); outside CI a machine without one skips those runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.engine import EngineHome

BACKENDS = ("sqlite", "postgres")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The crash tests that run with and without kicks (`kicks` parameter) run the
    kicks variant on SQLite only: kicks are the same processes on either backend, and
    PostgreSQL with kicks on is the multi-host test's case (test_multihost.py). The
    matrix without that corner keeps the suite inside its time budget."""
    keep, dropped = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        params = params.params if params is not None else {}
        if params.get("state_url") == "postgres" and params.get("kicks") == "kicks":
            dropped.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(params=BACKENDS)
def state_url(request: pytest.FixtureRequest) -> str | None:
    """None for the home's SQLite file; the URL of a fresh PostgreSQL database otherwise."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_dsn"))


@pytest.fixture
def eh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None,
       state_url: str | None) -> Iterator[EngineHome]:
    """An orch home with one repo `app` (support.engine.EngineHome) on either backend; when
    the test ends, every process its runs left behind is killed."""
    home = EngineHome(tmp_path, monkeypatch, state=state_url)
    yield home
    home.close()
