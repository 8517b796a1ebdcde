"""The SQLite connection: WAL, busy timeout, foreign keys, one transaction helper.

Every write in orch goes through `Database.transaction()`: `BEGIN IMMEDIATE`
(so two ticks never both read-then-write the same rows), rollback on any
exception, and SAVEPOINTs when nested. SQL lives only in `orch.state`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orch.errors import DatabaseError, TryAgainError

BUSY_TIMEOUT_S = 10.0


class Database:
    """A connection to `orch.db` with the pragmas orch relies on."""

    def __init__(self, path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        self._depth = 0
        try:
            self.conn = sqlite3.connect(str(path), timeout=busy_timeout_s,
                                        isolation_level=None, check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self.conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise _translate(exc, path) from exc

    def close(self) -> None:
        self.conn.close()

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc

    def all(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self.execute(sql, params).fetchall()]

    def one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> dict[str, Any] | None:
        row = self.execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    def scalar(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        row = self.execute(sql, params).fetchone()
        return row[0] if row is not None else None

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """BEGIN IMMEDIATE ... COMMIT, rollback on any exception; nested calls are savepoints."""
        if self._depth:
            name = f"sp{self._depth}"
            self.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self.execute(f"ROLLBACK TO {name}")
                self.execute(f"RELEASE {name}")
                raise
            else:
                self.execute(f"RELEASE {name}")
            finally:
                self._depth -= 1
            return
        self.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
            self.execute("COMMIT")  # a failed COMMIT (busy) must not leave the transaction open
        except BaseException:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        finally:
            self._depth = 0


def _translate(exc: sqlite3.Error, path: Path) -> Exception:
    """Turn sqlite3 errors into orch errors with the exit status of SPEC section 10."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return TryAgainError(f"{path}: database is locked (another orch holds it); try again")
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError) \
            and ("not a database" in text or "malformed" in text or "disk image" in text
                 or "unable to open" in text or "readonly" in text):
        return DatabaseError(f"{path}: {text}")
    return exc
