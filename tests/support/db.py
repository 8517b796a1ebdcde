"""The state seen from outside orch: a second, independent connection, and a digest.

`raw(path)` is a plain sqlite3 connection; `RawDb(location)` is the same for
either backend (a SQLite file or a PostgreSQL URL): `?` placeholders and
dict rows on both, so a test reads and corrupts rows the same way whatever
the backend it is parametrized over.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

# The CHECK of invariant 1 as orch.state.pg_schema names it (restored after a planted row).
PG_QUEUED_IS_CLEAN = "jobs_queued_is_clean"


def raw(path: Path) -> sqlite3.Connection:
    """A second, independent connection: what did really commit?"""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=0)
    conn.row_factory = sqlite3.Row
    return conn


def digest(path: Path) -> str | None:
    """The file's SHA-256 (None: no such file), to show a refused command wrote nothing."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def is_postgres(location: str | Path) -> bool:
    return str(location).startswith(("postgresql://", "postgres://"))


class RawDb:
    """One autocommit connection to a SQLite file or a PostgreSQL database."""

    def __init__(self, location: str | Path, timeout: float = 30) -> None:
        self.location = str(location)
        self.postgres = is_postgres(location)
        if self.postgres:
            import psycopg
            from psycopg.rows import dict_row

            self.pg = psycopg.connect(self.location, autocommit=True, row_factory=dict_row)
        else:
            self.lite = sqlite3.connect(self.location, timeout=timeout, isolation_level=None)
            self.lite.row_factory = sqlite3.Row

    def close(self) -> None:
        (self.pg if self.postgres else self.lite).close()

    def __enter__(self) -> RawDb:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _sql(self, sql: str) -> str:
        from orch.state.postgres import to_psycopg

        return to_psycopg(sql)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        if self.postgres:
            cursor = self.pg.execute(self._sql(sql), list(params))
            return list(cursor.fetchall()) if cursor.description else []
        return [dict(row) for row in self.lite.execute(sql, params).fetchall()]

    def value(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        rows = self.rows(sql, params)
        return next(iter(rows[0].values())) if rows else None

    def write(self, sql: str, params: tuple[Any, ...] = (), *,
              ignore_checks: bool = False) -> int:
        """A direct write (to corrupt rows on purpose); returns the row count. With
        IGNORE_CHECKS the schema's CHECKs are off for it (SQLite's pragma; on PostgreSQL,
        which has no such switch, invariant 1's CHECK is dropped and restored NOT VALID,
        so rows already there are not re-checked but every later write is)."""
        if not self.postgres:
            if ignore_checks:
                self.lite.execute("PRAGMA ignore_check_constraints = ON")
            try:
                return self.lite.execute(sql, params).rowcount
            finally:
                if ignore_checks:
                    self.lite.execute("PRAGMA ignore_check_constraints = OFF")
        if not ignore_checks:
            return int(self.pg.execute(self._sql(sql), list(params)).rowcount)
        check = self.value("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                           "WHERE conname = ?", (PG_QUEUED_IS_CLEAN,))
        with self.pg.transaction():
            self.pg.execute(f"ALTER TABLE jobs DROP CONSTRAINT {PG_QUEUED_IS_CLEAN}")
            count = int(self.pg.execute(self._sql(sql), list(params)).rowcount)
            self.pg.execute(f"ALTER TABLE jobs ADD CONSTRAINT {PG_QUEUED_IS_CLEAN} "
                            f"{check.replace(' NOT VALID', '')} NOT VALID")
        return count

    def tables(self) -> list[str]:
        if self.postgres:
            return [r["tablename"] for r in self.rows(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "ORDER BY tablename")]
        return [r["name"] for r in self.rows(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
