"""The SQLite state (SPEC section 4): migrations, refusals, constraints, transactions, locks.

How the CLI reports a state file it cannot use is in tests/cli/test_cli_database.py."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.db import digest, raw

from orch.errors import DatabaseError, TryAgainError
from orch.state import counters, events, tasks
from orch.state.db import Database
from orch.state.jobs import OWNERSHIP
from orch.state.schema import MIGRATIONS, SCHEMA_VERSION, migrate, open_database
from orch.state.sqlite import SqliteDatabase

STAMP = "2026-11-25T01:02:03.456789Z"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "orch.db")
    yield database
    database.close()


def add_task(db: Database, title: str = "T") -> int:
    return tasks.insert(db, repo="app", title=title, body="", priority=0, stage="analysis")


def add_job(db: Database, task_id: int, status: str = "queued", **columns: object) -> int:
    names = ["task_id", "stage", "runner", "status", "created_at", *columns]
    values = [task_id, "analysis", "agent", status, STAMP, *columns.values()]
    marks = ", ".join("?" for _ in names)
    return db.insert(f"INSERT INTO jobs ({', '.join(names)}) VALUES ({marks}) RETURNING id",
                     values)


def schema_objects(path: Path) -> set[tuple[str, str]]:
    with raw(path) as conn:
        return {(row["type"], row["name"]) for row in conn.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")}


# ---------------------------------------------------------------- migrations

def build_old_database(path: Path, version: int) -> None:
    """The file an older orch left: the first `version` migrations, with some rows."""
    conn = sqlite3.connect(str(path))
    for script in MIGRATIONS[:version]:
        conn.executescript(script)
    if version >= 1:
        conn.execute("INSERT INTO tasks (repo, title, stage, state, created_at, updated_at) "
                     "VALUES ('app', 'old task', 'review', 'active', ?, ?)", (STAMP, STAMP))
        conn.execute("INSERT INTO jobs (task_id, stage, runner, status, verdict, created_at) "
                     "VALUES (1, 'development', 'agent', 'succeeded', 'PASS', ?)", (STAMP,))
        conn.execute("INSERT INTO runs (job_id, started_at, outcome) VALUES (1, ?, 'succeeded')",
                     (STAMP,))
        conn.execute("INSERT INTO events (at, task_id, kind, detail) VALUES (?, 1, 'created', '')",
                     (STAMP,))
        conn.execute("INSERT INTO counters (name, value) VALUES ('reaped_total', 7) "
                     "ON CONFLICT(name) DO UPDATE SET value = excluded.value")  # v2 seeds it
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("version", range(SCHEMA_VERSION))
def test_every_older_schema_upgrades_and_keeps_its_rows(tmp_path: Path, version: int) -> None:
    old = tmp_path / "old.db"
    build_old_database(old, version)
    fresh = tmp_path / "fresh.db"
    open_database(fresh).close()

    db = open_database(old)
    try:
        assert db.schema_version() == SCHEMA_VERSION
        assert db.scalar("PRAGMA journal_mode") == "wal"
        if version >= 1:
            assert db.one("SELECT title, stage, state FROM tasks WHERE id = 1") == {
                "title": "old task", "stage": "review", "state": "active"}
            assert db.scalar("SELECT verdict FROM jobs WHERE id = 1") == "PASS"
            assert db.scalar("SELECT outcome FROM runs WHERE id = 1") == "succeeded"
            assert db.scalar("SELECT count(*) FROM events") == 1
            assert counters.all_counters(db)["reaped_total"] == 7
        assert {"impossible_queued_total", "reaped_total", "ticks_total",
                "claims_total"} <= set(counters.all_counters(db))
    finally:
        db.close()
    assert schema_objects(old) == schema_objects(fresh)


def test_opening_twice_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "orch.db"
    open_database(path).close()
    before = digest(path)
    db = open_database(path)
    assert migrate(db) == SCHEMA_VERSION
    db.close()
    assert digest(path) == before


def test_a_failed_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "orch.db"
    build_old_database(path, 1)
    with raw(path) as conn:  # something in the way of migration 2
        conn.execute("CREATE TABLE repo_state (x)")
    db = SqliteDatabase(path)
    try:
        with pytest.raises(sqlite3.OperationalError):
            migrate(db)
        assert db.schema_version() == 1
        assert db.scalar("SELECT count(*) FROM sqlite_master WHERE name = 'tasks_open'") == 0
        assert db.scalar("SELECT title FROM tasks") == "old task"
    finally:
        db.close()


def test_newer_schema_is_refused_by_the_core(tmp_path: Path) -> None:
    path = tmp_path / "orch.db"
    open_database(path).close()
    with raw(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(DatabaseError, match="newer") as info:
        open_database(path)
    assert info.value.exit_code == 5


# ---------------------------------------------------------------- constraints

@pytest.mark.parametrize("column", OWNERSHIP)
def test_check_constraint_rejects_a_dirty_queued_job(db: Database, column: str) -> None:
    task_id = add_task(db)
    value = 1.5 if column == "heartbeat_mono" else (STAMP if column.endswith("_at") else 1)
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        add_job(db, task_id, "queued", **{column: value})
    assert db.scalar("SELECT count(*) FROM jobs") == 0


def test_check_constraint_rejects_a_requeue_that_keeps_the_pid(db: Database) -> None:
    task_id = add_task(db)
    job_id = add_job(db, task_id, "running", pid=4242, run_id=1, started_at=STAMP)
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE jobs SET status = 'queued' WHERE id = ?", (job_id,))
    db.execute("UPDATE jobs SET status = 'queued', " + ", ".join(
        f"{column} = NULL" for column in OWNERSHIP) + " WHERE id = ?", (job_id,))
    assert db.scalar("SELECT status FROM jobs WHERE id = ?", (job_id,)) == "queued"


def test_ignore_check_constraints_lets_a_dirty_row_in(db: Database) -> None:
    """How the sanitize tests plant rows written by older versions."""
    task_id = add_task(db)
    db.execute("PRAGMA ignore_check_constraints = ON")
    try:
        job_id = add_job(db, task_id, "queued", pid=4242, boot_id="b", run_id=3)
    finally:
        db.execute("PRAGMA ignore_check_constraints = OFF")
    assert db.one("SELECT status, pid FROM jobs WHERE id = ?", (job_id,)) == {
        "status": "queued", "pid": 4242}
    with pytest.raises(sqlite3.IntegrityError):
        add_job(db, add_task(db), "queued", pid=1)


def test_status_and_state_are_checked(db: Database) -> None:
    task_id = add_task(db)
    with pytest.raises(sqlite3.IntegrityError):
        add_job(db, task_id, "sleeping")
    with pytest.raises(sqlite3.IntegrityError):
        tasks.update(db, task_id, state="asleep")


@pytest.mark.parametrize(("first", "second"), [
    ("queued", "queued"), ("queued", "running"), ("running", "running"), ("running", "queued")])
def test_one_open_job_per_task(db: Database, first: str, second: str) -> None:
    task_id = add_task(db)
    add_job(db, task_id, first, **({"pid": 1, "run_id": 1} if first == "running" else {}))
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        add_job(db, task_id, second, **({"pid": 2, "run_id": 2} if second == "running" else {}))


def test_closed_jobs_do_not_count_as_open(db: Database) -> None:
    task_id, other = add_task(db), add_task(db, "other")
    for status in ("succeeded", "failed", "cancelled"):
        add_job(db, task_id, status)
    add_job(db, task_id, "queued")
    add_job(db, other, "queued")
    assert db.scalar("SELECT count(*) FROM jobs WHERE status = 'queued'") == 2


def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        add_job(db, 999, "succeeded")


# ---------------------------------------------------------------- transactions

def count_tasks(path: Path) -> int:
    with raw(path) as conn:
        return int(conn.execute("SELECT count(*) FROM tasks").fetchone()[0])


def test_transaction_commits_what_a_second_connection_sees(db: Database) -> None:
    with db.transaction():
        add_task(db)
        events.record(db, "created", task_id=1)
        assert count_tasks(db.path) == 0  # not committed yet
    assert count_tasks(db.path) == 1


def test_transaction_rolls_back_on_exception(db: Database) -> None:
    with pytest.raises(RuntimeError, match="boom"), db.transaction():
        add_task(db)
        counters.bump(db, "ticks_total")
        raise RuntimeError("boom")
    assert count_tasks(db.path) == 0
    assert counters.all_counters(db)["ticks_total"] == 0
    with db.transaction():  # the helper is usable again
        add_task(db)
    assert count_tasks(db.path) == 1


def test_transaction_rolls_back_on_keyboard_interrupt(db: Database) -> None:
    with pytest.raises(KeyboardInterrupt), db.transaction():
        add_task(db)
        raise KeyboardInterrupt
    assert count_tasks(db.path) == 0
    assert not db.conn.in_transaction


def test_nested_transaction_is_a_savepoint(db: Database) -> None:
    with db.transaction():
        add_task(db, "outer before")
        with pytest.raises(ValueError), db.transaction():
            add_task(db, "inner")
            raise ValueError("inner only")
        with db.transaction():
            add_task(db, "second inner")
        add_task(db, "outer after")
    with raw(db.path) as conn:
        titles = [row[0] for row in conn.execute("SELECT title FROM tasks ORDER BY id")]
    assert titles == ["outer before", "second inner", "outer after"]


def test_outer_failure_rolls_back_committed_savepoints(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction():
        with db.transaction():
            add_task(db, "inner")
        raise RuntimeError("outer")
    assert count_tasks(db.path) == 0


def test_transaction_takes_the_write_lock_at_begin(db: Database) -> None:
    with db.transaction():
        other = raw(db.path)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()


def test_wal_and_pragmas(db: Database) -> None:
    with raw(db.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.scalar("PRAGMA synchronous") == 1  # NORMAL
    assert db.scalar("PRAGMA foreign_keys") == 1
    assert db.schema_version() == SCHEMA_VERSION


# ---------------------------------------------------------------- locks

def test_locked_database_is_try_again(tmp_path: Path) -> None:
    path = tmp_path / "orch.db"
    open_database(path).close()
    holder = raw(path)
    holder.execute("BEGIN IMMEDIATE")
    db = SqliteDatabase(path, busy_timeout_s=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(TryAgainError, match="locked") as info, db.transaction():
            add_task(db)
        assert info.value.exit_code == 75
        assert 0.1 < time.monotonic() - started < 5
        with pytest.raises(TryAgainError):
            add_task(db)  # a bare write outside transaction() as well
        assert db.scalar("SELECT count(*) FROM tasks") == 0  # WAL: readers are not blocked
        holder.execute("ROLLBACK")
        with db.transaction():
            add_task(db)
        assert count_tasks(path) == 1
    finally:
        db.close()
        holder.close()


