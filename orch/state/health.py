"""Read-only health questions about the state, for `orch doctor`."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from orch.errors import DatabaseError, OrchError
from orch.state import counters
from orch.state.sqlite import SqliteDatabase


@dataclass(frozen=True)
class Health:
    """What the state file says about itself."""

    problems: tuple[str, ...]   # integrity check findings (empty: sound)
    version: int                # schema version stored in it
    journal_mode: str
    last_tick_at: str | None


def inspect_file(path: Path) -> Health:
    """Open the SQLite file read-only in spirit (no migration) and ask it; DatabaseError
    (with the reason) when it cannot be opened or read."""

    try:
        db = SqliteDatabase(path)
    except (OrchError, sqlite3.Error) as exc:
        raise DatabaseError(f"{path}: cannot open: {exc}") from exc
    try:
        problems = db.health_problems()
        tick = counters.get_meta(db, "last_tick_at") if db.has_table("meta") else None
        return Health(tuple(problems), db.schema_version(), db.journal_mode(), tick)
    except (OrchError, sqlite3.Error) as exc:
        raise DatabaseError(f"{path}: {exc}") from exc
    finally:
        db.close()
