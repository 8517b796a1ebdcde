"""The claim when several hosts share one PostgreSQL state (SPEC sections 4 and 11).

Hosts claim at the same time and must never wait for each other, yet running
jobs must never exceed the global `max_concurrency` (invariant 3) nor a
host's `host_max_concurrency`. A count of running jobs checked before the
claim is not enough (two hosts count 1 of 2 at once and both claim), and one
counter row that every claim locks would make every claim wait for the
others. So the limits are *slot rows* (`run_slots`): `scope ''` holds rows
1..N for the global limit, `scope 'host:NAME'` rows 1..N for one host. In one
READ COMMITTED transaction a claim

1. takes a free global slot numbered <= L and a free slot of its host
   numbered <= H, each with `FOR UPDATE SKIP LOCKED`: a slot another claim
   is taking right now is skipped, never waited for; none free: no claim;
2. takes its job with `UPDATE jobs ... WHERE id = (SELECT ... FOR NO KEY
   UPDATE OF jobs, tasks SKIP LOCKED LIMIT 1) RETURNING *`: a job (or its
   task) another transaction holds is skipped; the job gets its run id from
   the runs sequence in the same UPDATE;
3. creates the run, writes the job's id into both slots and counts the
   claim on this host's counter row, in one statement.

Every running job holds one global slot <= L, so running jobs never exceed
L at any commit, and no claim waits on another. A trigger frees a job's
slots in the very transaction that moves it out of `running` (finish, requeue,
reap, cancel, hold), whatever path does it. When L is lowered, slots above it
still held block new claims until they drain. Slot rows are added by each
host's tick up to its own limits (`ensure_slots`), never removed.
"""

from __future__ import annotations

from orch.state.db import Database
from orch.state.records import Job, Run

GLOBAL = ""

_TAKE_SLOTS = """
WITH g AS (SELECT n FROM run_slots WHERE scope = ? AND job_id IS NULL AND n <= ?
           AND NOT EXISTS (SELECT 1 FROM run_slots x WHERE x.scope = ? AND x.n > ?
                           AND x.job_id IS NOT NULL)
           ORDER BY n LIMIT 1 FOR UPDATE SKIP LOCKED),
     h AS (SELECT n FROM run_slots WHERE scope = ? AND job_id IS NULL AND n <= ?
           AND NOT EXISTS (SELECT 1 FROM run_slots x WHERE x.scope = ? AND x.n > ?
                           AND x.job_id IS NOT NULL)
           ORDER BY n LIMIT 1 FOR UPDATE SKIP LOCKED)
SELECT g.n AS g, h.n AS h FROM g, h
"""

_TAKE_JOB = """
UPDATE jobs SET status = 'running', run_id = nextval('runs_id_seq'), pid = ?,
       pid_started = ?, host = ?, boot_id = ?, started_at = ?, heartbeat_at = ?,
       heartbeat_mono = ?, finished_at = NULL, exit_code = NULL, error = NULL, judged = 1
WHERE id = (SELECT jobs.id FROM jobs JOIN tasks ON tasks.id = jobs.task_id
            WHERE jobs.status = 'queued' AND (jobs.not_before IS NULL OR jobs.not_before <= ?)
              AND tasks.state = 'active' AND tasks.admitted = 1 AND tasks.paused_at IS NULL
              AND tasks.host = ? AND tasks.repo <> ALL(?)
            ORDER BY tasks.priority DESC, jobs.id LIMIT 1
            FOR NO KEY UPDATE OF jobs, tasks SKIP LOCKED)
  AND status = 'queued'
RETURNING *
"""

_RECORD = """
WITH r AS (INSERT INTO runs (id, job_id, started_at, attempt, log_path, host)
           VALUES (?, ?, ?, ?, ?, ?) RETURNING *),
     s AS (UPDATE run_slots SET job_id = ? WHERE (scope = ? AND n = ?) OR (scope = ? AND n = ?)),
     c AS (INSERT INTO counters (name, value) VALUES (?, 1)
           ON CONFLICT (name) DO UPDATE SET value = counters.value + 1)
SELECT * FROM r
"""


def host_scope(host: str) -> str:
    return f"host:{host}"


def ensure_slots(db: Database, host: str, global_slots: int, host_slots: int) -> None:
    """Slot rows 1..N for the global limit and for this host's (kept, never removed)."""
    db.execute("INSERT INTO run_slots (scope, n) SELECT ?, g FROM generate_series(1, ?) g "
               "UNION ALL SELECT ?, g FROM generate_series(1, ?) g ON CONFLICT DO NOTHING",
               (GLOBAL, max(0, global_slots), host_scope(host), max(0, host_slots)))


def _missing_slots(db: Database, scope: str, global_limit: int, host_limit: int) -> bool:
    """Are there fewer slot rows than the limits ask for (a limit raised meanwhile)?"""
    row = db.one("SELECT count(*) FILTER (WHERE scope = ?) AS g, "
                 "count(*) FILTER (WHERE scope = ?) AS h FROM run_slots", (GLOBAL, scope))
    return row is not None and (row["g"] < global_limit or row["h"] < host_limit)


def claim_shared(db: Database, *, now: str, runnable_at: str, global_limit: int,
                 host_limit: int, owner_pid: int, owner_started: int | None, host: str,
                 boot_id: str, mono: float, log_dir: str, exclude_repos: tuple[str, ...],
                 counter: str) -> tuple[Job, Run] | None:
    """One claim in one transaction; None when no slot or no job is free (nothing waits)."""
    scope = host_scope(host)
    with db.transaction():
        slots = db.one(_TAKE_SLOTS, (GLOBAL, global_limit, GLOBAL, global_limit,
                                     scope, host_limit, scope, host_limit))
        if slots is None:
            if not _missing_slots(db, scope, global_limit, host_limit):
                return None
            ensure_slots(db, host, global_limit, host_limit)  # limits raised since the tick
            slots = db.one(_TAKE_SLOTS, (GLOBAL, global_limit, GLOBAL, global_limit,
                                         scope, host_limit, scope, host_limit))
            if slots is None:
                return None
        row = db.one(_TAKE_JOB, (owner_pid, owner_started, host, boot_id, now, now, mono,
                                 runnable_at, host, list(exclude_repos)))
        if row is None:
            return None
        job = Job.from_row(row)
        assert job.run_id is not None
        log_path = f"{log_dir}/job-{job.id}-run-{job.run_id}.log"
        run = db.one(_RECORD, (job.run_id, job.id, now, job.attempt, log_path, host,
                               job.id, GLOBAL, slots["g"], scope, slots["h"], counter))
        assert run is not None
        return job, Run.from_row(run)
