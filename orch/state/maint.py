"""SQL for the maintenance commands: metrics, gc and snapshot.

Metrics read only open tasks (through the partial index `tasks_open`, by
keeping `state != 'closed'` in every WHERE) and the counters table, so their
cost does not grow with history. gc deletes old events and runs of closed
tasks; its tombstone is one `gc` event per collected task, which no pruning
ever removes, so a second gc skips what the first one finished.
"""

from __future__ import annotations

from typing import Any

from orch.state.db import Database
from orch.state.records import Task, tasks_of

GC_EVENT = "gc"


# --------------------------------------------------------------------------- metrics


def open_task_counts(db: Database) -> list[dict[str, Any]]:
    """(stage, state, n) for the open tasks only (partial index `tasks_open`)."""
    return db.all("SELECT stage, state, count(*) AS n FROM tasks WHERE state != 'closed' "
                  "GROUP BY stage, state ORDER BY stage, state")


def open_task_counts_by_repo(db: Database) -> list[dict[str, Any]]:
    """(repo, state, n) for the open tasks only (partial index `tasks_open`)."""
    return db.all("SELECT repo, state, count(*) AS n FROM tasks WHERE state != 'closed' "
                  "GROUP BY repo, state ORDER BY repo, state")


def oldest_waiting_since(db: Database) -> str | None:
    """The oldest `updated_at` among tasks waiting for a serial-gate slot, or None."""
    value = db.scalar("SELECT min(updated_at) FROM tasks "
                      "WHERE state != 'closed' AND state = 'waiting'")
    return None if value is None else str(value)


# --------------------------------------------------------------------------- gc


def gc_candidates(db: Database, cutoff: str) -> list[Task]:
    """Closed tasks last changed before CUTOFF that gc has not finished with yet.

    A full scan of `tasks` (gc is not on the tick's path); the NOT EXISTS uses
    the `events_task` index.
    """
    return tasks_of(db.all(
        "SELECT * FROM tasks WHERE state = 'closed' AND updated_at < ? "
        "AND NOT EXISTS (SELECT 1 FROM events WHERE events.task_id = tasks.id "
        "AND events.kind = ?) ORDER BY id", (cutoff, GC_EVENT)))


def count_task_history(db: Database, task_id: int, cutoff: str) -> tuple[int, int]:
    """(events, runs) of a task that `prune_task_history` would delete."""
    events = int(db.scalar("SELECT count(*) FROM events WHERE task_id = ? AND at < ? "
                           "AND kind != ?", (task_id, cutoff, GC_EVENT)))
    runs = int(db.scalar("SELECT count(*) FROM runs WHERE started_at < ? AND job_id IN "
                         "(SELECT id FROM jobs WHERE task_id = ?)", (cutoff, task_id)))
    return events, runs


def prune_task_history(db: Database, task_id: int, cutoff: str) -> tuple[int, int]:
    """Delete a closed task's events and runs older than CUTOFF; (events, runs) deleted.

    Refuses (returns (0, 0)) unless the task is closed and has no open job,
    checked inside the caller's transaction. Jobs rows are kept: they are the
    task's summary, and their ids name the log files a later gc may still
    have to remove.
    """
    if db.scalar("SELECT 1 FROM tasks WHERE id = ? AND state = 'closed' AND NOT EXISTS "
                 "(SELECT 1 FROM jobs WHERE task_id = tasks.id "
                 "AND status IN ('queued', 'running'))", (task_id,)) is None:
        return 0, 0
    events = db.execute("DELETE FROM events WHERE task_id = ? AND at < ? AND kind != ?",
                        (task_id, cutoff, GC_EVENT))
    runs = db.execute("DELETE FROM runs WHERE started_at < ? AND job_id IN "
                      "(SELECT id FROM jobs WHERE task_id = ?)", (cutoff, task_id))
    return int(events), int(runs)


def count_global_events(db: Database, cutoff: str) -> int:
    return int(db.scalar("SELECT count(*) FROM events WHERE task_id IS NULL AND at < ? "
                         "AND kind != ?", (cutoff, GC_EVENT)))


def prune_global_events(db: Database, cutoff: str) -> int:
    """Delete events of no task (freeze, unfreeze) older than CUTOFF."""
    return db.execute("DELETE FROM events WHERE task_id IS NULL AND at < ? AND kind != ?",
                      (cutoff, GC_EVENT))


def job_ids(db: Database, task_id: int) -> list[int]:
    return [int(row["id"]) for row in db.all("SELECT id FROM jobs WHERE task_id = ? ORDER BY id",
                                             (task_id,))]


def has_open_job(db: Database, task_id: int) -> bool:
    return db.scalar("SELECT 1 FROM jobs WHERE task_id = ? AND status IN ('queued', 'running') "
                     "LIMIT 1", (task_id,)) is not None
