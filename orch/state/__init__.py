"""The state: the only place with SQL (SPEC sections 4 and 11).

`orch.state.db.Database` is the interface every backend implements:
`orch.state.sqlite.SqliteDatabase` (a home's `orch.db`) and
`orch.state.postgres.PostgresDatabase` (`state: postgresql://...`, shared by
the homes of several hosts). The query modules (tasks, jobs, runs, events,
counters, repos, hosts, artifacts, views, maint) take a Database and hand
typed, frozen records (`orch.state.records`) to the layers above.

Which backend a home uses is decided here and nowhere else (`open_location`),
from the `state:` setting: null is the home's `orch.db`, `sqlite:///PATH`
another SQLite file, `postgresql://...` (or `postgres://...`) a PostgreSQL
database. psycopg is imported only for the last.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orch.state.db import Database

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite://"


def is_postgres(location: str) -> bool:
    return location.startswith(POSTGRES_SCHEMES)


def sqlite_path(location: str) -> Path:
    """The file of a SQLite location: a path, or `sqlite:///ABSOLUTE/PATH`."""
    if location.startswith(SQLITE_SCHEME):
        return Path(location[len(SQLITE_SCHEME):])
    return Path(location)


def connect(location: str) -> Database:
    """A connection to an existing, migrated state (a supervisor's): no migration."""
    if is_postgres(location):
        from orch.state.postgres import PostgresDatabase

        return PostgresDatabase(location)
    from orch.state.sqlite import SqliteDatabase

    return SqliteDatabase(sqlite_path(location))


def open_location(location: str, *, create: bool = True, host: str = "") -> Database:
    """Open (creating and migrating as needed) the state at LOCATION.

    HOST is this home's host name (counters are kept per host on PostgreSQL).
    A state that `orch state migrate` moved elsewhere is refused (exit 4) with
    the line to put in orch.yaml.
    """
    from orch.errors import ConfigError
    from orch.state.schema import migrate, open_database

    if is_postgres(location):
        from orch.state.postgres import PostgresDatabase

        db: Database = PostgresDatabase(location)
        try:
            migrate(db)
        except BaseException:
            db.close()
            raise
    else:
        db = open_database(sqlite_path(location), create=create)
    db.host = host
    moved = db.moved_to()
    if moved is not None:
        where = db.location
        db.close()
        raise ConfigError(where, "", f"this state was moved to {moved} by orch state "
                          f"migrate: put `state: {moved}` in orch.yaml")
    return db
