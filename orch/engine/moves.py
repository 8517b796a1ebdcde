"""Carrying out Moves: the one place a verdict changes state (SPEC section 3).

The stage machine (`orch.machine`) decides where a verdict sends a task;
this module writes it: the job judged once, the task moved, the next job
enqueued, the events and the notifications, in the caller's transaction.
The advance phase, the reaper, the inline runners and `orch approve/reject`
all come through here, so a verdict means the same thing wherever it comes
from. Notifications are collected on the Engine and sent after the commit.
"""

from __future__ import annotations

from dataclasses import replace

from orch import machine
from orch.engine.context import Engine
from orch.machine import Move, MoveKind, Position
from orch.model import HoldKind, JobStatus, TaskState, Verdict
from orch.state import counters, events, jobs, runs, tasks
from orch.state.records import Job, Task
from orch.timeutil import later, now_iso

MAX_BACKOFF_S = 3600
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def backoff_s(retry_backoff_s: int, defers: int) -> int:
    """retry_backoff_s doubling per DEFER (defers counts this one), at most an hour."""
    if retry_backoff_s == 0:
        return 0
    return min(MAX_BACKOFF_S, retry_backoff_s * 2 ** max(0, defers - 1))


def later_or_now(seconds: float) -> str:
    """An ISO time `seconds` from now. Even 0 is "now", not NULL: the claim only takes
    jobs whose not_before is at or before the tick's start, so a job requeued in this
    tick runs at the next tick, never twice in one."""
    return later(max(0.0, seconds))


def plan_move(engine: Engine, task: Task, job: Job, verdict: Verdict,
              hold_kind: HoldKind = HoldKind.VERDICT) -> Move:
    """What the stage machine says a verdict on this job does to its task."""
    stage = engine.pipeline.get(job.stage)
    return machine.next_move(engine.pipeline, Position(job.stage, task.round, job.attempt,
                                                       job.defers),
                             verdict, engine.limits(stage, task.repo),
                             engine.skipped_stages(task.repo), hold_kind)


def apply_verdict(engine: Engine, job: Job, verdict: Verdict, reason: str,
                  hold_kind: HoldKind = HoldKind.VERDICT) -> bool:
    """Judge a finished job once and move its task; False when it was judged already.
    A HOLD is stored with `hold_kind`."""
    db = engine.db
    with db.transaction():
        tasks.lock_of_job(db, job.id)  # the task first, then the job (see tasks.get)
        fresh = jobs.get(db, job.id)
        if fresh is None or fresh.judged or fresh.status not in FINISHED \
                or fresh.run_id != job.run_id:
            return False  # judged already, or the verdict was decided for an older run
        task = tasks.get(db, fresh.task_id)
        assert task is not None
        if task.closed:
            jobs.record_verdict(db, fresh.id, verdict)
            return True
        carry_out(engine, task, fresh, plan_move(engine, task, fresh, verdict, hold_kind),
                  reason)
    return True


def carry_out(engine: Engine, task: Task, job: Job | None, move: Move, reason: str) -> None:
    """Write one Move: inside the caller's transaction."""
    machine.check_move(task.id, task.state, move)
    if move.aside:
        reason = f"{reason} ({move.aside})"
    if move.kind is MoveKind.RETRY:
        assert job is not None
        _retry(engine, task, job, move, reason)
    elif move.kind is MoveKind.DEFER:
        assert job is not None
        _defer(engine, task, job, move, reason)
    elif move.kind is MoveKind.HOLD:
        _hold_move(engine, task, job, move, reason)
    elif move.kind is MoveKind.NEEDS_INPUT:
        assert job is not None
        needs_input(engine, task, job, reason)
    else:
        _advance(engine, task, job, move, reason)


def _hold_move(engine: Engine, task: Task, job: Job | None, move: Move, reason: str) -> None:
    kind = move.hold_kind or HoldKind.VERDICT
    if kind is HoldKind.DEFERS and job is not None and job.run_id:
        runs.set_fields(engine.db, job.run_id, outcome="deferred")
    if kind is HoldKind.STAGE_GONE or not reason:
        text = move.note
    else:
        text = f"{move.note}: {reason}" if move.note else reason
    hold(engine, task, job, text, kind)


