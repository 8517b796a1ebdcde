"""Job and run rows: enqueue, claim, heartbeat, finish, requeue, sanitize.

Every path back to `queued` clears the run-ownership columns of invariant 1
in the same UPDATE (`_CLEAR_OWNERSHIP`). Every write made on behalf of a run
is fenced by `run_id`, so a run that was reaped but still lives cannot touch
the state of a newer run of the same job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orch.state.db import Database
from orch.timeutil import now_iso

OWNERSHIP = ("run_id", "pid", "pid_started", "boot_id", "started_at", "heartbeat_at",
             "heartbeat_mono")
_CLEAR_OWNERSHIP = ", ".join(f"{column} = NULL" for column in OWNERSHIP)


@dataclass(frozen=True)
class Owner:
    """Who runs a claimed job: a tick (inline) or, later, a supervisor."""

    pid: int
    pid_started: int | None
    host: str
    boot_id: str
    mono: float


def enqueue(db: Database, task_id: int, stage: str, runner: str, *, attempt: int = 1,
            not_before: str | None = None) -> int:
    cursor = db.execute(
        "INSERT INTO jobs (task_id, stage, runner, status, attempt, defers, not_before, "
        "created_at) VALUES (?, ?, ?, 'queued', ?, 0, ?, ?)",
        (task_id, stage, runner, attempt, not_before, now_iso()))
    return int(cursor.lastrowid or 0)


def get(db: Database, job_id: int) -> dict[str, Any] | None:
    return db.one("SELECT * FROM jobs WHERE id = ?", (job_id,))


def open_job(db: Database, task_id: int) -> dict[str, Any] | None:
    return db.one("SELECT * FROM jobs WHERE task_id = ? AND status IN ('queued', 'running')",
                  (task_id,))


def latest_job(db: Database, task_id: int) -> dict[str, Any] | None:
    return db.one("SELECT * FROM jobs WHERE task_id = ? ORDER BY id DESC LIMIT 1", (task_id,))


def for_task(db: Database, task_id: int) -> list[dict[str, Any]]:
    return db.all("SELECT * FROM jobs WHERE task_id = ? ORDER BY id", (task_id,))


def runs_for_task(db: Database, task_id: int) -> list[dict[str, Any]]:
    return db.all("SELECT runs.* FROM runs JOIN jobs ON jobs.id = runs.job_id "
                  "WHERE jobs.task_id = ? ORDER BY runs.id", (task_id,))


def runs_for_job(db: Database, job_id: int) -> list[dict[str, Any]]:
    return db.all("SELECT * FROM runs WHERE job_id = ? ORDER BY id", (job_id,))


def get_run(db: Database, run_id: int) -> dict[str, Any] | None:
    return db.one("SELECT * FROM runs WHERE id = ?", (run_id,))


def running(db: Database) -> list[dict[str, Any]]:
    return db.all("SELECT * FROM jobs WHERE status = 'running' ORDER BY id")


def running_count(db: Database) -> int:
    return int(db.scalar("SELECT count(*) FROM jobs WHERE status = 'running'"))


def unjudged(db: Database) -> list[dict[str, Any]]:
    """Finished jobs whose latest run has not been judged yet."""
    return db.all("SELECT * FROM jobs WHERE judged = 0 "
                  "AND status IN ('succeeded', 'failed', 'cancelled') ORDER BY id")


def queued_count(db: Database) -> int:
    return int(db.scalar("SELECT count(*) FROM jobs WHERE status = 'queued'"))


def claim_next(db: Database, *, now: str, max_concurrency: int, owner: Owner,
               log_dir: str, exclude_repos: tuple[str, ...] = (),
               runnable_at: str | None = None
               ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Claim the next runnable job in one BEGIN IMMEDIATE transaction.

    Picks by task priority then job id among queued jobs whose `not_before`
    has passed and whose task is active and not paused, checks
    `max_concurrency`, flips queued -> running guarded by status, and creates
    the run whose id becomes `run_id`. Returns (job, run) or None.
    `runnable_at` (default `now`) is the time `not_before` must have passed:
    the tick passes its start time, so a job requeued during the tick waits
    for the next one.
    """
    with db.transaction():
        if running_count(db) >= max_concurrency:
            return None
        skip = "".join(" AND tasks.repo != ?" for _ in exclude_repos)
        job = db.one(
            "SELECT jobs.* FROM jobs JOIN tasks ON tasks.id = jobs.task_id "
            "WHERE jobs.status = 'queued' AND (jobs.not_before IS NULL OR jobs.not_before <= ?) "
            f"AND tasks.state = 'active' AND tasks.admitted = 1 AND tasks.paused_at IS NULL{skip} "
            "ORDER BY tasks.priority DESC, jobs.id LIMIT 1",
            (runnable_at or now, *exclude_repos))
        if job is None:
            return None
        cursor = db.execute(
            "INSERT INTO runs (job_id, started_at, attempt) VALUES (?, ?, ?)",
            (job["id"], now, job["attempt"]))
        run_id = int(cursor.lastrowid or 0)
        log_path = f"{log_dir}/job-{job['id']}-run-{run_id}.log"
        db.execute("UPDATE runs SET log_path = ? WHERE id = ?", (log_path, run_id))
        flipped = db.execute(
            "UPDATE jobs SET status = 'running', run_id = ?, pid = ?, pid_started = ?, host = ?, "
            "boot_id = ?, started_at = ?, heartbeat_at = ?, heartbeat_mono = ?, "
            "finished_at = NULL, exit_code = NULL, error = NULL, judged = 1 "
            "WHERE id = ? AND status = 'queued'",
            (run_id, owner.pid, owner.pid_started, owner.host, owner.boot_id, now, now,
             owner.mono, job["id"]))
        if flipped.rowcount != 1:  # cannot happen under BEGIN IMMEDIATE; fail safe
            raise RuntimeError(f"job {job['id']} was claimed by someone else")
        db.execute("INSERT INTO counters (name, value) VALUES ('claims_total', 1) "
                   "ON CONFLICT(name) DO UPDATE SET value = value + 1")
        claimed = get(db, job["id"])
        run = get_run(db, run_id)
        assert claimed is not None and run is not None
        return claimed, run


