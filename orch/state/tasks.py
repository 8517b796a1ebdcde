"""Task rows: insert, read, and guarded updates (each caller records its event)."""

from __future__ import annotations

from typing import Any

from orch.model import HoldKind, TaskState
from orch.state.db import Database
from orch.state.records import Task, tasks_of
from orch.timeutil import now_iso

TASK_COLUMNS = Task.columns()
_UPDATABLE = frozenset(TASK_COLUMNS) - {"id", "created_at", "updated_at", "moved_at"}


def insert(db: Database, *, repo: str, title: str, body: str, priority: int, stage: str,
           state: str = TaskState.WAITING, at: str | None = None) -> int:
    stamp = at or now_iso()
    return db.insert(
        "INSERT INTO tasks (repo, title, body, priority, stage, state, created_at, updated_at, "
        "moved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (repo, title, body, priority, stage, str(state), stamp, stamp, stamp))


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
    changes = dict(changes)
    stamp = now_iso()
    if "stage" in changes or "state" in changes:
        changes["moved_at"] = stamp
    sets = ", ".join(f"{column} = ?" for column in changes)
    params: list[Any] = [*(_stored(v) for v in changes.values()), stamp, task_id]
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


def count_closed(db: Database, repo: str | None = None, stage: str | None = None) -> int:
    """How many closed tasks there are (of REPO, at STAGE): what `orch task list` hides."""
    sql = "SELECT count(*) FROM tasks WHERE state = 'closed'"
    params: list[Any] = []
    for column, value in (("repo", repo), ("stage", stage)):
        if value is not None:
            sql += f" AND {column} = ?"
            params.append(value)
    return int(db.scalar(sql, params) or 0)


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


def admitted_paused(db: Database, repo: str | None = None) -> list[Task]:
    """Admitted tasks that are paused: the slots a tick may release (partial index)."""
    sql = "SELECT * FROM tasks WHERE admitted = 1 AND paused_at IS NOT NULL"
    if repo is None:
        return tasks_of(db.all(sql + " ORDER BY id"))
    return tasks_of(db.all(sql + " AND repo = ? ORDER BY id", (repo,)))


def slot_holders_by_repo(db: Database, repo: str | None = None) -> dict[str, int]:
    """{repo: admitted open tasks}: the serial gate's used slots (partial index on the
    admitted tasks, so bounded by the slots, not by the waiting tasks)."""
    sql = "SELECT repo, count(*) AS n FROM tasks WHERE admitted = 1 AND state != 'closed'"
    rows = db.all(sql + " GROUP BY repo") if repo is None else \
        db.all(sql + " AND repo = ? GROUP BY repo", (repo,))
    return {row["repo"]: int(row["n"]) for row in rows}


def waiting_in_fifo(db: Database, repo: str, limit: int | None,
                    host: str | None = None) -> list[Task]:
    """The first `limit` unpaused waiting tasks of a repo in FIFO order (priority
    descending, then id), read through the partial index `tasks_waiting`; with HOST (a
    state shared by several hosts) only those unpinned or pinned to it."""
    sql = "SELECT * FROM tasks WHERE state = 'waiting' AND paused_at IS NULL AND repo = ?"
    params: tuple[Any, ...] = (repo,)
    if host is not None:
        sql += " AND (host IS NULL OR host = ?)"
        params += (host,)
    sql += " ORDER BY priority DESC, id"
    if limit is None:
        return tasks_of(db.all(sql, params))
    return tasks_of(db.all(sql + " LIMIT ?", (*params, limit)))


def at_stages_not_in(db: Database, stages: tuple[str, ...], states: tuple[str, ...]
                     ) -> list[Task]:
    """Tasks in one of `states` whose stage is none of `stages` (a pipeline edit)."""
    stage_marks = ", ".join("?" for _ in stages) or "NULL"
    state_marks = ", ".join("?" for _ in states)
    rows = db.all(f"SELECT * FROM tasks WHERE state != 'closed' AND state IN ({state_marks}) "
                  f"AND stage NOT IN ({stage_marks})", (*(str(s) for s in states), *stages))
    return sorted(tasks_of(rows), key=lambda task: task.id)


def repos_with_admitted(db: Database) -> set[str]:
    """Repos that have admitted tasks (the serial gate's holders: few rows)."""
    return {row["repo"] for row in db.all("SELECT DISTINCT repo FROM tasks WHERE admitted = 1")}
