"""The SQLite backend: one file in the home, WAL, busy timeout, foreign keys.

`BEGIN IMMEDIATE` takes the write lock at the start of every transaction,
so two ticks never both read-then-write the same rows. sqlite3 errors become
orch errors with the exit status of SPEC section 10 (locked: 75, corrupt or
unreadable: 5).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orch.errors import DatabaseError, TryAgainError
from orch.state.db import Database, Params

BUSY_TIMEOUT_S = 10.0
INTEGRITY_REPORT_LINES = 5


class SqliteDatabase(Database):
    """A connection to `orch.db` with the pragmas orch relies on."""

    dialect = "sqlite"

    def __init__(self, path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        super().__init__()
        self.path = path
        self.location = str(path)
        try:
            self.conn = sqlite3.connect(str(path), timeout=busy_timeout_s,
                                        isolation_level=None, check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self.conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise translate(exc, path) from exc

    def close(self) -> None:
        self.conn.close()

    def _cursor(self, sql: str, params: Params) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._cursor(sql, params).rowcount

    def all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        try:
            return [dict(row) for row in self._cursor(sql, params).fetchall()]
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    def scalar(self, sql: str, params: Params = ()) -> Any:
        try:
            row = self._cursor(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
        return row[0] if row is not None else None

    def _begin(self) -> None:
        self.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self.execute("COMMIT")

    def _rollback(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # nothing to roll back (a failed BEGIN) or the file is gone

    # -- SQLite's own questions ---------------------------------------------------

    def schema_version(self) -> int:
        return int(self.scalar("PRAGMA user_version"))

    def set_schema_version(self, version: int) -> None:
        self.execute(f"PRAGMA user_version = {int(version)}")

    def journal_mode(self) -> str:
        return str(self.scalar("PRAGMA journal_mode")).lower()

    def prepare(self) -> None:
        self.ensure_wal()

    def ensure_wal(self) -> None:
        """Every file runs in WAL, including one made by an older orch or by hand."""
        if self.journal_mode() != "wal":
            self.execute("PRAGMA journal_mode = WAL")

    def health_problems(self) -> list[str]:
        rows = self._cursor(f"PRAGMA integrity_check({INTEGRITY_REPORT_LINES})", ()).fetchall()
        lines = [str(row[0]) for row in rows]
        return [] if lines == ["ok"] else lines

    def moved_to(self) -> str | None:
        value = self.scalar("SELECT value FROM meta WHERE key = 'moved_to'") \
            if self.has_table("meta") else None
        return None if value is None else str(value)

    def set_moved_to(self, location: str) -> None:
        self.execute("INSERT INTO meta (key, value) VALUES ('moved_to', ?) "
                     "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (location,))

    def table_names(self) -> list[str]:
        return [str(row["name"]) for row in self.all(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]

    def columns(self, table: str) -> list[str]:
        return [str(row["name"]) for row in self.all(f"PRAGMA table_info({table})")]

    def insert_many(self, table: str, columns: Sequence[str],
                    rows: Sequence[Sequence[Any]]) -> None:
        marks = ", ".join("?" for _ in columns)
        try:
            self.conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) "
                                  f"VALUES ({marks})", rows)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    def has_table(self, name: str) -> bool:
        return self.scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                           (name,)) is not None

    def backup_to(self, target: Path) -> int:
        """Copy the database into the new file TARGET with SQLite's online backup API.

        The copy is one consistent read (writers in WAL mode are not blocked),
        switched to a rollback journal so it is one self-contained file.
        Returns the copy's schema version.
        """
        copy = sqlite3.connect(str(target), isolation_level=None)
        try:
            self.conn.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")
            return int(copy.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
        finally:
            copy.close()


def translate(exc: sqlite3.Error, path: Path) -> Exception:
    """Turn sqlite3 errors into orch errors with the exit status of SPEC section 10."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return TryAgainError(f"{path}: database is locked (another orch holds it); try again")
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError) \
            and ("not a database" in text or "malformed" in text or "disk image" in text
                 or "unable to open" in text or "readonly" in text):
        return DatabaseError(f"{path}: {text}")
    return exc