def _entry(engine: Engine, task_id: int, from_: str, to: str, verdict: str) -> None:
    engine.advanced.append({"task": task_id, "from": from_, "to": to, "verdict": verdict})


def _advance(engine: Engine, task: Task, job: Job | None, move: Move, reason: str) -> None:
    """PASS or FAIL: the job is judged, the task goes to its next stage (or closes)."""
    from_ = job.stage if job is not None else task.stage
    if job is not None:
        jobs.record_verdict(engine.db, job.id, move.verdict)
        kind = "passed" if move.verdict is Verdict.PASS else "failed-gate"
        events.record(engine.db, kind, f"{from_}: {reason}", task_id=task.id, job_id=job.id)
    first = move.skipped[0] if move.skipped else move.stage
    _entry(engine, task.id, from_, first, move.verdict.value)
    if move.round != task.round:
        tasks.update(engine.db, task.id, round=move.round)
        task = replace(task, round=move.round)
    arrive(engine, task, move, reason)


def arrive(engine: Engine, task: Task, move: Move, reason: str = "") -> None:
    """The task reaches the stage a move names: skipped stages passed over, done,
    failed, a human wait, or a new job."""
    db = engine.db
    for index, name in enumerate(move.skipped):
        following = move.skipped[index + 1] if index + 1 < len(move.skipped) else move.stage
        _entry(engine, task.id, name, following, "SKIP")
        events.record(db, "skipped", f"{name}: repo {task.repo} has no staging section",
                      task_id=task.id)
    if move.kind is MoveKind.DONE:
        close(engine, task, machine.DONE, "done", "done")
    elif move.kind is MoveKind.FAILED:
        close(engine, task, machine.FAILED, f"failed: {move.note}", reason)
    elif move.kind is MoveKind.HOLD:
        _hold_move(engine, task, None, move, "")
    else:
        tasks.update(db, task.id, stage=move.stage)
        events.record(db, "stage", f"-> {move.stage} (round {move.round})", task_id=task.id)
        settle_at_stage(engine, replace(task, stage=move.stage), move.kind)


def settle_at_stage(engine: Engine, task: Task, kind: MoveKind) -> int | None:
    """A task at its stage: a human stage waits for a person; otherwise an admitted,
    unpaused, active task gets its job. Returns the new job's id, if any."""
    db = engine.db
    if kind is MoveKind.WAIT_HUMAN:
        tasks.update(db, task.id, state=TaskState.NEEDS_INPUT)
        events.record(db, "needs_input", f"{task.stage}: waiting for orch approve / "
                      "orch reject", task_id=task.id)
        engine.note("needs_input", task, f"approve or reject stage {task.stage}")
        return None
    current = tasks.get(db, task.id)
    if current is None or current.paused or current.state != TaskState.ACTIVE \
            or not current.admitted:
        return None
    stage = engine.pipeline.get(task.stage)
    assert stage is not None
    job_id = jobs.enqueue(db, task.id, stage.name, stage.job_runner or stage.runner)
    events.record(db, "enqueued", f"job {job_id} for {stage.name}", task_id=task.id,
                  job_id=job_id)
    return job_id


def close(engine: Engine, task: Task, stage: str, detail: str, reason: str) -> None:
    """Close a task at a terminal stage (done or failed), with its counter and note."""
    db = engine.db
    tasks.update(db, task.id, stage=stage, state=TaskState.CLOSED, admitted=False)
    counters.bump(db, f"tasks_{stage}_total")
    events.record(db, "closed", detail, task_id=task.id)
    engine.note(stage, task, reason)


def _retry(engine: Engine, task: Task, job: Job, move: Move, reason: str) -> None:
    """The same job again as a new attempt."""
    jobs.requeue(engine.db, job.id, expect_status=job.status, expect_run_id=job.run_id,
                 attempt=move.attempt, defers=job.defers,
                 not_before=later_or_now(engine.settings.retry_backoff_s), verdict="RETRY")
    _entry(engine, task.id, job.stage, job.stage, "RETRY")
    events.record(engine.db, "retry", f"attempt {move.attempt}: {reason}", task_id=task.id,
                  job_id=job.id)


