"""The state: the only place with SQL (SPEC section 4).

`orch.state.db.Database` is the interface every backend implements (today
`orch.state.sqlite.SqliteDatabase`); the query modules (tasks, jobs, runs,
events, counters, repos, views, maint) take a Database and hand typed,
frozen records (`orch.state.records`) to the layers above.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orch.state.db import Database


def connect(location: str) -> Database:
    """A connection to an existing, migrated state (a supervisor's): no migration."""
    from orch.state.sqlite import SqliteDatabase

    return SqliteDatabase(Path(location))
