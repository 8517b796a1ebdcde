"""Run rows: one per start of a job, fenced through the job's `run_id`.

A run is created by the claim (`orch.state.jobs.claim_next`), in the same
transaction that flips its job to `running`; its id is the `run_id` every
later write of the run is fenced by, `ORCH_RUN_ID`, and the number in its
log's name.
"""

from __future__ import annotations

from typing import Any

from orch.state.db import Database
from orch.state.records import Run, runs_of
from orch.timeutil import now_iso

_SETTABLE = frozenset({"base_commit", "detail", "session_id", "cost_usd", "tokens", "outcome",
                       "exit_code", "finished_at", "denials", "fault"})


def create(db: Database, job_id: int, started_at: str, attempt: int, log_dir: str,
           host: str | None = None) -> int:
    """A new run of a job on HOST, with its log path `job-J-run-R.log` under `log_dir`."""
    run_id = db.insert("INSERT INTO runs (job_id, started_at, attempt, host) "
                       "VALUES (?, ?, ?, ?) RETURNING id", (job_id, started_at, attempt, host))
    db.execute("UPDATE runs SET log_path = ? WHERE id = ?",
               (f"{log_dir}/job-{job_id}-run-{run_id}.log", run_id))
    return run_id


def get(db: Database, run_id: int) -> Run | None:
    row = db.one("SELECT * FROM runs WHERE id = ?", (run_id,))
    return Run.from_row(row) if row else None


def for_job(db: Database, job_id: int) -> list[Run]:
    return runs_of(db.all("SELECT * FROM runs WHERE job_id = ? ORDER BY id", (job_id,)))


def count_for_job(db: Database, job_id: int) -> int:
    return int(db.scalar("SELECT count(*) FROM runs WHERE job_id = ?", (job_id,)))


def for_task(db: Database, task_id: int) -> list[Run]:
    return runs_of(db.all("SELECT runs.* FROM runs JOIN jobs ON jobs.id = runs.job_id "
                          "WHERE jobs.task_id = ? ORDER BY runs.id", (task_id,)))


def set_group(db: Database, run_id: int, pgid: int, pgid_started: int | None) -> None:
    db.execute("UPDATE runs SET pgid = ?, pgid_started = ? WHERE id = ?",
               (pgid, pgid_started, run_id))


def set_fields(db: Database, run_id: int, **fields: Any) -> None:
    for name in fields:
        if name not in _SETTABLE:
            raise ValueError(f"not a settable run column: {name}")
    sets = ", ".join(f"{name} = ?" for name in fields)
    values = [str(v) if isinstance(v, str) else v for v in fields.values()]
    db.execute(f"UPDATE runs SET {sets} WHERE id = ?", (*values, run_id))


def record_finish(db: Database, run_id: int, *, at: str, exit_code: int | None, outcome: str,
                  session_id: str | None, cost_usd: float | None, tokens: int | None,
                  detail: str | None, denials: int = 0, fault: str | None = None,
                  log_tail: str | None = None) -> None:
    db.execute(
        "UPDATE runs SET finished_at = ?, exit_code = ?, outcome = ?, session_id = ?, "
        "cost_usd = ?, tokens = ?, detail = coalesce(?, detail), denials = ?, fault = ?, "
        "log_tail = coalesce(?, log_tail) WHERE id = ?",
        (at, exit_code, str(outcome), session_id, cost_usd, tokens, detail, denials, fault,
         log_tail, run_id))


def end(db: Database, run_id: int, outcome: str, detail: str | None = None,
        log_tail: str | None = None) -> None:
    """Close a run row that ended without a normal finish (reaped, cancelled)."""
    db.execute("UPDATE runs SET finished_at = coalesce(finished_at, ?), "
               "outcome = coalesce(outcome, ?), detail = coalesce(?, detail), "
               "log_tail = coalesce(?, log_tail) WHERE id = ?",
               (now_iso(), str(outcome), detail, log_tail, run_id))


def log_tail(db: Database, run_id: int) -> str | None:
    """The last 64 KiB of a run's log, stored when it ended (shared states only)."""
    value = db.scalar("SELECT log_tail FROM runs WHERE id = ?", (run_id,))
    return None if value is None else str(value)


def task_cost(db: Database, task_id: int) -> float:
    return float(db.scalar(
        "SELECT coalesce(sum(runs.cost_usd), 0) FROM runs JOIN jobs ON jobs.id = runs.job_id "
        "WHERE jobs.task_id = ?", (task_id,)))


def cost_since(db: Database, since: str) -> float:
    return float(db.scalar("SELECT coalesce(sum(cost_usd), 0) FROM runs WHERE started_at >= ?",
                           (since,)))


def job_base_commit(db: Database, job_id: int) -> str | None:
    """The task branch's head when the job's first run started: commits after it were
    made during the job, by any of its attempts (`dev_done`)."""
    value = db.scalar("SELECT base_commit FROM runs WHERE job_id = ? AND base_commit IS NOT "
                      "NULL ORDER BY id LIMIT 1", (job_id,))
    return str(value) if value is not None else None


def last_denials(db: Database, task_ids: list[int]) -> dict[int, int]:
    """Task id -> the permission denials of its latest run, for the tasks whose latest
    run reported any."""
    if not task_ids:
        return {}
    marks = ", ".join("?" for _ in task_ids)
    rows = db.all(
        "SELECT jobs.task_id AS task_id, runs.denials AS denials FROM runs "
        "JOIN jobs ON jobs.id = runs.job_id WHERE runs.denials > 0 AND runs.id IN "
        "(SELECT max(r.id) FROM runs r JOIN jobs j ON j.id = r.job_id "
        f"WHERE j.task_id IN ({marks}) GROUP BY j.task_id)", tuple(task_ids))
    return {int(row["task_id"]): int(row["denials"]) for row in rows}


def task_has_started(db: Database, task_id: int) -> bool:
    """Has any earlier run of this task prepared its worktree (recorded a base commit)?"""
    return db.scalar(
        "SELECT 1 FROM runs JOIN jobs ON jobs.id = runs.job_id WHERE jobs.task_id = ? "
        "AND runs.base_commit IS NOT NULL LIMIT 1", (task_id,)) is not None