def set_owner(db: Database, job_id: int, run_id: int, *, pid: int, pid_started: int | None,
              expect_pid: int | None = None) -> bool:
    """Hand a running job to its supervisor (fenced by run_id)."""
    sql = ("UPDATE jobs SET pid = ?, pid_started = ? "
           "WHERE id = ? AND run_id = ? AND status = 'running'")
    params: list[Any] = [pid, pid_started, job_id, run_id]
    if expect_pid is not None:
        sql += " AND pid = ?"
        params.append(expect_pid)
    return db.execute(sql, params).rowcount == 1


def set_run_group(db: Database, run_id: int, pgid: int, pgid_started: int | None) -> None:
    db.execute("UPDATE runs SET pgid = ?, pgid_started = ? WHERE id = ?",
               (pgid, pgid_started, run_id))


def set_run_fields(db: Database, run_id: int, **fields: Any) -> None:
    allowed = {"base_commit", "detail", "session_id", "cost_usd", "tokens", "outcome",
               "exit_code", "finished_at"}
    for name in fields:
        if name not in allowed:
            raise ValueError(f"not a settable run column: {name}")
    sets = ", ".join(f"{name} = ?" for name in fields)
    db.execute(f"UPDATE runs SET {sets} WHERE id = ?", (*fields.values(), run_id))


def heartbeat(db: Database, job_id: int, run_id: int, *, at: str, mono: float) -> bool:
    """Record a heartbeat; False when this run no longer owns the job (reaped/cancelled)."""
    cursor = db.execute(
        "UPDATE jobs SET heartbeat_at = ?, heartbeat_mono = ? "
        "WHERE id = ? AND run_id = ? AND status = 'running'", (at, mono, job_id, run_id))
    return cursor.rowcount == 1


def finish_run(db: Database, job_id: int, run_id: int, *, exit_code: int | None,
               outcome: str, error: str | None = None, session_id: str | None = None,
               cost_usd: float | None = None, tokens: int | None = None,
               detail: str | None = None, expect_pid: int | None = None) -> bool:
    """End a run: the job becomes succeeded/failed and waits to be judged (fenced by run_id,
    and by the owner's pid when given: a tick never ends a run its supervisor took over)."""
    at = now_iso()
    status = "succeeded" if outcome == "succeeded" else "failed"
    owner = "" if expect_pid is None else " AND pid = ?"
    cursor = db.execute(
        "UPDATE jobs SET status = ?, finished_at = ?, exit_code = ?, error = ?, judged = 0 "
        f"WHERE id = ? AND run_id = ? AND status = 'running'{owner}",
        (status, at, exit_code, error, job_id, run_id,
         *(() if expect_pid is None else (expect_pid,))))
    if cursor.rowcount != 1:
        return False
    db.execute(
        "UPDATE runs SET finished_at = ?, exit_code = ?, outcome = ?, session_id = ?, "
        "cost_usd = ?, tokens = ?, detail = coalesce(?, detail) WHERE id = ?",
        (at, exit_code, outcome, session_id, cost_usd, tokens, detail, run_id))
    return True


