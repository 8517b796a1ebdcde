"""Job rows: enqueue, claim, heartbeat, finish, requeue, sanitize.

Every path back to `queued` clears the run-ownership columns of invariant 1
in the same UPDATE (`_CLEAR_OWNERSHIP`). Every write made on behalf of a run
is fenced by `run_id`, so a run that was reaped but still lives cannot touch
the state of a newer run of the same job. A run's own row lives in
`orch.state.runs`; the claim creates it here, in the transaction that flips
the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orch.model import JobStatus
from orch.state import counters, runs
from orch.state.db import Database
from orch.state.records import Job, Run, Task, jobs_of, tasks_of
from orch.timeutil import now_iso

OWNERSHIP = ("run_id", "pid", "pid_started", "boot_id", "started_at", "heartbeat_at",
             "heartbeat_mono")
_CLEAR_OWNERSHIP = ", ".join(f"{column} = NULL" for column in OWNERSHIP)
_FINISHED = "('succeeded', 'failed', 'cancelled')"
COST_COUNTER = "cost_microusd_total"  # every run's cost_usd, in micro-USD (schema V7)


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
    return db.insert(
        "INSERT INTO jobs (task_id, stage, runner, status, attempt, defers, not_before, "
        "created_at) VALUES (?, ?, ?, 'queued', ?, 0, ?, ?) RETURNING id",
        (task_id, stage, runner, attempt, not_before, now_iso()))


def get(db: Database, job_id: int) -> Job | None:
    row = db.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    return Job.from_row(row) if row else None


def open_job(db: Database, task_id: int) -> Job | None:
    row = db.one("SELECT * FROM jobs WHERE task_id = ? AND status IN ('queued', 'running')",
                 (task_id,))
    return Job.from_row(row) if row else None


def for_task(db: Database, task_id: int) -> list[Job]:
    return jobs_of(db.all("SELECT * FROM jobs WHERE task_id = ? ORDER BY id", (task_id,)))


def running(db: Database) -> list[Job]:
    return jobs_of(db.all("SELECT * FROM jobs WHERE status = 'running' ORDER BY id"))


def running_count(db: Database) -> int:
    return int(db.scalar("SELECT count(*) FROM jobs WHERE status = 'running'"))


def unjudged(db: Database, host: str | None = None) -> list[Job]:
    """Finished jobs whose latest run has not been judged yet (of tasks pinned to HOST)."""
    if host is None:
        return jobs_of(db.all(f"SELECT * FROM jobs WHERE judged = 0 AND status IN {_FINISHED} "
                              "ORDER BY id"))
    return jobs_of(db.all(
        "SELECT jobs.* FROM jobs JOIN tasks ON tasks.id = jobs.task_id "
        f"WHERE jobs.judged = 0 AND jobs.status IN {_FINISHED} AND tasks.host = ? "
        "ORDER BY jobs.id", (host,)))


def unjudged_of_task(db: Database, task_id: int) -> Job | None:
    """A task's finished job waiting to be judged, if any."""
    row = db.one(f"SELECT * FROM jobs WHERE task_id = ? AND judged = 0 AND status IN {_FINISHED} "
                 "ORDER BY id DESC LIMIT 1", (task_id,))
    return Job.from_row(row) if row else None


def queued_count(db: Database) -> int:
    return int(db.scalar("SELECT count(*) FROM jobs WHERE status = 'queued'"))


