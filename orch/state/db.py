"""The door to the state: one connection interface that every backend implements.

The query modules of `orch.state` (tasks, jobs, runs, events, counters,
repos, views, maint) speak to a `Database` only through this interface, in
SQL that SQLite and PostgreSQL both understand (`?` placeholders, which a
backend may translate; `INSERT ... RETURNING id`; partial indexes;
`ON CONFLICT`). Where the two must differ (the claim's locking, pragmas,
backups, health checks) the backend says which `dialect` it is, or offers
the operation itself: `orch.state.sqlite.SqliteDatabase` and
`orch.state.postgres.PostgresDatabase` (several hosts, SPEC section 11).

Every write goes through `transaction()`: the backend's "take the write
lock now" begin (`BEGIN IMMEDIATE` on SQLite), rollback on any exception,
SAVEPOINTs when nested, so a change, its event and its counter commit
together. SQL lives only in `orch.state`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

Params = Sequence[Any]


class Database(ABC):
    """A connection to the state, with the transaction discipline orch relies on."""

    dialect: str = ""
    location: str = ""  # the file or URL, for messages (never a password)
    host = ""          # this home's host name (PostgreSQL keeps counters per host)
    multi_host = False  # can several hosts share it (PostgreSQL), or is it one home's file
    row_lock = ""       # appended to a SELECT that must lock its rows (PostgreSQL)
    # the database's clock as an ISO-8601 string (the hosts' heartbeat is on it)
    now_sql = "strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'"

    def __init__(self) -> None:
        self._depth = 0

    # -- statements -----------------------------------------------------------

    @abstractmethod
    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""

    @abstractmethod
    def all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        """Every row of a query, each as a dict keyed by column name."""

    def one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Params = ()) -> Any:
        row = self.one(sql, params)
        return next(iter(row.values())) if row else None

    def insert(self, sql: str, params: Params = ()) -> int:
        """Run an `INSERT ... RETURNING id` and return the new row's id."""
        return int(self.scalar(sql, params))

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    # -- transactions ---------------------------------------------------------

    @abstractmethod
    def _begin(self) -> None:
        """Start a transaction that holds the write lock from its first statement."""

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _rollback(self) -> None:
        """Roll back; never raises (the connection may already be broken)."""

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Begin ... commit, rollback on any exception; nested calls are savepoints."""
        if self._depth:
            yield from self._savepoint()
            return
        self._begin()
        self._depth = 1
        try:
            yield self
            self._commit()  # a failed commit (busy) must not leave the transaction open
        except BaseException:
            self._rollback()
            raise
        finally:
            self._depth = 0

    def _savepoint(self) -> Iterator[Database]:
        name = f"sp{self._depth}"
        self.execute(f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield self
        except BaseException:
            self.execute(f"ROLLBACK TO SAVEPOINT {name}")
            self.execute(f"RELEASE SAVEPOINT {name}")
            raise
        else:
            self.execute(f"RELEASE SAVEPOINT {name}")
        finally:
            self._depth -= 1

    # -- what differs between backends ----------------------------------------

    @abstractmethod
    def schema_version(self) -> int:
        """The version of the schema the database holds (0: empty)."""

    @abstractmethod
    def set_schema_version(self, version: int) -> None:
        """Record the schema version, inside the migration's transaction."""

    def prepare(self) -> None:  # noqa: B027 (a hook most backends leave empty)
        """Settings the backend needs before any migration (SQLite: WAL)."""

    @abstractmethod
    def health_problems(self) -> list[str]:
        """What an integrity check finds; an empty list when the state is sound."""

    def lock_key(self, name: str) -> None:  # noqa: B027 (SQLite: BEGIN IMMEDIATE is enough)
        """Inside a transaction: take a lock named NAME until it ends, so transactions
        about the same thing (one repo's serial gate) take turns."""

    def age_sql(self, column: str) -> str:
        """SQL for the seconds between an ISO-8601 text COLUMN and the database's clock."""
        return f"((julianday('now') - julianday({column})) * 86400.0)"

    def moved_to(self) -> str | None:
        """Where `orch state migrate` moved this state, if it did (then it is not used)."""
        return None

    def set_moved_to(self, location: str) -> None:
        """Mark the state as moved to LOCATION (inside the migration's transaction)."""
        raise NotImplementedError

    def script(self, sql: str) -> None:
        """Run a migration's statements, separated by ';' (no placeholders)."""
        for statement in (part.strip() for part in sql.split(";")):
            if statement:
                self.execute(statement)

    def table_names(self) -> list[str]:
        """Every table of orch's schema."""
        raise NotImplementedError

    # -- copying a whole state (orch state migrate) ---------------------------------

    def columns(self, table: str) -> list[str]:
        """The columns of TABLE, in table order."""
        raise NotImplementedError

    def insert_many(self, table: str, columns: Sequence[str],
                    rows: Sequence[Sequence[Any]]) -> None:
        """Insert ROWS (values in COLUMNS' order) as they are, ids included."""
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        for row in rows:
            self.execute(sql, row)

    def lock_for_copy(self, tables: Sequence[str]) -> None:  # noqa: B027 (SQLite: BEGIN IMMEDIATE)
        """Inside a transaction: no other writer until it ends (reads go on)."""

    def set_sequence_past(self, table: str) -> None:  # noqa: B027 (SQLite's AUTOINCREMENT does)
        """After rows were copied with their ids: new rows get ids past them."""