def end_run(db: Database, run_id: int, outcome: str, detail: str | None = None) -> None:
    """Close a run row that ended without a normal finish (reaped, cancelled)."""
    db.execute("UPDATE runs SET finished_at = coalesce(finished_at, ?), "
               "outcome = coalesce(outcome, ?), detail = coalesce(?, detail) WHERE id = ?",
               (now_iso(), outcome, detail, run_id))


def requeue(db: Database, job_id: int, *, expect_status: str, expect_run_id: int | None,
            attempt: int, defers: int, not_before: str | None, verdict: str | None,
            expect_pid: int | None = None) -> bool:
    """Return a job to `queued` as a new attempt; clears run ownership in the same UPDATE."""
    sql = (f"UPDATE jobs SET status = 'queued', {_CLEAR_OWNERSHIP}, finished_at = NULL, "
           "attempt = ?, defers = ?, not_before = ?, verdict = coalesce(?, verdict), judged = 1 "
           "WHERE id = ? AND status = ? AND run_id IS ?")
    params: list[Any] = [attempt, defers, not_before, verdict, job_id, expect_status,
                         expect_run_id]
    if expect_pid is not None:
        sql += " AND pid = ?"
        params.append(expect_pid)
    return db.execute(sql, params).rowcount == 1


def close(db: Database, job_id: int, *, status: str, verdict: str | None,
          expect_status: tuple[str, ...], error: str | None = None) -> bool:
    """Mark a job judged and final (PASS, FAIL, HOLD, cancel); guarded by its status."""
    marks = ", ".join("?" for _ in expect_status)
    cursor = db.execute(
        f"UPDATE jobs SET status = ?, verdict = coalesce(?, verdict), judged = 1, "
        f"finished_at = coalesce(finished_at, ?), error = coalesce(?, error) "
        f"WHERE id = ? AND status IN ({marks})",
        (status, verdict, now_iso(), error, job_id, *expect_status))
    return cursor.rowcount == 1


def impossible_queued(db: Database) -> list[dict[str, Any]]:
    """Queued jobs that still carry run ownership (invariant 1 broken)."""
    cond = " OR ".join(f"{column} IS NOT NULL" for column in OWNERSHIP)
    return db.all(f"SELECT * FROM jobs WHERE status = 'queued' AND ({cond}) ORDER BY id")


def clean_queued(db: Database, job_id: int) -> bool:
    cursor = db.execute(f"UPDATE jobs SET {_CLEAR_OWNERSHIP} WHERE id = ? AND status = 'queued'",
                        (job_id,))
    return cursor.rowcount == 1


def task_cost(db: Database, task_id: int) -> float:
    return float(db.scalar(
        "SELECT coalesce(sum(runs.cost_usd), 0) FROM runs JOIN jobs ON jobs.id = runs.job_id "
        "WHERE jobs.task_id = ?", (task_id,)))


def cost_since(db: Database, since: str) -> float:
    return float(db.scalar("SELECT coalesce(sum(cost_usd), 0) FROM runs WHERE started_at >= ?",
                           (since,)))


def judge(db: Database, job_id: int, verdict: str) -> bool:
    """Record the verdict of a finished job's latest run, once."""
    cursor = db.execute("UPDATE jobs SET verdict = ?, judged = 1 WHERE id = ? AND judged = 0",
                        (verdict, job_id))
    return cursor.rowcount == 1


def has_pending_job(db: Database, task_id: int) -> bool:
    """A queued or running job, or a finished one not judged yet."""
    return db.scalar(
        "SELECT 1 FROM jobs WHERE task_id = ? AND (status IN ('queued', 'running') "
        "OR judged = 0) LIMIT 1", (task_id,)) is not None


def tasks_needing_job(db: Database) -> list[dict[str, Any]]:
    """Active, unpaused, admitted tasks with no open or unjudged job (enqueue phase)."""
    return db.all(
        "SELECT * FROM tasks WHERE state = 'active' AND paused_at IS NULL AND admitted = 1 "
        "AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.task_id = tasks.id "
        "AND (jobs.status IN ('queued', 'running') OR jobs.judged = 0)) "
        "ORDER BY priority DESC, id")


def task_has_started(db: Database, task_id: int) -> bool:
    """Has any earlier run of this task prepared its worktree (recorded a base commit)?"""
    return db.scalar(
        "SELECT 1 FROM runs JOIN jobs ON jobs.id = runs.job_id WHERE jobs.task_id = ? "
        "AND runs.base_commit IS NOT NULL LIMIT 1", (task_id,)) is not None