def claim_next(db: Database, *, now: str, max_concurrency: int, owner: Owner,
               log_dir: str, exclude_repos: tuple[str, ...] = (),
               runnable_at: str | None = None, host_limit: int | None = None
               ) -> tuple[Job, Run] | None:
    """Claim the next runnable job in one write transaction.

    Picks by task priority then job id among queued jobs whose `not_before`
    has passed and whose task is active and not paused, checks
    `max_concurrency` (and `host_limit`, this host's cap), flips queued ->
    running guarded by status, and creates the run whose id becomes `run_id`.
    Returns (job, run) or None. `runnable_at` (default `now`) is the time
    `not_before` must have passed: the tick passes its start time, so a job
    requeued during the tick waits for the next one. A state shared by several
    hosts claims through slot rows instead (orch.state.claims): only the tasks
    pinned to the owner's host, and never waiting on another host's claim.
    """
    limit = max_concurrency if host_limit is None else min(max_concurrency, host_limit)
    if db.multi_host:
        from orch.state import counters
        from orch.state.claims import claim_shared

        return claim_shared(db, now=now, runnable_at=runnable_at or now,
                            global_limit=max_concurrency,
                            host_limit=limit, owner_pid=owner.pid,
                            owner_started=owner.pid_started, host=owner.host,
                            boot_id=owner.boot_id, mono=owner.mono, log_dir=log_dir,
                            exclude_repos=exclude_repos,
                            counter=counters.shard(db, "claims_total"))
    with db.transaction():
        if running_count(db) >= limit:
            return None
        job = _next_runnable(db, runnable_at or now, exclude_repos)
        if job is None:
            return None
        run_id = runs.create(db, job.id, now, job.attempt, log_dir, owner.host)
        _flip_to_running(db, job.id, run_id, now, owner)
        db.execute("INSERT INTO counters (name, value) VALUES ('claims_total', 1) "
                   "ON CONFLICT(name) DO UPDATE SET value = counters.value + 1")
        claimed, run = get(db, job.id), runs.get(db, run_id)
        assert claimed is not None and run is not None
        return claimed, run


def _next_runnable(db: Database, runnable_at: str, exclude_repos: tuple[str, ...]
                   ) -> Job | None:
    skip = "".join(" AND tasks.repo != ?" for _ in exclude_repos)
    row = db.one(
        "SELECT jobs.* FROM jobs JOIN tasks ON tasks.id = jobs.task_id "
        "WHERE jobs.status = 'queued' AND (jobs.not_before IS NULL OR jobs.not_before <= ?) "
        f"AND tasks.state = 'active' AND tasks.admitted = 1 AND tasks.paused_at IS NULL{skip} "
        "ORDER BY tasks.priority DESC, jobs.id LIMIT 1", (runnable_at, *exclude_repos))
    return Job.from_row(row) if row else None


def _flip_to_running(db: Database, job_id: int, run_id: int, now: str, owner: Owner) -> None:
    flipped = db.execute(
        "UPDATE jobs SET status = 'running', run_id = ?, pid = ?, pid_started = ?, host = ?, "
        "boot_id = ?, started_at = ?, heartbeat_at = ?, heartbeat_mono = ?, "
        "finished_at = NULL, exit_code = NULL, error = NULL, judged = 1 "
        "WHERE id = ? AND status = 'queued'",
        (run_id, owner.pid, owner.pid_started, owner.host, owner.boot_id, now, now,
         owner.mono, job_id))
    if flipped != 1:  # cannot happen inside the write transaction; fail safe
        raise RuntimeError(f"job {job_id} was claimed by someone else")


def set_owner(db: Database, job_id: int, run_id: int, *, pid: int, pid_started: int | None,
              expect_pid: int | None = None) -> bool:
    """Hand a running job to its supervisor (fenced by run_id)."""
    sql = ("UPDATE jobs SET pid = ?, pid_started = ? "
           "WHERE id = ? AND run_id = ? AND status = 'running'")
    params: list[Any] = [pid, pid_started, job_id, run_id]
    if expect_pid is not None:
        sql += " AND pid = ?"
        params.append(expect_pid)
    return db.execute(sql, params) == 1


def heartbeat(db: Database, job_id: int, run_id: int, *, at: str, mono: float) -> bool:
    """Record a heartbeat; False when this run no longer owns the job (reaped/cancelled)."""
    return db.execute(
        "UPDATE jobs SET heartbeat_at = ?, heartbeat_mono = ? "
        "WHERE id = ? AND run_id = ? AND status = 'running'", (at, mono, job_id, run_id)) == 1


def finish_run(db: Database, job_id: int, run_id: int, *, exit_code: int | None,
               outcome: str, error: str | None = None, session_id: str | None = None,
               cost_usd: float | None = None, tokens: int | None = None,
               detail: str | None = None, expect_pid: int | None = None, denials: int = 0,
               fault: str | None = None, log_tail: str | None = None) -> bool:
    """End a run: the job becomes succeeded/failed and waits to be judged (fenced by run_id,
    and by the owner's pid when given: a tick never ends a run its supervisor took over)."""

    at = now_iso()
    status = JobStatus.SUCCEEDED if outcome == "succeeded" else JobStatus.FAILED
    owner = "" if expect_pid is None else " AND pid = ?"
    changed = db.execute(
        "UPDATE jobs SET status = ?, finished_at = ?, exit_code = ?, error = ?, judged = 0 "
        f"WHERE id = ? AND run_id = ? AND status = 'running'{owner}",
        (str(status), at, exit_code, error, job_id, run_id,
         *(() if expect_pid is None else (expect_pid,))))
    if changed != 1:
        return False
    runs.record_finish(db, run_id, at=at, exit_code=exit_code, outcome=outcome,
                       session_id=session_id, cost_usd=cost_usd, tokens=tokens, detail=detail,
                       denials=denials, fault=fault, log_tail=log_tail)
    if cost_usd:
        counters.bump(db, COST_COUNTER, round(cost_usd * 1_000_000))
    return True


