"""Operator actions: pause, resume, retry, cancel, approve, reject, freeze (SPEC section 7).

Each id is handled on its own: a refused id changes nothing and the others
are applied; the caller exits with the highest status. Every change writes
its event in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass

from orch import procs
from orch.config import Settings
from orch.engine.context import Engine
from orch.engine.moves import answer_human
from orch.engine.tick import send_notes
from orch.errors import NotFoundError, OrchError, RefusedError
from orch.machine import Pipeline
from orch.model import JobStatus, TaskState
from orch.state import counters, events, jobs, repos, runs, tasks
from orch.state.db import Database
from orch.state.records import Job, Run, Task
from orch.timeutil import now_iso


@dataclass(frozen=True)
class ActionResult:
    task_id: int
    message: str
    exit_code: int = 0


def apply_each(ids: Iterable[int], action: Callable[[int], str]) -> list[ActionResult]:
    """Run `action` per id; OrchErrors become results with their exit status."""
    results = []
    for task_id in ids:
        try:
            results.append(ActionResult(task_id, action(task_id)))
        except OrchError as exc:
            results.append(ActionResult(task_id, str(exc), exc.exit_code))
    return results


def _open_task(db: Database, task_id: int, verb: str) -> Task:
    """The open task, its row locked for the caller's transaction (see tasks.get)."""
    task = tasks.get(db, task_id, lock=True)
    if task is None:
        raise NotFoundError(f"no such task: {task_id}")
    if task.closed:
        raise RefusedError(f"task {task_id} is closed ({task.stage}): cannot {verb} it")
    return task


def pause(db: Database, task_id: int, reason: str | None) -> str:
    """Park a task: state kept, no new job; the slot goes once no job runs."""
    with db.transaction():
        task = _open_task(db, task_id, "pause")
        if task.paused:
            return f"task {task_id}: already paused ({task.pause_reason or 'no reason'})"
        text = reason or "paused by operator"
        running = jobs.open_job(db, task_id)
        release = not (running and running.status == JobStatus.RUNNING)
        changes: dict[str, object] = {"paused_at": now_iso(), "pause_reason": text}
        if release:
            changes["admitted"] = False
        tasks.update(db, task_id, expect={"paused_at": None}, **changes)
        events.record(db, "paused", f"{text}" + ("; slot released" if release and
                                                 task.admitted else ""), task_id=task_id)
    return f"task {task_id}: paused"


def resume(db: Database, task_id: int) -> str:
    """Clear a pause; needs_input goes back to active; a released slot means waiting."""
    with db.transaction():
        task = _open_task(db, task_id, "resume")
        if not task.paused and task.state != TaskState.NEEDS_INPUT:
            return f"task {task_id}: not paused"
        state = task.state
        if state == TaskState.NEEDS_INPUT:
            state = TaskState.ACTIVE
        if not task.admitted and state == TaskState.ACTIVE:
            state = TaskState.WAITING
        tasks.update(db, task_id, expect={"state": task.state}, paused_at=None,
                     pause_reason=None, state=state)
        events.record(db, "resumed", f"state {task.state} -> {state}", task_id=task_id)
    return f"task {task_id}: resumed ({state})"


def retry(db: Database, task_id: int) -> str:
    """Return a held task to work with fresh attempts (the enqueue phase makes its job)."""
    with db.transaction():
        task = _open_task(db, task_id, "retry")
        if task.state != TaskState.HELD:
            raise RefusedError(f"task {task_id} is {task.state}, not held: nothing to retry")
        open_job = jobs.open_job(db, task_id)
        if open_job is not None:
            jobs.close(db, open_job.id, status=JobStatus.CANCELLED, verdict=None,
                       expect_status=(JobStatus.QUEUED,), error="closed by orch retry")
        state = TaskState.ACTIVE if task.admitted else TaskState.WAITING
        tasks.update(db, task_id, expect={"state": TaskState.HELD}, state=state,
                     hold_reason=None, hold_kind=None)
        events.record(db, "retried", f"hold lifted ({task.hold_reason}); {state}",
                      task_id=task_id)
    return f"task {task_id}: retried ({state})"


