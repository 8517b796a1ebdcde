"""Phase 2, reap: running jobs whose process died are requeued (SPEC section 5.2).

`check_liveness` is the decision: it reads /proc through orch.procs and the
job's recorded identity, and returns the evidence. `reap_dead` acts on it:
leftovers are killed *before* the transaction that requeues the job, so no
new run can start beside them, and a pid or group that now belongs to
another process is never signalled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from orch import machine, procs
from orch.engine.context import Engine, isolate
from orch.engine.moves import hold, later_or_now
from orch.machine import MoveKind, Position
from orch.model import HoldKind, JobStatus, RunOutcome, Verdict
from orch.procs import Identity
from orch.state import counters, events, jobs, runs, tasks
from orch.state.records import Job
from orch.timeutil import epoch_of, monotonic


@dataclass(frozen=True)
class Liveness:
    dead: bool
    evidence: str
    local: bool  # recorded on this machine and boot: its leftovers may be killed here


def check_liveness(job: Job, here: Identity, timeout_s: float, now_mono: float,
                   now_wall: float, host_alive: Callable[[str], bool] = lambda _: False
                   ) -> Liveness:
    """Is a running job's owner still alive? Evidence names the check that said dead.

    A job of another host is that host's while HOST_ALIVE says its row is fresh
    (SPEC section 11); once the host is dead or unknown, the job's wall-clock
    heartbeat alone decides, and nothing of it is ours to signal."""
    if job.host and job.host != here.host:
        if host_alive(job.host):
            return Liveness(False, f"host {job.host} is alive: its own tick judges it", False)
        age = now_wall - epoch_of(job.heartbeat_at) if job.heartbeat_at else None
        if age is None or age > timeout_s:
            return Liveness(True, f"heartbeat from host {job.host} is stale "
                            f"({_age(age)} > {timeout_s} s, wall clock)", False)
        return Liveness(False, "remote heartbeat fresh", False)
    if job.boot_id != here.boot_id:
        return Liveness(True, "the machine rebooted (boot id differs)", False)
    state = procs.liveness(job.pid, job.pid_started)
    if state != "alive":
        detail = {"no-process": f"no process has pid {job.pid}",
                  "zombie": f"pid {job.pid} is a zombie",
                  "start-time-mismatch": f"pid {job.pid} now belongs to another process "
                                         "(start time differs: pid reused)"}[state]
        return Liveness(True, detail, True)
    if job.heartbeat_mono is not None:
        age = now_mono - float(job.heartbeat_mono)
        if age > timeout_s:
            return Liveness(True, f"heartbeat stale ({age:.0f} s > {timeout_s} s, "
                            "monotonic clock)", True)
    return Liveness(False, "alive", True)


def _age(age: float | None) -> str:
    return "never" if age is None else f"{age:.0f} s"


def reap(engine: Engine, here: Identity) -> list[int]:
    """Judge every running job; kill and requeue (or hold) the dead ones."""
    timeout = engine.settings.heartbeat_timeout_s

    def reap_if_dead(job: Job) -> bool:
        verdict = check_liveness(job, here, timeout, monotonic(), time.time(),
                                 engine.hosts.is_alive)
        return verdict.dead and _reap_one(engine, job, verdict)

    return [job.id for job, reaped in isolate(engine, jobs.running(engine.db), reap_if_dead,
                                              lambda job: (job.task_id, job.id)) if reaped]


def kill_leftovers(engine: Engine, job: Job) -> str:
    """Kill the run's process group (supervisor's or inline command's), never a reused pid.

    The job and its run are read again in one snapshot: a supervisor that took the job
    over since it was judged (it records its pid and its group in one transaction) is
    alive and left alone; the job is then not reaped either.
    """
    with engine.db.transaction():
        fresh = jobs.get(engine.db, job.id)
        if fresh is None or (fresh.status, fresh.run_id, fresh.pid) != (
                JobStatus.RUNNING, job.run_id, job.pid):
            return "its owner changed meanwhile: nothing killed"
        run = runs.get(engine.db, job.run_id) if job.run_id else None
    if run is None:
        return "no run recorded"
    if not run.pgid:
        return _kill_unrecorded(engine, run.id)
    if engine.dry_run:
        return "would kill its process group"
    outcome = procs.kill_group(int(run.pgid), run.pgid_started, engine.settings.cancel_grace_s)
    return {"killed": f"killed process group {run.pgid}",
            "gone": f"process group {run.pgid} already gone",
            "refused-reused-pid": f"left pid {run.pgid} alone (reused by another process)"
            }.get(outcome, outcome)


def _kill_unrecorded(engine: Engine, run_id: int) -> str:
    """No group recorded: the tick died between starting an inline command and recording
    its group. Its processes carry this home's ORCH_HOME and the run's ORCH_RUN_ID in their
    environment (nothing else does), so their groups are found by that and killed."""
    groups = procs.groups_with_env({"ORCH_HOME": str(engine.settings.home),
                                    "ORCH_RUN_ID": str(run_id)})
    if not groups:
        return "no process group recorded"
    if engine.dry_run:
        return f"would kill process groups {sorted(groups)} (found by ORCH_RUN_ID)"
    for pgid in sorted(groups):
        procs.kill_group(pgid, procs.start_ticks(pgid), engine.settings.cancel_grace_s)
    return f"killed process groups {sorted(groups)} (no group recorded; found by ORCH_RUN_ID)"


def _tail(engine: Engine, run_id: int) -> str | None:
    """The local run's log tail, for a state shared by several hosts (SPEC section 11)."""
    if not engine.db.multi_host:
        return None
    from orch.engine.stored import log_tail

    run = runs.get(engine.db, run_id)
    return log_tail(run.log_path) if run is not None else None


def _reap_one(engine: Engine, job: Job, verdict: Liveness) -> bool:
    killed = kill_leftovers(engine, job) if verdict.local else "not on this machine"
    db = engine.db
    with db.transaction():
        tasks.lock_of_job(db, job.id)  # the task first, then the job (see tasks.get)
        fresh = jobs.get(db, job.id)
        if fresh is None or fresh.status != JobStatus.RUNNING or fresh.run_id != job.run_id \
                or fresh.pid != job.pid:
            return False  # it finished, or its supervisor registered, meanwhile
        task = tasks.get(db, fresh.task_id)
        assert task is not None and fresh.run_id is not None
        runs.end(db, fresh.run_id, RunOutcome.REAPED, verdict.evidence,
                 _tail(engine, fresh.run_id) if verdict.local else None)
        counters.bump(db, "reaped_total")
        events.record(db, "reaped", f"run {fresh.run_id} reaped: {verdict.evidence}; {killed}",
                      task_id=task.id, job_id=fresh.id)
        limits = engine.limits(engine.pipeline.get(fresh.stage), task.repo)
        move = machine.next_move(engine.pipeline, Position(fresh.stage, task.round,
                                                           fresh.attempt, fresh.defers),
                                 Verdict.RETRY, limits)
        if move.kind is not MoveKind.RETRY:
            hold(engine, task, fresh, f"{move.note}: last run reaped ({verdict.evidence})",
                 move.hold_kind or HoldKind.ATTEMPTS)
            return True
        jobs.requeue(db, fresh.id, expect_status=JobStatus.RUNNING, expect_run_id=fresh.run_id,
                     expect_pid=fresh.pid, attempt=move.attempt, defers=fresh.defers,
                     not_before=later_or_now(engine.settings.retry_backoff_s), verdict=None)
    return True