def requeue(db: Database, job_id: int, *, expect_status: str, expect_run_id: int | None,
            attempt: int, defers: int, not_before: str | None, verdict: str | None,
            expect_pid: int | None = None) -> bool:
    """Return a job to `queued` as a new attempt; clears run ownership in the same UPDATE."""
    sql = (f"UPDATE jobs SET status = 'queued', {_CLEAR_OWNERSHIP}, finished_at = NULL, "
           "attempt = ?, defers = ?, not_before = ?, verdict = coalesce(?, verdict), judged = 1 "
           "WHERE id = ? AND status = ? AND run_id IS NOT DISTINCT FROM ?")
    params: list[Any] = [attempt, defers, not_before, _text(verdict), job_id,
                         str(expect_status), expect_run_id]
    if expect_pid is not None:
        sql += " AND pid = ?"
        params.append(expect_pid)
    return db.execute(sql, params) == 1


def close(db: Database, job_id: int, *, status: str, verdict: str | None,
          expect_status: tuple[str, ...], error: str | None = None) -> bool:
    """Mark a job judged and final (PASS, FAIL, HOLD, cancel); guarded by its status."""
    marks = ", ".join("?" for _ in expect_status)
    return db.execute(
        f"UPDATE jobs SET status = ?, verdict = coalesce(?, verdict), judged = 1, "
        f"finished_at = coalesce(finished_at, ?), error = coalesce(?, error) "
        f"WHERE id = ? AND status IN ({marks})",
        (str(status), _text(verdict), now_iso(), error, job_id,
         *(str(s) for s in expect_status))) == 1


def impossible_queued(db: Database) -> list[Job]:
    """Queued jobs that still carry run ownership (invariant 1 broken)."""
    cond = " OR ".join(f"{column} IS NOT NULL" for column in OWNERSHIP)
    # The partial index holds the dirty rows only (none, almost always); SQLite's planner
    # would rather scan every queued job through `jobs_queued`, so it is named.
    hint = " INDEXED BY jobs_queued_dirty" if db.dialect == "sqlite" else ""
    return jobs_of(db.all(f"SELECT * FROM jobs{hint} "
                          f"WHERE status = 'queued' AND ({cond}) ORDER BY id"))


def clean_queued(db: Database, job_id: int) -> bool:
    return db.execute(f"UPDATE jobs SET {_CLEAR_OWNERSHIP} WHERE id = ? AND status = 'queued'",
                      (job_id,)) == 1


def record_verdict(db: Database, job_id: int, verdict: str) -> bool:
    """Record the verdict of a finished job's latest run, once."""
    return db.execute("UPDATE jobs SET verdict = ?, judged = 1 WHERE id = ? AND judged = 0",
                      (str(verdict), job_id)) == 1


def has_pending_job(db: Database, task_id: int) -> bool:
    """A queued or running job, or a finished one not judged yet."""
    return db.scalar(
        "SELECT 1 FROM jobs WHERE task_id = ? AND (status IN ('queued', 'running') "
        "OR judged = 0) LIMIT 1", (task_id,)) is not None


def tasks_needing_job(db: Database, host: str | None = None) -> list[Task]:
    """Active, unpaused, admitted tasks with no open or unjudged job (enqueue phase); only
    those pinned to HOST when given."""
    pinned = "" if host is None else " AND host = ?"
    return tasks_of(db.all(
        "SELECT * FROM tasks WHERE state = 'active' AND paused_at IS NULL AND admitted = 1"
        f"{pinned} AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.task_id = tasks.id "
        "AND jobs.status IN ('queued', 'running')) "
        "AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.task_id = tasks.id "
        f"AND jobs.judged = 0 AND jobs.status IN {_FINISHED}) "
        "ORDER BY priority DESC, id", () if host is None else (host,)))


def _text(value: str | None) -> str | None:
    return None if value is None else str(value)
