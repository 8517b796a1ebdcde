"""Task rows: insert, read, and guarded updates (each caller records its event)."""

from __future__ import annotations

from typing import Any

from orch.model import HoldKind, TaskState
from orch.state.db import Database
from orch.state.records import Task, tasks_of
from orch.timeutil import now_iso

TASK_COLUMNS = Task.columns()
_UPDATABLE = frozenset(TASK_COLUMNS) - {"id", "created_at", "updated_at"}


def insert(db: Database, *, repo: str, title: str, body: str, priority: int, stage: str,
           state: str = TaskState.WAITING, at: str | None = None) -> int:
    stamp = at or now_iso()
    return db.insert(
        "INSERT INTO tasks (repo, title, body, priority, stage, state, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (repo, title, body, priority, stage, str(state), stamp, stamp))


def get(db: Database, task_id: int, *, lock: bool = False) -> Task | None:
    """A task; with LOCK (inside a write transaction) its row is locked until the
    transaction ends, so that transactions about one task take turns on PostgreSQL
    (SQLite's BEGIN IMMEDIATE already serializes them all)."""
    row = db.one("SELECT * FROM tasks WHERE id = ?" + (db.row_lock if lock else ""), (task_id,))
    return Task.from_row(row) if row else None


def lock_of_job(db: Database, job_id: int) -> Task | None:
    """The task of a job, its row locked (see `get`): taken before the job is re-read, so
    a write transaction always locks the task first and the job second."""
    row = db.one("SELECT * FROM tasks WHERE id = (SELECT task_id FROM jobs WHERE id = ?)"
                 + db.row_lock, (job_id,))
    return Task.from_row(row) if row else None


def _stored(value: Any) -> Any:
    """A value as the database stores it: enums as strings, booleans as 0/1."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return str(value)
    return value


def update(db: Database, task_id: int, expect: dict[str, Any] | None = None,
           **changes: Any) -> bool:
    """Set columns on one task, guarded by `expect` (column: value); True if a row changed."""
    for column in changes:
        if column not in _UPDATABLE:
            raise ValueError(f"not an updatable task column: {column}")
    sets = ", ".join(f"{column} = ?" for column in changes)
    params: list[Any] = [*(_stored(v) for v in changes.values()), now_iso(), task_id]
    where = "id = ?"
    for column, value in (expect or {}).items():
        if column not in TASK_COLUMNS:
            raise ValueError(f"not a task column: {column}")
        if value is None:
            where += f" AND {column} IS NULL"
        else:
            where += f" AND {column} = ?"
            params.append(_stored(value))
    return db.execute(f"UPDATE tasks SET {sets}, updated_at = ? WHERE {where}", params) == 1


def pinned_to(db: Database, hosts: list[str]) -> list[Task]:
    """Open tasks pinned to one of HOSTS."""
    if not hosts:
        return []
    marks = ", ".join("?" for _ in hosts)
    return tasks_of(db.all(f"SELECT * FROM tasks WHERE state != 'closed' AND host IN ({marks}) "
                           "ORDER BY id", hosts))


def open_tasks(db: Database, repo: str | None = None) -> list[Task]:
    """Non-terminal tasks in FIFO order (priority descending, then id)."""
    if repo is None:
        return tasks_of(db.all("SELECT * FROM tasks WHERE state != 'closed' "
                               "ORDER BY repo, priority DESC, id"))
    return tasks_of(db.all("SELECT * FROM tasks WHERE state != 'closed' AND repo = ? "
                           "ORDER BY priority DESC, id", (repo,)))


def all_tasks(db: Database, repo: str | None = None, limit: int | None = None) -> list[Task]:
    sql = "SELECT * FROM tasks"
    params: list[Any] = []
    if repo is not None:
        sql += " WHERE repo = ?"
        params.append(repo)
    sql += " ORDER BY id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return tasks_of(db.all(sql, params))


def ids_exist(db: Database, ids: list[int]) -> set[int]:
    if not ids:
        return set()
    marks = ", ".join("?" for _ in ids)
    return {int(row["id"]) for row in db.all(f"SELECT id FROM tasks WHERE id IN ({marks})", ids)}


def open_repos(db: Database) -> set[str]:
    """Repos that have non-terminal tasks."""
    rows = db.all("SELECT DISTINCT repo FROM tasks WHERE state != 'closed'")
    return {row["repo"] for row in rows}


def held_of_kind(db: Database, kind: HoldKind) -> list[Task]:
    """Held tasks whose hold is of this kind (e.g. the day budget)."""
    return tasks_of(db.all("SELECT * FROM tasks WHERE state = 'held' AND hold_kind = ? "
                           "ORDER BY id", (str(kind),)))
