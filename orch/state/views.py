"""Read-only queries for `orch queue` and `orch logs` (SPEC section 9).

Each query reads open work only, through the partial indexes (`tasks_open`,
`jobs_queued`, `jobs_running`, `jobs_unjudged`, `runs_job`), so inspecting the
queue costs the same after a year of closed history as on the first day.
"""

from __future__ import annotations

from typing import Any

from orch.state.db import Database

_OPEN_WORK_JOBS = (
    "SELECT * FROM jobs WHERE status = 'queued' "
    "UNION ALL SELECT * FROM jobs WHERE status = 'running' "
    "UNION ALL SELECT * FROM jobs WHERE judged = 0 "
    "AND status IN ('succeeded', 'failed', 'cancelled')")


def open_work_jobs(db: Database) -> list[dict[str, Any]]:
    """Queued and running jobs, and finished ones not judged yet (at most one per task
    is queued or running; the unjudged one, if any, is the task's latest)."""
    return db.all(f"SELECT * FROM ({_OPEN_WORK_JOBS}) ORDER BY id")


def running_jobs(db: Database) -> list[dict[str, Any]]:
    """Running jobs with their task's repo, oldest job first."""
    return db.all("SELECT jobs.*, tasks.repo AS repo FROM jobs "
                  "JOIN tasks ON tasks.id = jobs.task_id "
                  "WHERE jobs.status = 'running' ORDER BY jobs.id")


def job_run(db: Database, job_id: int, run_id: int | None = None) -> dict[str, Any] | None:
    """One run of a job: `run_id`, or the newest; None when there is no such run."""
    if run_id is not None:
        return db.one("SELECT * FROM runs WHERE id = ? AND job_id = ?", (run_id, job_id))
    return db.one("SELECT * FROM runs WHERE job_id = ? ORDER BY id DESC LIMIT 1", (job_id,))


def latest_task_event(db: Database, task_id: int, kind: str) -> dict[str, Any] | None:
    """A task's newest event of one kind (through the `events_task` index)."""
    return db.one("SELECT * FROM events WHERE task_id = ? AND kind = ? "
                  "ORDER BY id DESC LIMIT 1", (task_id, kind))
