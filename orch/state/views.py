"""Read-only queries for `orch queue` and `orch logs` (SPEC section 9).

Each query reads open work only, through the partial indexes (`tasks_open`,
`jobs_queued`, `jobs_running`, `jobs_unjudged`, `runs_job`), so inspecting the
queue costs the same after a year of closed history as on the first day.
"""

from __future__ import annotations

from orch.state.db import Database
from orch.state.records import Job, Run, jobs_of

_OPEN_WORK_JOBS = (
    "SELECT * FROM jobs WHERE status = 'queued' "
    "UNION ALL SELECT * FROM jobs WHERE status = 'running' "
    "UNION ALL SELECT * FROM jobs WHERE judged = 0 "
    "AND status IN ('succeeded', 'failed', 'cancelled')")


def open_work_jobs(db: Database) -> list[Job]:
    """Queued and running jobs, and finished ones not judged yet (at most one per task
    is queued or running; the unjudged one, if any, is the task's latest)."""
    return jobs_of(db.all(f"SELECT * FROM ({_OPEN_WORK_JOBS}) AS open_work ORDER BY id"))


def running_jobs(db: Database) -> list[tuple[Job, str]]:
    """Running jobs with their task's repo, oldest job first."""
    rows = db.all("SELECT jobs.*, tasks.repo AS task_repo FROM jobs "
                  "JOIN tasks ON tasks.id = jobs.task_id "
                  "WHERE jobs.status = 'running' ORDER BY jobs.id")
    return [(Job.from_row(row), str(row["task_repo"])) for row in rows]


def job_run(db: Database, job_id: int, run_id: int | None = None) -> Run | None:
    """One run of a job: `run_id`, or the newest; None when there is no such run."""
    if run_id is not None:
        row = db.one("SELECT * FROM runs WHERE id = ? AND job_id = ?", (run_id, job_id))
    else:
        row = db.one("SELECT * FROM runs WHERE job_id = ? ORDER BY id DESC LIMIT 1", (job_id,))
    return Run.from_row(row) if row else None