def _defer(engine: Engine, task: Task, job: Job, move: Move, reason: str) -> None:
    """Run the same job later, the backoff doubling per DEFER."""
    limit = engine.limits(engine.pipeline.get(job.stage), task.repo).max_defers
    if job.run_id:
        runs.set_fields(engine.db, job.run_id, outcome="deferred")
    wait = backoff_s(engine.settings.retry_backoff_s, move.defers)
    jobs.requeue(engine.db, job.id, expect_status=job.status, expect_run_id=job.run_id,
                 attempt=job.attempt, defers=move.defers, not_before=later_or_now(wait),
                 verdict="DEFER")
    _entry(engine, task.id, job.stage, job.stage, "DEFER")
    events.record(engine.db, "deferred", f"defer {move.defers} of {limit}, next try in "
                  f"{wait} s: {reason}", task_id=task.id, job_id=job.id)


def hold(engine: Engine, task: Task, job: Job | None, reason: str, kind: HoldKind) -> bool:
    """The task waits for `orch retry` (a day-budget hold lifts itself); its job is
    judged HOLD. The hold's kind is stored as data beside the reason for people.

    The task is read again in the same transaction: one closed meanwhile (an `orch
    cancel` racing a budget check or the reaper) stays closed, and False is returned."""
    db = engine.db
    with db.transaction():
        fresh = tasks.get(db, task.id)
        if fresh is None or fresh.closed:
            return False
        if job is not None:
            if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                jobs.close(db, job.id, status=JobStatus.FAILED, verdict="HOLD",
                           expect_status=(job.status,), error=reason)
            else:
                jobs.record_verdict(db, job.id, Verdict.HOLD)
        tasks.update(db, task.id, expect={"state": fresh.state}, state=TaskState.HELD,
                     hold_reason=reason, hold_kind=kind)
        stage = job.stage if job is not None else task.stage
        _entry(engine, task.id, stage, stage, "HOLD")
        events.record(db, "held", reason, task_id=task.id, job_id=job.id if job else None)
    engine.note("hold", task, reason)
    return True


def needs_input(engine: Engine, task: Task, job: Job, reason: str) -> None:
    """A person must answer; with autopause the task is parked and its slot freed."""
    db = engine.db
    jobs.record_verdict(db, job.id, Verdict.NEEDS_INPUT)
    autopause = engine.settings.flags.analyst_needs_input_autopause_enabled
    if autopause:
        tasks.update(db, task.id, state=TaskState.NEEDS_INPUT, paused_at=now_iso(),
                     pause_reason="needs-input", admitted=False)
    else:
        tasks.update(db, task.id, state=TaskState.NEEDS_INPUT)
    _entry(engine, task.id, job.stage, job.stage, "NEEDS_INPUT")
    events.record(db, "needs_input", reason, task_id=task.id, job_id=job.id)
    if autopause:
        events.record(db, "paused", "needs-input (slot released)", task_id=task.id)
    engine.note("needs_input", task, reason)


def answer_human(engine: Engine, task: Task, approve: bool, reason: str) -> str:
    """`orch approve` (PASS) or `orch reject` (FAIL to on_fail) at a human stage."""
    db = engine.db
    stage = engine.pipeline.get(task.stage)
    assert stage is not None
    events.record(db, "approved" if approve else "rejected", reason, task_id=task.id)
    state = TaskState.ACTIVE if task.admitted else TaskState.WAITING  # no slot: wait first
    tasks.update(db, task.id, state=state)
    task = replace(task, state=state)
    if not approve and stage.on_fail is None:
        tasks.update(db, task.id, state=TaskState.NEEDS_INPUT)
        return f"rejected {stage.name} (no on_fail: it waits for approval again)"
    verdict = Verdict.PASS if approve else Verdict.FAIL
    move = machine.next_move(engine.pipeline, Position(stage.name, task.round), verdict,
                             engine.limits(stage, task.repo), engine.skipped_stages(task.repo))
    _advance(engine, task, None, move, reason)
    if approve:
        return f"approved {stage.name}"
    if move.kind is MoveKind.FAILED:
        return "rejected: the task failed (max_rounds)"
    return f"rejected {stage.name}: back to {move.stage} (round {move.round})"
