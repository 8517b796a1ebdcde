"""The PostgreSQL backend: several hosts' homes on one database (SPEC section 11).

Imported only for a `state: postgresql://...` home (a SQLite home never
imports psycopg: the import costs an idle tick about a third of its time).

Transactions run at READ COMMITTED. SQLite's `BEGIN IMMEDIATE` serializes
every write transaction; here each write transaction that decides from a
task's rows first locks that task's row (`tasks.get(..., lock=True)`, `FOR
NO KEY UPDATE`), so two hosts acting on one task take turns exactly as two
SQLite ticks do, while work on different tasks runs side by side. The serial
gate takes a per-repo advisory lock (`lock_key`); the claim never waits: it
takes its job and its run slots with `FOR UPDATE SKIP LOCKED`
(orch.state.claims). Guarded updates (`WHERE id = ? AND status = ?`) keep
their meaning: PostgreSQL re-checks the WHERE of an UPDATE on the newest row
version once the row's lock is free.

The query modules write `?` placeholders; this backend turns them into
psycopg's `%s` (outside string literals) once per statement text. Booleans
are stored as 0/1 integers and str enums as their strings, as in SQLite.
Errors become orch errors: a server that cannot be reached is
`DatabaseUnreachable` (a tick exits 75, other commands 5); a lock timeout,
deadlock or serialization failure is `TryAgainError` (75). Credentials come
from libpq (`~/.pgpass`, `PGPASSWORD`, a service file); `location` is the URL
without any password, and no message carries one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row

from orch.errors import DatabaseError, DatabaseUnreachable, TryAgainError
from orch.state.db import Database, Params

CONNECT_TIMEOUT_S = 10
LOCK_TIMEOUT_MS = 10_000  # SQLite's busy timeout, for parity: a stuck lock is exit 75
TRY_AGAIN_STATES = {"55P03": "a lock was not granted in time",
                    "40P01": "a deadlock was broken", "40001": "a serialization failure"}
# SQLSTATE classes that say the server is not there (or went away): exit 75 for a tick
UNREACHABLE_PREFIXES = ("08", "57P01", "57P02", "57P03", "53300")
_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\?|%")
_translated: dict[str, str] = {}


def redact(url: str) -> str:
    """The URL without its password (for messages, `location` and the plan's log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://(unparsable URL)"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def to_psycopg(sql: str) -> str:
    """`?` placeholders as `%s`, a literal `%` as `%%`; string literals left alone."""
    done = _translated.get(sql)
    if done is None:
        done = _PLACEHOLDER.sub(_swap, sql)
        _translated[sql] = done
    return done


def _swap(match: re.Match[str]) -> str:
    text = match.group(0)
    if text == "?":
        return "%s"
    if text == "%":
        return "%%"
    return text.replace("%", "%%")  # a literal keeps its characters


def _stored(params: Params) -> Params:
    """Values as the database stores them: bool as 0/1, str enums as plain str."""
    for value in params:
        if isinstance(value, bool) or (isinstance(value, str) and type(value) is not str):
            return [int(v) if isinstance(v, bool) else str(v) if isinstance(v, str) else v
                    for v in params]
    return params


class PostgresDatabase(Database):
    """A connection to a PostgreSQL database shared by the homes of several hosts."""

    dialect = "postgres"
    multi_host = True
    row_lock = " FOR NO KEY UPDATE"
    now_sql = ("to_char(now() AT TIME ZONE 'UTC', "
               "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.location = redact(url)
        try:
            self.conn = psycopg.connect(
                url, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S,
                application_name="orch",
                options=f"-c lock_timeout={LOCK_TIMEOUT_MS} -c TimeZone=UTC")
        except psycopg.Error as exc:
            raise translate(exc, self.location) from exc

    def close(self) -> None:
        try:
            self.conn.close()
        except psycopg.Error:
            pass

    def _run(self, sql: str, params: Params) -> psycopg.Cursor[Any]:
        try:
            return self.conn.execute(to_psycopg(sql), _stored(params))  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise translate(exc, self.location) from exc

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._run(sql, params).rowcount

    def all(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        cursor = self._run(sql, params)
        try:
            return cursor.fetchall() if cursor.description else []
        except psycopg.Error as exc:
            raise translate(exc, self.location) from exc

    def script(self, sql: str) -> None:
        """Run several statements at once (DDL of a migration); no placeholders."""
        try:
            self.conn.execute(sql.encode())  # bytes: sent as a simple query, several at once
        except psycopg.Error as exc:
            raise translate(exc, self.location) from exc

    def _begin(self) -> None:
        self.execute("BEGIN ISOLATION LEVEL READ COMMITTED")

    def _commit(self) -> None:
        self.execute("COMMIT")

    def _rollback(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except psycopg.Error:
            pass  # the connection is broken: the server rolls back on its own

    # -- what differs from SQLite ------------------------------------------------

    def lock_key(self, name: str) -> None:
        """An advisory lock on NAME until the transaction ends (the serial gate's per-repo
        turn); other names go on in parallel."""
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (name,))

    def age_sql(self, column: str) -> str:
        return f"extract(epoch from (now() - ({column})::timestamptz))"

    def schema_version(self) -> int:
        if self.scalar("SELECT to_regclass('orch_schema') IS NOT NULL") is not True:
            return 0
        return int(self.scalar("SELECT version FROM orch_schema") or 0)

    def set_schema_version(self, version: int) -> None:
        self.execute("CREATE TABLE IF NOT EXISTS orch_schema (version integer NOT NULL, "
                     "moved_to text)")
        if not self.execute("UPDATE orch_schema SET version = ?", (int(version),)):
            self.execute("INSERT INTO orch_schema (version) VALUES (?)", (int(version),))

    def moved_to(self) -> str | None:
        if self.scalar("SELECT to_regclass('orch_schema') IS NOT NULL") is not True:
            return None
        value = self.scalar("SELECT moved_to FROM orch_schema")
        return None if value is None else str(value)

    def set_moved_to(self, location: str) -> None:
        self.execute("UPDATE orch_schema SET moved_to = ?", (location,))

    def health_problems(self) -> list[str]:
        """What the server says is wrong: none once a query answers (PostgreSQL checks its
        own pages); invalid indexes (a failed concurrent build) are reported."""
        rows = self.all("SELECT c.relname AS name FROM pg_index i JOIN pg_class c "
                        "ON c.oid = i.indexrelid WHERE NOT i.indisvalid")
        return [f"index {row['name']} is invalid (REINDEX it)" for row in rows]

    def table_names(self) -> list[str]:
        return [str(row["name"]) for row in self.all(
            "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema() "
            "ORDER BY tablename")]

    def columns(self, table: str) -> list[str]:
        return [str(row["name"]) for row in self.all(
            "SELECT column_name AS name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table,))]

    def insert_many(self, table: str, columns: Sequence[str],
                    rows: Sequence[Sequence[Any]]) -> None:
        """COPY ... FROM STDIN: a history of a million rows copies in seconds."""
        try:
            with self.conn.cursor() as cursor, \
                    cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(_stored(row))
        except psycopg.Error as exc:
            raise translate(exc, self.location) from exc

    def lock_for_copy(self, tables: Sequence[str]) -> None:
        """Every host's writes wait until the copy ends; reads go on."""
        self.execute(f"LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE")

    def set_sequence_past(self, table: str) -> None:
        """After rows were copied with their ids: the table's id sequence continues past them."""
        self.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                     f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)")


def translate(exc: psycopg.Error, location: str) -> Exception:
    """psycopg errors as orch errors with the exit status of SPEC section 10."""
    state = getattr(exc, "sqlstate", None) or ""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if state in TRY_AGAIN_STATES:
        return TryAgainError(f"{location}: {TRY_AGAIN_STATES[state]} ({first}); try again")
    if state.startswith(UNREACHABLE_PREFIXES) or (
            not state and isinstance(exc, psycopg.OperationalError)):
        return DatabaseUnreachable(f"{location}: cannot reach the database: {first}")
    if state.startswith("28") or state == "3D000":  # authentication, no such database
        return DatabaseError(f"{location}: {first}")
    return exc