def cancel(settings: Settings, db: Database, task_id: int) -> str:
    """End a task; its running job's process group is terminated.

    A task at the merge stage (its open job is a merge) is closed under its repo's
    lock: a merge moves the default branch (and pushes) only under that lock after
    checking it still owns its job, so a cancelled merge never lands
    (orch.engine.run.merge_run). Other stages take no lock, so a cancel never waits
    for a tick preparing a worktree; a merge job claimed between the look and the
    transaction is seen in the transaction, and the cancel starts again with the lock.
    """
    known = tasks.get(db, task_id)
    locked = known is not None and _merging(db, task_id)
    while True:
        lock = settings.paths.repo_lock(known.repo) if locked and known else nullcontext()
        with lock:
            closed = _close_cancelled(db, task_id, need_lock=not locked)
        if closed is not None:
            break
        locked = True  # a merge job appeared meanwhile: again, under the lock
    job, run = closed
    if job is not None and job.status == JobStatus.RUNNING:
        _kill_run(settings, job, run)
    return f"task {task_id}: cancelled"


def _merging(db: Database, task_id: int) -> bool:
    """The task's open job is a merge (queued or running)."""
    job = jobs.open_job(db, task_id)
    return job is not None and job.runner == "merge"


def _close_cancelled(db: Database, task_id: int, *, need_lock: bool
                     ) -> tuple[Job | None, Run | None] | None:
    """Close the task and its open job in one transaction; (job, run) as they were, or
    None (nothing changed) when `need_lock` and the open job turned out to be a merge."""
    with db.transaction():
        task = _open_task(db, task_id, "cancel")
        job = jobs.open_job(db, task_id)
        if need_lock and job is not None and job.runner == "merge":
            return None
        run = None
        if job is not None:
            if job.status == JobStatus.RUNNING and job.run_id:
                run = runs.get(db, job.run_id)
                runs.end(db, job.run_id, "cancelled", "task cancelled")
            jobs.close(db, job.id, status=JobStatus.CANCELLED, verdict=None,
                       expect_status=(JobStatus.QUEUED, JobStatus.RUNNING),
                       error="task cancelled")
        tasks.update(db, task_id, expect={"state": task.state}, stage="cancelled",
                     state=TaskState.CLOSED, admitted=False)
        counters.bump(db, "tasks_cancelled_total")
        events.record(db, "cancelled", f"cancelled at stage {task.stage}",
                      task_id=task_id, job_id=job.id if job else None)
    return job, run


def _kill_run(settings: Settings, job: Job, run: Run | None) -> None:
    """End every process of a cancelled job's run on this machine: by the run's mark
    (the supervisor, the agent and its tools, an inline command and what it started,
    in whatever session) and below its recorded group leader; never a reused pid."""
    from orch.procs import tree

    if run is None or not procs.Identity.here(settings.host_name).is_local(job.host,
                                                                           job.boot_id):
        return
    root = (int(run.pgid), int(run.pgid_started)) if run.pgid and run.pgid_started else None
    tree.end_run_tree(settings.paths.run_mark(run.id), root, grace_s=settings.cancel_grace_s)


def freeze(db: Database, names: list[str], frozen: bool) -> list[str]:
    """Stop (or restart) admissions for repos; events record each change."""
    with db.transaction():
        for name in names:
            if repos.set_frozen(db, name, frozen):
                events.record(db, "frozen" if frozen else "unfrozen", f"repo {name}")
    return names


def approve_or_reject(settings: Settings, pipeline: Pipeline, db: Database, task_id: int,
                      approve: bool, reason: str | None = None) -> str:
    """Answer a `human` stage at once: PASS, or FAIL to its on_fail stage."""

    verb = "approve" if approve else "reject"
    engine = Engine(settings, pipeline, db)
    with db.transaction():
        task = _open_task(db, task_id, verb)
        stage = pipeline.get(task.stage)
        if stage is None or not stage.is_human or task.state != TaskState.NEEDS_INPUT:
            raise RefusedError(f"task {task_id} is not waiting at a human stage "
                               f"(stage {task.stage}, state {task.state})")
        message = answer_human(engine, task, approve, reason or "approved by operator")
    send_notes(engine)
    return f"task {task_id}: {message}"
