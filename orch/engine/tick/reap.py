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
from contextlib import AbstractContextManager, nullcontext
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

REAP_LOCK_WAIT_S = 30.0


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


@dataclass(frozen=True)
class Leftovers:
    """What ending a dead run's processes did: a line for the event, and whether some
    could not be ended (then the task is held: no new run starts beside them)."""

    text: str
    stuck: bool = False


def kill_leftovers(engine: Engine, job: Job) -> Leftovers:
    """End every process of the dead run: by its mark (`ORCH_RUN_MARK`, which the
    supervisor, the agent, an inline command and all they started carry, whatever session
    they went to) and below its recorded root (the supervisor's or the inline command's
    group leader, when its start time still matches: never a reused pid).

    The job and its run are read again in one snapshot: a supervisor that took the job
    over since it was judged (it records its pid and its group in one transaction) is
    alive and left alone; the job is then not reaped either.
    """
    with engine.db.transaction():
        fresh = jobs.get(engine.db, job.id)
        if fresh is None or (fresh.status, fresh.run_id, fresh.pid) != (
                JobStatus.RUNNING, job.run_id, job.pid):
            return Leftovers("its owner changed meanwhile: nothing killed")
        run = runs.get(engine.db, job.run_id) if job.run_id else None
    if run is None:
        return Leftovers("no run recorded")
    if engine.dry_run:
        return Leftovers("would end the run's processes")
    from orch.procs import tree

    root = (int(run.pgid), int(run.pgid_started)) if run.pgid and run.pgid_started else None
    ended = tree.end_run_tree(engine.home.run_mark(run.id), root,
                              grace_s=engine.settings.cancel_grace_s)
    return Leftovers(ended.summary(), stuck=not ended.complete)


def _merge_fence(engine: Engine, job: Job) -> AbstractContextManager[None]:
    """A merge job is requeued under its repo's lock: a merge child that survived the kill
    then finds the job gone when it checks, under that lock, before it moves the default
    branch (orch.engine.run.merge_run). Bounded: a lock held past it skips this job until
    the next tick (an error of the job)."""
    if job.runner != "merge":
        return nullcontext()
    task = tasks.get(engine.db, job.task_id)
    if task is None:
        return nullcontext()
    return engine.home.repo_lock(task.repo, wait_s=REAP_LOCK_WAIT_S)


def _tail(engine: Engine, run_id: int) -> str | None:
    """The local run's log tail, for a state shared by several hosts (SPEC section 11)."""
    if not engine.db.multi_host:
        return None
    from orch.engine.stored import log_tail

    run = runs.get(engine.db, run_id)
    return log_tail(run.log_path) if run is not None else None


def _reap_one(engine: Engine, job: Job, verdict: Liveness) -> bool:
    left = kill_leftovers(engine, job) if verdict.local else Leftovers("not on this machine")
    killed = left.text
    db = engine.db
    with _merge_fence(engine, job), db.transaction():
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
        if left.stuck:  # the job no longer counts as running; a person looks
            hold(engine, task, fresh, f"a leftover of run {fresh.run_id} could not be ended: "
                 f"{killed}", HoldKind.LEFTOVER)
            return True
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
